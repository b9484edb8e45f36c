-- 0009: an API token may be limited to the messages of some local domains'
-- senders: the domains, space-separated; '' is every domain (an admin's
-- token). No foreign key: removing a domain must never widen a token.

ALTER TABLE api_tokens ADD COLUMN domains TEXT NOT NULL DEFAULT '';
