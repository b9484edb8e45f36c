-- 0012: an API token may be an admin's: it may use the admin operations of
-- the API, not only read tracking. Existing tokens are not.
--
-- PostgreSQL 15 version of migrations/0012_token_admin.sql. The column is
-- BOOLEAN here (INTEGER 0/1 in SQLite): the store writes and reads it as a
-- Go bool, which PostgreSQL takes only for a BOOLEAN.

ALTER TABLE api_tokens ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE;
