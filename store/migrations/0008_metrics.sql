-- 0008: an index for monitoring (/metrics): certificates by expiry, so that
-- counting the local certificates that expire soon and finding the
-- earliest expiry are index ranges, not scans of the certificates with
-- their keys and chains.

CREATE INDEX certificates_not_after ON certificates (not_after);
