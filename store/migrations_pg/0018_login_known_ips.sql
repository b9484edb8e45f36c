-- 0018: the clients each login name logged in from lately (an IPv4
-- address, or an IPv6 /64 by its first address), so that the login
-- limiter's known-good IPs, which skip the gates that guesses at the name
-- from elsewhere wait at, last across restarts and are shared by the nodes
-- of one store.

CREATE TABLE login_known_ips (
	name TEXT NOT NULL,
	ip TEXT NOT NULL,
	last_good BIGINT NOT NULL,
	PRIMARY KEY (name, ip)
);
CREATE INDEX login_known_ips_last_good ON login_known_ips (last_good);
