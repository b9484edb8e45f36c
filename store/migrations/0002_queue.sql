-- 0002: the outbound queue. Reserved; filled in by the gateway work.
SELECT 1;
