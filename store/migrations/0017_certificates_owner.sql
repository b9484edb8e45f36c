-- 0017: certificates by owner, so that an address's certificates (and the
-- count the listing of addresses shows) are found without reading every
-- certificate.

CREATE INDEX certificates_owner ON certificates (owner);
