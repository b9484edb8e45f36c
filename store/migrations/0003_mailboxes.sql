-- 0003: IMAP mailboxes: mail accounts, mailboxes, messages and their bodies.
--
-- A mail account belongs to a local address and goes with it (and with its
-- domain) by cascade; its id is never reused (AUTOINCREMENT; PostgreSQL:
-- an identity column), so a later account of the same address is a new
-- generation that cannot reach the mailboxes of the old one. Mailbox ids are
-- never reused either. UIDVALIDITY values come from mail_state and only
-- grow, so a deleted and re-created mailbox never repeats one.
--
-- Message bodies are stored once, as delivered, in mail_bodies; COPY shares
-- a body between messages, and a trigger deletes a body with its last
-- message (also when messages go by cascade).
--
-- mail_state.modseq is the one modification sequence of all mailboxes:
-- every change to a mailbox or its messages takes the next value, records it
-- on the mailbox (and changed messages), and a server polls it to notice
-- changes made by other processes.

CREATE TABLE mail_state (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	modseq BIGINT NOT NULL,
	uidvalidity BIGINT NOT NULL
);
INSERT INTO mail_state (id, modseq, uidvalidity) VALUES (1, 0, 0);

CREATE TABLE mail_accounts (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	address TEXT NOT NULL UNIQUE REFERENCES addresses (address) ON DELETE CASCADE,
	quota BIGINT NOT NULL,
	created BIGINT NOT NULL
);

CREATE TABLE mailboxes (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	account_id BIGINT NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
	name TEXT NOT NULL,
	uidvalidity BIGINT NOT NULL,
	uidnext BIGINT NOT NULL,
	modseq BIGINT NOT NULL,
	size BIGINT NOT NULL,
	subscribed INTEGER NOT NULL,
	special_use TEXT NOT NULL,
	created BIGINT NOT NULL,
	UNIQUE (account_id, name)
);

CREATE TABLE mail_bodies (
	id INTEGER PRIMARY KEY,
	header_size BIGINT NOT NULL,
	data BLOB NOT NULL
);

CREATE TABLE messages (
	mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
	uid BIGINT NOT NULL,
	body_id BIGINT NOT NULL REFERENCES mail_bodies (id),
	size BIGINT NOT NULL,
	internal_date BIGINT NOT NULL,
	modseq BIGINT NOT NULL,
	seen INTEGER NOT NULL,
	answered INTEGER NOT NULL,
	flagged INTEGER NOT NULL,
	deleted INTEGER NOT NULL,
	draft INTEGER NOT NULL,
	keywords TEXT NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_body ON messages (body_id);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);

-- A body goes with its last message.
CREATE TRIGGER messages_body_gc AFTER DELETE ON messages
WHEN NOT EXISTS (SELECT 1 FROM messages WHERE body_id = OLD.body_id)
BEGIN
	DELETE FROM mail_bodies WHERE id = OLD.body_id;
END;

-- A removed mailbox (also by cascade from its address or domain) moves the
-- modification sequence, so servers notice and close it for their clients.
CREATE TRIGGER mailboxes_gone AFTER DELETE ON mailboxes
BEGIN
	UPDATE mail_state SET modseq = modseq + 1 WHERE id = 1;
END;
