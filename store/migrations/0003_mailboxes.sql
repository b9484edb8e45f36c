-- 0003: IMAP mailboxes. Reserved; filled in by the mailbox work.
SELECT 1;
