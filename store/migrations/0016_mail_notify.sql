-- 0016: PostgreSQL tells the nodes of every mail change at once (a
-- notification on the channel hisp_mail when the mail modification
-- sequence moves), so that IMAP IDLE on one node hears of mail filed by
-- another without waiting for its poll. SQLite has one node, which polls:
-- nothing to do here.
SELECT 1;
