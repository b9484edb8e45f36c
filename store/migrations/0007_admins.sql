-- 0007: admin accounts, for the admin web page: a login of their own, never
-- an address, so an admin cannot read mail over IMAP nor send over
-- submission. Times are BIGINT milliseconds since the Unix epoch.

CREATE TABLE admin_accounts (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created BIGINT NOT NULL
);
