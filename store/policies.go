package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TrustPolicy is a named rule a local domain's certificates of a direction
// must meet (package policy parses and evaluates Expr).
type TrustPolicy struct {
	ID        int64
	Domain    string
	Name      string
	Direction Direction
	Expr      string
	Created   time.Time
}

// AddTrustPolicy adds a rule to a domain. The domain must exist (else
// ErrNotFound); a rule of that name gives ErrExists. Expr is stored as
// given: the caller has parsed it.
func (s *Store) AddTrustPolicy(ctx context.Context, p TrustPolicy) (TrustPolicy, error) {
	d, err := NormalizeDomain(p.Domain)
	if err != nil {
		return TrustPolicy{}, err
	}
	if _, err := ParseDirection(string(p.Direction)); err != nil {
		return TrustPolicy{}, err
	}
	if p.Name == "" || strings.TrimSpace(p.Expr) == "" {
		return TrustPolicy{}, errors.New("add trust policy: a name and a rule are needed")
	}
	p.Domain, p.Created = d, fromMillis(millis(time.Now()))
	err = s.change(ctx, func(tx *txn) error {
		if err := domainExists(ctx, tx, d); err != nil {
			return err
		}
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM trust_policies WHERE domain = ? AND name = ?`, d, p.Name).Scan(&id)
		if err == nil {
			return fmt.Errorf("policy %s of %s: %w", p.Name, d, ErrExists)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO trust_policies (domain, name, direction, expr, created)
			VALUES (?, ?, ?, ?, ?) RETURNING id`, d, p.Name, string(p.Direction), p.Expr, millis(p.Created)).Scan(&p.ID)
	})
	if err != nil {
		return TrustPolicy{}, fmt.Errorf("add trust policy: %w", err)
	}
	return p, nil
}

// TrustPolicies returns the rules of a domain, or of every domain for "",
// by domain and name.
func (s *Store) TrustPolicies(ctx context.Context, domain string) ([]TrustPolicy, error) {
	q, args, err := whereDomain(`SELECT `+trustPolicyColumns+` FROM trust_policies`, "domain", domain)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, "trust policies", scanTrustPolicy, q+` ORDER BY domain, name`, args...)
}

// trustPolicyColumns are the columns scanTrustPolicy reads.
const trustPolicyColumns = `id, domain, name, direction, expr, created`

func scanTrustPolicy(r rowScanner) (TrustPolicy, error) {
	var p TrustPolicy
	var dir string
	var created int64
	err := r.Scan(&p.ID, &p.Domain, &p.Name, &dir, &p.Expr, &created)
	p.Direction, p.Created = Direction(dir), fromMillis(created)
	return p, err
}

// RemoveTrustPolicy removes a domain's rule by name (ErrNotFound if it has
// none of that name) and returns it.
func (s *Store) RemoveTrustPolicy(ctx context.Context, domain, name string) (TrustPolicy, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return TrustPolicy{}, err
	}
	var p TrustPolicy
	err = s.change(ctx, func(tx *txn) error {
		var err error
		p, err = scanTrustPolicy(tx.QueryRowContext(ctx, `SELECT `+trustPolicyColumns+` FROM trust_policies WHERE domain = ? AND name = ?`, d, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("policy %s of %s: %w", name, d, ErrNotFound)
		} else if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM trust_policies WHERE id = ?`, p.ID)
		return err
	})
	if err != nil {
		return TrustPolicy{}, fmt.Errorf("remove trust policy: %w", err)
	}
	return p, nil
}
