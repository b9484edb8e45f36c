-- 0012: an API token may be an admin's: it may use the admin operations of
-- the API (/api/v1/domains, anchors, bundles...), not only read tracking.
-- Existing tokens are not: an admin token is made with hisp token add --admin.

ALTER TABLE api_tokens ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
