-- 0013: a recipient whose certificate could not be looked up at submission
-- (a DNS or LDAP failure, or a revocation outage under [trust] revocation =
-- "defer") is a recipient state of the outbound queue, retried by the
-- queue's one scheduler, instead of a table of its own with a scheduler of
-- its own (0005).
--
-- Such a recipient belongs to a queue message whose data is the plain
-- submission (plain = 1): never sent as it is, it is sealed again for the
-- recipient when due. New recipient states: deferred (waiting to be sealed
-- to, next_attempt), sealing (claimed; as delivering), sealed (sealed and
-- queued as a message of its own: final). A deferred recipient that fails
-- for good goes to bounced, its sender told at once.

ALTER TABLE queue_messages ADD COLUMN plain BOOLEAN NOT NULL DEFAULT 0;

CREATE TABLE queue_recipients_new (
	id INTEGER PRIMARY KEY,
	queue_id BIGINT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
	recipient TEXT NOT NULL,
	domain TEXT NOT NULL,
	local BOOLEAN NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('queued', 'delivering', 'delivered', 'failed', 'bounced',
		'deferred', 'sealing', 'sealed')),
	attempts INTEGER NOT NULL,
	next_attempt BIGINT NOT NULL,
	last_attempt BIGINT NOT NULL,
	last_code INTEGER NOT NULL,
	last_enhanced TEXT NOT NULL,
	last_error TEXT NOT NULL,
	remote_mta TEXT NOT NULL,
	status TEXT NOT NULL,
	updated BIGINT NOT NULL
);
INSERT INTO queue_recipients_new SELECT id, queue_id, recipient, domain, local, state, attempts, next_attempt,
	last_attempt, last_code, last_enhanced, last_error, remote_mta, status, updated FROM queue_recipients;
DROP TABLE queue_recipients;
ALTER TABLE queue_recipients_new RENAME TO queue_recipients;
CREATE INDEX queue_recipients_due ON queue_recipients (state, next_attempt);
CREATE INDEX queue_recipients_queue ON queue_recipients (queue_id);

-- The deferred submissions move over: a plain queue message each, its
-- recipients (one address a line) deferred.
INSERT INTO queue_messages (message_id, mail_from, auth_user, origin, data, size, created, delay_notified, plain)
	SELECT message_id, mail_from, auth_user, 'deferred submission ' || id, data, length(data), created, 0, 1
	FROM deferred_submissions;
WITH RECURSIVE split(did, addr, rest) AS (
	SELECT id, '', recipients || char(10) FROM deferred_submissions
	UNION ALL
	SELECT did, substr(rest, 1, instr(rest, char(10)) - 1), substr(rest, instr(rest, char(10)) + 1)
	FROM split WHERE rest <> ''
)
INSERT INTO queue_recipients (queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
	last_code, last_enhanced, last_error, remote_mta, status, updated)
	SELECT m.id, s.addr, lower(substr(s.addr, instr(s.addr, '@') + 1)), 0, 'deferred', d.attempts, d.next_attempt,
		d.created, 0, '', d.last_error, '', '', d.created
	FROM split s JOIN deferred_submissions d ON d.id = s.did
	JOIN queue_messages m ON m.plain = 1 AND m.origin = 'deferred submission ' || d.id
	WHERE s.addr <> '';
UPDATE queue_messages SET origin = 'deferred submission' WHERE plain = 1;
DROP TABLE deferred_submissions;
