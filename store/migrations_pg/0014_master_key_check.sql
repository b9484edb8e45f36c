-- 0014: the master key check (mirrors migrations/0014_master_key_check.sql):
-- a value sealed under the master key when the store was first opened with
-- it. The key itself is never stored here.

CREATE TABLE master_key_check (
	id BIGINT PRIMARY KEY CHECK (id = 1),
	sealed BYTEA NOT NULL
);
