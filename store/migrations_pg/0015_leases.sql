-- 0015 (mirrors migrations/0015_leases.sql): claims with leases, so that several nodes share one queue (and one
-- node's jobs): a claimed recipient (delivering, sealing) records the node
-- that claimed it and until when; the node renews its claims while it
-- works, and a node that dies has its claims expire, when another node
-- takes them over (RecoverQueue). leases: jobs that one node at a time
-- runs (tracking timeouts, bundle refreshes, the queue's notices), each
-- held by a node until a time it renews.

ALTER TABLE queue_recipients ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE queue_recipients ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;

CREATE TABLE leases (
	name TEXT PRIMARY KEY,
	holder TEXT NOT NULL,
	expires BIGINT NOT NULL
);
