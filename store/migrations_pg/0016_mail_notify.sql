-- 0016 (mirrors migrations/0016_mail_notify.sql): a notification on the
-- channel hisp_mail, its payload the new modification sequence, whenever
-- the mail modification sequence moves; NOTIFY in a transaction is sent at
-- its commit, and only then.

CREATE FUNCTION hisp_mail_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('hisp_mail', NEW.modseq::text);
	RETURN NULL;
END
$$;

CREATE TRIGGER mail_state_notify AFTER UPDATE OF modseq ON mail_state
	FOR EACH ROW EXECUTE FUNCTION hisp_mail_notify();
