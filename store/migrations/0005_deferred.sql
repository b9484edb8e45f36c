-- 0005: submissions deferred for some of their recipients: the plain
-- message as submitted, kept until every deferred recipient could be sealed
-- to (then it is queued like any submission) or failed for good (then the
-- sender gets a DSN). A recipient is deferred when its certificate could
-- not be looked up (a DNS or LDAP failure), which a later attempt may
-- overcome. Times are BIGINT milliseconds since the Unix epoch.

CREATE TABLE deferred_submissions (
	id INTEGER PRIMARY KEY,
	message_id TEXT NOT NULL,
	mail_from TEXT NOT NULL,
	auth_user TEXT NOT NULL,
	recipients TEXT NOT NULL, -- one address per line
	data BLOB NOT NULL,
	created BIGINT NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt BIGINT NOT NULL,
	last_error TEXT NOT NULL
);
CREATE INDEX deferred_submissions_next ON deferred_submissions (next_attempt);
