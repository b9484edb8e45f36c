-- 0006: relay accounts: one submission login for an EHR that sends for any
-- address of its domains, limited to client networks and to TLS client
-- certificates issued by given CAs when those are set. Login names have no
-- "@", so they never collide with addresses. Times are BIGINT milliseconds
-- since the Unix epoch.

CREATE TABLE relay_accounts (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	created BIGINT NOT NULL
);

CREATE TABLE relay_domains (
	relay_id BIGINT NOT NULL REFERENCES relay_accounts (id) ON DELETE CASCADE,
	domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
	PRIMARY KEY (relay_id, domain)
);

CREATE TABLE relay_networks (
	relay_id BIGINT NOT NULL REFERENCES relay_accounts (id) ON DELETE CASCADE,
	network TEXT NOT NULL, -- CIDR, as netip.Prefix prints it
	PRIMARY KEY (relay_id, network)
);

CREATE TABLE relay_client_cas (
	relay_id BIGINT NOT NULL REFERENCES relay_accounts (id) ON DELETE CASCADE,
	cert BLOB NOT NULL, -- DER
	PRIMARY KEY (relay_id, cert)
);
