package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Domain is a local Direct domain (a health domain name hisp serves).
type Domain struct {
	Name    string
	Created time.Time

	// Counts of what belongs to the domain, filled by Domain, Domains and
	// RemoveDomain.
	Addresses    int
	Certificates int
	Anchors      int
	Bundles      int
}

// NormalizeDomain lower-cases a domain name, drops a final dot and checks
// that it is a host name: labels of letters, digits and hyphens (IDNs in
// their xn-- form).
func NormalizeDomain(name string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if d == "" {
		return "", errors.New("empty domain name")
	}
	if len(d) > 253 {
		return "", fmt.Errorf("invalid domain name %q: longer than 253 characters", name)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("invalid domain name %q: empty or overlong label", name)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("invalid domain name %q: label starts or ends with a hyphen", name)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("invalid domain name %q: character %q", name, c)
			}
		}
	}
	return d, nil
}

// NormalizeAddress lower-cases a Direct address (Direct compares addresses
// case-insensitively, local part included), checks its form and returns it
// with its domain.
func NormalizeAddress(address string) (addr, domain string, err error) {
	a := strings.TrimSpace(address)
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", fmt.Errorf("invalid address %q: want local@domain", address)
	}
	local := strings.ToLower(a[:i])
	if len(local) > 64 {
		return "", "", fmt.Errorf("invalid address %q: local part longer than 64 characters", address)
	}
	for _, c := range local {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune(`"(),:;<>@[\]`, c) {
			return "", "", fmt.Errorf("invalid address %q: character %q in local part", address, c)
		}
	}
	domain, err = NormalizeDomain(a[i+1:])
	if err != nil {
		return "", "", fmt.Errorf("invalid address %q: %w", address, err)
	}
	return local + "@" + domain, domain, nil
}

// ParseOwner normalizes the owner of a certificate: an address (it contains
// "@") for an address-bound certificate or a domain for an
// organization-bound one. It returns the owner and its domain.
func ParseOwner(owner string) (normalized, domain string, err error) {
	if strings.Contains(owner, "@") {
		return NormalizeAddress(owner)
	}
	d, err := NormalizeDomain(owner)
	return d, d, err
}

// AddDomain adds a local domain. It returns an error wrapping ErrExists if
// the domain is already there.
func (s *Store) AddDomain(ctx context.Context, name string) (Domain, error) {
	d, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, err
	}
	now := time.Now()
	err = s.change(ctx, func(tx *txn) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM domains WHERE name = ?`, d); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("domain %s: %w", d, ErrExists)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO domains (name, created) VALUES (?, ?)`, d, millis(now))
		return err
	})
	if err != nil {
		return Domain{}, fmt.Errorf("add domain: %w", err)
	}
	return Domain{Name: d, Created: fromMillis(millis(now))}, nil
}

const domainQuery = `SELECT d.name, d.created,
	(SELECT COUNT(*) FROM addresses a WHERE a.domain = d.name),
	(SELECT COUNT(*) FROM certificates c WHERE c.domain = d.name),
	(SELECT COUNT(*) FROM anchors n WHERE n.domain = d.name),
	(SELECT COUNT(*) FROM bundles b WHERE b.domain = d.name)
	FROM domains d`

func scanDomain(r rowScanner) (Domain, error) {
	var d Domain
	var created int64
	if err := r.Scan(&d.Name, &created, &d.Addresses, &d.Certificates, &d.Anchors, &d.Bundles); err != nil {
		return Domain{}, err
	}
	d.Created = fromMillis(created)
	return d, nil
}

