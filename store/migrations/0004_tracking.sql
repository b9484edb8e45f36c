-- 0004: delivery tracking of outbound messages (DN-06..DN-10): one row per
-- message and per recipient, with the recipient's state, the outcome the
-- sender was told, its deadlines and an append-only event history; bearer
-- tokens of the HTTP API; webhooks and their outbox.
--
-- Recipient states: queued, relayed (the next hop took it), processed,
-- dispatched (processed and dispatched MDNs) and failed. outcome is what
-- reached the sender's mailbox as the final word: '' (nothing yet),
-- 'success' or 'failure'; once set only a failure after a success without
-- the timely-and-reliable request replaces it. deadline is the next
-- timeout while outcome is '' (0: none). notice is hisp's own failure DSN
-- for a timeout: 'pending' until it is filed, then 'done'.
--
-- Webhook deliveries are written in the transaction of the event they
-- report (the outbox), so none is lost when hisp stops; a worker sends
-- them in id order per webhook and tracked message.

CREATE TABLE tracked_messages (
	id INTEGER PRIMARY KEY,
	message_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	sender_domain TEXT NOT NULL,
	dispatched_requested BOOLEAN NOT NULL,
	sent BIGINT NOT NULL,
	updated BIGINT NOT NULL
);
CREATE INDEX tracked_messages_message_id ON tracked_messages (message_id);
CREATE INDEX tracked_messages_sender ON tracked_messages (sender, sent);
CREATE INDEX tracked_messages_sent ON tracked_messages (sent);

CREATE TABLE tracked_recipients (
	id INTEGER PRIMARY KEY,
	tracked_id BIGINT NOT NULL REFERENCES tracked_messages (id) ON DELETE CASCADE,
	recipient TEXT NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('queued', 'relayed', 'processed', 'dispatched', 'failed')),
	outcome TEXT NOT NULL CHECK (outcome IN ('', 'success', 'failure')),
	outcome_by TEXT NOT NULL,
	reason TEXT NOT NULL,
	relayed BIGINT NOT NULL,
	processed_deadline BIGINT NOT NULL,
	dispatched_deadline BIGINT NOT NULL,
	deadline BIGINT NOT NULL,
	notice TEXT NOT NULL CHECK (notice IN ('', 'pending', 'done')),
	updated BIGINT NOT NULL,
	UNIQUE (tracked_id, recipient)
);
CREATE INDEX tracked_recipients_deadline ON tracked_recipients (outcome, deadline);
CREATE INDEX tracked_recipients_notice ON tracked_recipients (notice);
CREATE INDEX tracked_recipients_relayed ON tracked_recipients (relayed, state);

CREATE TABLE tracking_events (
	id INTEGER PRIMARY KEY,
	recipient_id BIGINT NOT NULL REFERENCES tracked_recipients (id) ON DELETE CASCADE,
	at BIGINT NOT NULL,
	kind TEXT NOT NULL,
	previous_state TEXT NOT NULL,
	state TEXT NOT NULL,
	outcome TEXT NOT NULL,
	detail TEXT NOT NULL,
	notice TEXT NOT NULL
);
CREATE INDEX tracking_events_recipient ON tracking_events (recipient_id, id);

CREATE TABLE api_tokens (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	hash TEXT NOT NULL UNIQUE,
	created BIGINT NOT NULL
);

CREATE TABLE webhooks (
	id INTEGER PRIMARY KEY,
	target TEXT NOT NULL,
	url TEXT NOT NULL,
	secret BLOB NOT NULL,
	created BIGINT NOT NULL,
	UNIQUE (target, url)
);
CREATE INDEX webhooks_target ON webhooks (target);

CREATE TABLE webhook_outbox (
	id INTEGER PRIMARY KEY,
	webhook_id BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	tracked_id BIGINT NOT NULL REFERENCES tracked_messages (id) ON DELETE CASCADE,
	event_id BIGINT NOT NULL REFERENCES tracking_events (id) ON DELETE CASCADE,
	state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'abandoned')),
	attempts INTEGER NOT NULL,
	next_attempt BIGINT NOT NULL,
	last_error TEXT NOT NULL,
	created BIGINT NOT NULL,
	updated BIGINT NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt);
CREATE INDEX webhook_outbox_order ON webhook_outbox (webhook_id, tracked_id, state, id);
CREATE INDEX webhook_outbox_event ON webhook_outbox (event_id);
