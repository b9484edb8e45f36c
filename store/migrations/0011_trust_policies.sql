-- 0011: trust policy rules (package policy): a named expression over
-- certificate fields that a local domain's signers (in), recipients (out) or
-- both must meet, on top of path validation.

CREATE TABLE trust_policies (
	id INTEGER PRIMARY KEY,
	domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
	name TEXT NOT NULL,
	direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'both')),
	expr TEXT NOT NULL,
	created BIGINT NOT NULL,
	UNIQUE (domain, name)
);
