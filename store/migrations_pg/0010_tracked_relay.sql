-- 0010: the relay account (its name) that sent a tracked message, '' for
-- an address's own login or hisp.
--
-- PostgreSQL 15 version of migrations/0010_tracked_relay.sql.

ALTER TABLE tracked_messages ADD COLUMN relay TEXT NOT NULL DEFAULT '';
