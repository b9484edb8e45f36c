-- 0013: a recipient whose certificate could not be looked up at submission
-- is a recipient state of the outbound queue (deferred, sealing, sealed),
-- retried by the queue's one scheduler, instead of a table of its own
-- (0005); its queue message holds the plain submission (plain).
--
-- PostgreSQL 15 version of migrations/0013_deferred_in_queue.sql (see there
-- for the states). SQLite rebuilds queue_recipients to widen the state
-- CHECK; here the constraint is replaced in place, with the same end
-- schema.

ALTER TABLE queue_messages ADD COLUMN plain BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE queue_recipients DROP CONSTRAINT queue_recipients_state_check,
	ADD CONSTRAINT queue_recipients_state_check CHECK (state IN ('queued', 'delivering', 'delivered', 'failed',
		'bounced', 'deferred', 'sealing', 'sealed'));

-- The deferred submissions move over: a plain queue message each, its
-- recipients (one address a line) deferred, their ids in line order.
INSERT INTO queue_messages (message_id, mail_from, auth_user, origin, data, size, created, delay_notified, plain)
	SELECT message_id, mail_from, auth_user, 'deferred submission ' || id, data, length(data), created, 0, TRUE
	FROM deferred_submissions ORDER BY id;
INSERT INTO queue_recipients (queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
	last_code, last_enhanced, last_error, remote_mta, status, updated)
	SELECT m.id, s.addr, lower(substr(s.addr, strpos(s.addr, '@') + 1)), FALSE, 'deferred', d.attempts,
		d.next_attempt, d.created, 0, '', d.last_error, '', '', d.created
	FROM deferred_submissions d
	CROSS JOIN LATERAL string_to_table(d.recipients, E'\n') WITH ORDINALITY AS s (addr, line)
	JOIN queue_messages m ON m.plain AND m.origin = 'deferred submission ' || d.id
	WHERE s.addr <> ''
	ORDER BY d.id, s.line;
UPDATE queue_messages SET origin = 'deferred submission' WHERE plain;
DROP TABLE deferred_submissions;
