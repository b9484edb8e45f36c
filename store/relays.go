package store

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Relay is a relay account: the submission login of an EHR (or any system)
// that sends for every address of its domains, where an address account
// sends only as itself. Networks, when set, are the only client addresses
// it may log in from; ClientCAs, when set, make a TLS client certificate
// issued by one of them a condition of its login.
type Relay struct {
	ID        int64
	Name      string   // the login; no "@"
	Domains   []string // local domains, sorted
	Networks  []netip.Prefix
	ClientCAs []*x509.Certificate
	Created   time.Time
}

// SendsFor reports whether the relay may send as an address.
func (r Relay) SendsFor(address string) bool {
	_, domain, err := NormalizeAddress(address)
	return err == nil && slices.Contains(r.Domains, domain)
}

// normalizeRelayName checks a relay login name.
func normalizeRelayName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" || len(n) > 64 {
		return "", fmt.Errorf("relay name %q: want 1 to 64 characters", name)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("relay name %q: only letters, digits, '-', '_' and '.' (no '@': addresses log in as themselves)", name)
		}
	}
	return n, nil
}

// AddRelay adds a relay account with its password (kept as a bcrypt hash
// only). Its domains must be local domains; it needs at least one.
func (s *Store) AddRelay(ctx context.Context, r Relay, password string) (Relay, error) {
	name, err := normalizeRelayName(r.Name)
	if err != nil {
		return Relay{}, err
	}
	hash, err := hashPassword("relay "+name, password)
	if err != nil {
		return Relay{}, err
	}
	if len(r.Domains) == 0 {
		return Relay{}, fmt.Errorf("relay %s: no domain to send for", name)
	}
	var domains []string
	for _, d := range r.Domains {
		nd, err := NormalizeDomain(d)
		if err != nil {
			return Relay{}, fmt.Errorf("relay %s: %w", name, err)
		}
		if !slices.Contains(domains, nd) {
			domains = append(domains, nd)
		}
	}
	slices.Sort(domains)
	out := Relay{Name: name, Domains: domains, Created: fromMillis(millis(time.Now()))}
	for _, p := range r.Networks {
		out.Networks = append(out.Networks, p.Masked())
	}
	out.ClientCAs = r.ClientCAs
	err = s.change(ctx, func(tx *txn) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO relay_accounts (name, password_hash, created) VALUES (?, ?, ?)
			ON CONFLICT (name) DO NOTHING RETURNING id`, name, hash, millis(out.Created)).Scan(&out.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("relay %s: %w", name, ErrExists)
		} else if err != nil {
			return fmt.Errorf("add relay %s: %w", name, err)
		}
		for _, d := range domains {
			if err := domainExists(ctx, tx, d); err != nil {
				return fmt.Errorf("relay %s: %w", name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO relay_domains (relay_id, domain) VALUES (?, ?)`, out.ID, d); err != nil {
				return fmt.Errorf("add relay %s domain %s: %w", name, d, err)
			}
		}
		for _, p := range out.Networks {
			if _, err := tx.ExecContext(ctx, `INSERT INTO relay_networks (relay_id, network) VALUES (?, ?)
				ON CONFLICT DO NOTHING`, out.ID, p.String()); err != nil {
				return fmt.Errorf("add relay %s network %s: %w", name, p, err)
			}
		}
		for _, c := range out.ClientCAs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO relay_client_cas (relay_id, cert) VALUES (?, ?)
				ON CONFLICT DO NOTHING`, out.ID, c.Raw); err != nil {
				return fmt.Errorf("add relay %s client CA: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return Relay{}, err
	}
	return out, nil
}

// Relays returns every relay account, by name.
func (s *Store) Relays(ctx context.Context) ([]Relay, error) {
	out, err := queryAll(ctx, s.db, "relays", scanRelay, `SELECT id, name, created FROM relay_accounts ORDER BY name`)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if err := readRelayDetails(ctx, s.db, &out[i]); err != nil {
			return nil, fmt.Errorf("relays: %w", err)
		}
	}
	return out, nil
}

// scanRelay reads a relay account's id, name and creation time.
func scanRelay(row rowScanner) (Relay, error) {
	var r Relay
	var created int64
	err := row.Scan(&r.ID, &r.Name, &created)
	r.Created = fromMillis(created)
	return r, err
}

// readRelayDetails reads a relay's domains, networks and client CAs.
func readRelayDetails(ctx context.Context, q queryer, r *Relay) error {
	scanString := func(row rowScanner) (string, error) {
		var v string
		return v, row.Scan(&v)
	}
	var err error
	r.Domains, err = queryAll(ctx, q, "relay domains", scanString,
		`SELECT domain FROM relay_domains WHERE relay_id = ? ORDER BY domain`, r.ID)
	if err != nil {
		return err
	}
	r.Networks, err = queryAll(ctx, q, "relay networks", func(row rowScanner) (netip.Prefix, error) {
		var n string
		if err := row.Scan(&n); err != nil {
			return netip.Prefix{}, err
		}
		return netip.ParsePrefix(n)
	}, `SELECT network FROM relay_networks WHERE relay_id = ? ORDER BY network`, r.ID)
	if err != nil {
		return err
	}
	r.ClientCAs, err = queryAll(ctx, q, "relay client CAs", func(row rowScanner) (*x509.Certificate, error) {
		var der []byte
		if err := row.Scan(&der); err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}, `SELECT cert FROM relay_client_cas WHERE relay_id = ?`, r.ID)
	return err
}

// RemoveRelay removes a relay account; ErrNotFound if there is none.
func (s *Store) RemoveRelay(ctx context.Context, name string) error {
	n, err := normalizeRelayName(name)
	if err != nil {
		return err
	}
	return s.change(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM relay_accounts WHERE name = ?`, n)
		if err != nil {
			return fmt.Errorf("remove relay %s: %w", n, err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return fmt.Errorf("relay %s: %w", n, ErrNotFound)
		}
		return nil
	})
}

