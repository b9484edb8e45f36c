-- 0014: the master key check: a value sealed under the master key when the
-- store was first opened with it, so that a node (or restore) with another
-- master key file is refused at open instead of failing on the first
-- private key. The key itself is never stored here.

CREATE TABLE master_key_check (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	sealed BLOB NOT NULL
);
