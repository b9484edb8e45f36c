-- 0010: the relay account (its name) that sent a tracked message, '' for
-- an address's own login or hisp: an address a relay sent as, with no
-- account of its own, takes the notices that answer its messages while
-- that relay still sends for the domain.

ALTER TABLE tracked_messages ADD COLUMN relay TEXT NOT NULL DEFAULT '';