// Domain returns one local domain; an error wrapping ErrNotFound if it is
// not there.
func (s *Store) Domain(ctx context.Context, name string) (Domain, error) {
	n, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, err
	}
	return getDomain(ctx, s.db, n)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func getDomain(ctx context.Context, q queryer, name string) (Domain, error) {
	d, err := scanDomain(q.QueryRowContext(ctx, domainQuery+` WHERE d.name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Domain{}, fmt.Errorf("domain %s: %w", name, ErrNotFound)
	} else if err != nil {
		return Domain{}, fmt.Errorf("read domain %s: %w", name, err)
	}
	return d, nil
}

// Domains returns all local domains, by name.
func (s *Store) Domains(ctx context.Context) ([]Domain, error) {
	return queryAll(ctx, s.db, "list domains", scanDomain, domainQuery+` ORDER BY d.name`)
}

// RemoveDomain removes a domain with everything that belongs to it:
// addresses, certificates and their keys, anchors, bundles, its local CA and
// revocations. It returns the domain with the counts of what went.
func (s *Store) RemoveDomain(ctx context.Context, name string) (Domain, error) {
	n, err := NormalizeDomain(name)
	if err != nil {
		return Domain{}, err
	}
	var d Domain
	err = s.change(ctx, func(tx *txn) error {
		d, err = getDomain(ctx, tx, n)
		if err != nil {
			return err
		}
		// Foreign keys cascade from domains to every table that names one.
		_, err = tx.ExecContext(ctx, `DELETE FROM domains WHERE name = ?`, n)
		return err
	})
	if err != nil {
		return Domain{}, fmt.Errorf("remove domain: %w", err)
	}
	return d, nil
}

// Address is a local Direct address: a mailbox of a local domain.
type Address struct {
	Address string
	Domain  string
	Created time.Time
	// Login: the address has a password (SetPassword). Certificates:
	// how many certificates it owns.
	Login        bool
	Certificates int
}

// addressQuery reads addresses with their login flag and certificate
// count in one statement (a listing of thousands of addresses was two
// more queries per address); add a WHERE on a. before addressGroup.
const addressQuery = `SELECT a.address, a.domain, a.created,
	CASE WHEN a.password_hash IS NULL OR a.password_hash = '' THEN 0 ELSE 1 END, COUNT(c.id)
	FROM addresses a LEFT JOIN certificates c ON c.owner = a.address`

const addressGroup = ` GROUP BY a.address, a.domain, a.created, a.password_hash`

func scanAddress(r rowScanner) (Address, error) {
	var a Address
	var created, login int64
	if err := r.Scan(&a.Address, &a.Domain, &created, &login, &a.Certificates); err != nil {
		return Address{}, err
	}
	a.Created, a.Login = fromMillis(created), login != 0
	return a, nil
}

// AddAddress adds a local address. Its domain must exist (else an error
// wrapping ErrNotFound); an existing address gives an error wrapping
// ErrExists.
func (s *Store) AddAddress(ctx context.Context, address string) (Address, error) {
	addr, domain, err := NormalizeAddress(address)
	if err != nil {
		return Address{}, err
	}
	now := time.Now()
	err = s.change(ctx, func(tx *txn) error {
		if err := domainExists(ctx, tx, domain); err != nil {
			return err
		}
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM addresses WHERE address = ?`, addr); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("address %s: %w", addr, ErrExists)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO addresses (address, domain, created) VALUES (?, ?, ?)`,
			addr, domain, millis(now))
		return err
	})
	if err != nil {
		return Address{}, fmt.Errorf("add address: %w", err)
	}
	return Address{Address: addr, Domain: domain, Created: fromMillis(millis(now))}, nil
}

// Address returns one local address; an error wrapping ErrNotFound if it is
// not there.
func (s *Store) Address(ctx context.Context, address string) (Address, error) {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		return Address{}, err
	}
	a, err := scanAddress(s.db.QueryRowContext(ctx, addressQuery+` WHERE a.address = ?`+addressGroup, addr))
	if errors.Is(err, sql.ErrNoRows) {
		return Address{}, fmt.Errorf("address %s: %w", addr, ErrNotFound)
	} else if err != nil {
		return Address{}, fmt.Errorf("read address %s: %w", addr, err)
	}
	return a, nil
}

// whereDomain narrows the query q of a listing to one domain in column,
// when domain is not "" (for all domains); it returns the query and its
// arguments.
func whereDomain(q, column, domain string) (string, []any, error) {
	if domain == "" {
		return q, nil, nil
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return "", nil, err
	}
	return q + " WHERE " + column + " = ?", []any{d}, nil
}

// Addresses returns the addresses of a domain, or of all domains when
// domain is "".
func (s *Store) Addresses(ctx context.Context, domain string) ([]Address, error) {
	q, args, err := whereDomain(addressQuery, "a.domain", domain)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, "list addresses", scanAddress, q+addressGroup+` ORDER BY a.domain, a.address`, args...)
}

// RemoveAddress removes a local address and the certificates (with keys)
// bound to it.
func (s *Store) RemoveAddress(ctx context.Context, address string) error {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		return err
	}
	err = s.change(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM addresses WHERE address = ?`, addr)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("address %s: %w", addr, ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM certificates WHERE owner = ?`, addr)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove address: %w", err)
	}
	return nil
}

// exists runs a COUNT(*) query and reports whether it counted anything.
func exists(ctx context.Context, q queryer, query string, args ...any) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

// domainExists returns an error wrapping ErrNotFound if a domain is missing.
func domainExists(ctx context.Context, q queryer, domain string) error {
	ok, err := exists(ctx, q, `SELECT COUNT(*) FROM domains WHERE name = ?`, domain)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("domain %s: %w", domain, ErrNotFound)
	}
	return nil
}
