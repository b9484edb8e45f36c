-- 0009: an API token may be limited to the messages of some local domains'
-- senders: the domains, space-separated; '' is every domain. No foreign
-- key: removing a domain must never widen a token.
--
-- PostgreSQL 15 version of migrations/0009_token_domains.sql.

ALTER TABLE api_tokens ADD COLUMN domains TEXT NOT NULL DEFAULT '';
