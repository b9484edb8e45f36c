-- 0008: an index for monitoring (/metrics): certificates by expiry.
--
-- PostgreSQL 15 version of migrations/0008_metrics.sql.

CREATE INDEX certificates_not_after ON certificates (not_after);
