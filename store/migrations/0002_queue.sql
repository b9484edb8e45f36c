-- 0002: the outbound queue: one row per message (the sealed bytes and the
-- envelope) and one row per recipient with its delivery state.
--
-- Recipient states: queued (waiting for next_attempt), delivering (claimed by
-- a deliverer; next_attempt already holds the retry time recorded before
-- dialing), delivered, failed (permanent failure, failure DSN not yet sent)
-- and bounced (failure DSN sent, or none needed). delivered and bounced are
-- final. Times are BIGINT milliseconds since the Unix epoch, 0 for never.

CREATE TABLE queue_messages (
	id INTEGER PRIMARY KEY,
	message_id TEXT NOT NULL,
	mail_from TEXT NOT NULL,
	auth_user TEXT NOT NULL,
	origin TEXT NOT NULL,
	data BLOB NOT NULL,
	size BIGINT NOT NULL,
	created BIGINT NOT NULL,
	delay_notified BIGINT NOT NULL
);
CREATE INDEX queue_messages_message_id ON queue_messages (message_id);
CREATE INDEX queue_messages_created ON queue_messages (created);

CREATE TABLE queue_recipients (
	id INTEGER PRIMARY KEY,
	queue_id BIGINT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
	recipient TEXT NOT NULL,
	domain TEXT NOT NULL,
	local BOOLEAN NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('queued', 'delivering', 'delivered', 'failed', 'bounced')),
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
CREATE INDEX queue_recipients_due ON queue_recipients (state, next_attempt);
CREATE INDEX queue_recipients_queue ON queue_recipients (queue_id);