// CheckRelayPassword verifies a relay login and returns the account. Every
// failure of name or password is ErrBadCredentials; the caller checks the
// account's networks and client CAs.
func (s *Store) CheckRelayPassword(ctx context.Context, name, password string) (Relay, error) {
	n, err := normalizeRelayName(name)
	if err != nil {
		s.passwordMatches("", password)
		return Relay{}, ErrBadCredentials
	}
	var r Relay
	var hash string
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT id, name, password_hash, created FROM relay_accounts WHERE name = ?`, n).
		Scan(&r.ID, &r.Name, &hash, &created)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Relay{}, fmt.Errorf("check password of relay %s: %w", n, err)
	}
	if !s.passwordMatches(hash, password) {
		return Relay{}, ErrBadCredentials
	}
	r.Created = fromMillis(created)
	if err := readRelayDetails(ctx, s.db, &r); err != nil {
		return Relay{}, fmt.Errorf("relay %s: %w", n, err)
	}
	return r, nil
}

// Relay returns one relay account by name, without checking a password;
// ErrNotFound if there is none.
func (s *Store) Relay(ctx context.Context, name string) (Relay, error) {
	n, err := normalizeRelayName(name)
	if err != nil {
		return Relay{}, fmt.Errorf("relay %q: %w", name, ErrNotFound)
	}
	r, err := scanRelay(s.db.QueryRowContext(ctx, `SELECT id, name, created FROM relay_accounts WHERE name = ?`, n))
	if errors.Is(err, sql.ErrNoRows) {
		return Relay{}, fmt.Errorf("relay %s: %w", n, ErrNotFound)
	} else if err != nil {
		return Relay{}, fmt.Errorf("relay %s: %w", n, err)
	}
	if err := readRelayDetails(ctx, s.db, &r); err != nil {
		return Relay{}, fmt.Errorf("relay %s: %w", n, err)
	}
	return r, nil
}

// RelaysWantClientCertificates reports whether any relay account needs a
// TLS client certificate, so that the submission listener asks for one
// only then (a mail client might otherwise prompt its user for one).
func (s *Store) RelaysWantClientCertificates(ctx context.Context) (bool, error) {
	var any bool
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM relay_client_cas)`).Scan(&any); err != nil {
		return false, fmt.Errorf("relay client CAs: %w", err)
	}
	return any, nil
}

// TakesMail reports whether mail for an address of a local domain has a
// taker: a local address, or an address a relay account that still sends
// for its domain sent as, in a message hisp still tracks (it takes the
// notices that answer those messages, and has no mailbox). Other unknown
// addresses of a relay's domain have none, so that a typo is refused at
// once and nobody can make hisp answer invented addresses.
func (s *Store) TakesMail(ctx context.Context, address string) (bool, error) {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		return false, nil
	}
	var any bool
	err = s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM addresses WHERE address = ?)
		OR EXISTS (SELECT 1 FROM tracked_messages m
			JOIN relay_accounts a ON a.name = m.relay
			JOIN relay_domains d ON d.relay_id = a.id AND d.domain = m.sender_domain
			WHERE m.sender = ? AND m.relay <> '')`, addr, addr).Scan(&any)
	if err != nil {
		return false, fmt.Errorf("recipient %s: %w", addr, err)
	}
	return any, nil
}
