package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Admin is an account of the admin web page.
type Admin struct {
	ID      int64
	Name    string
	Created time.Time
}

func normalizeAdminName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" || len(n) > 64 {
		return "", fmt.Errorf("admin name %q: want 1 to 64 characters", name)
	}
	for _, c := range n {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return "", fmt.Errorf("admin name %q: printable ASCII without spaces or ':'", name)
		}
	}
	return n, nil
}

// AddAdmin adds an admin account; its password is kept as a bcrypt hash
// only.
func (s *Store) AddAdmin(ctx context.Context, name, password string) (Admin, error) {
	n, err := normalizeAdminName(name)
	if err != nil {
		return Admin{}, err
	}
	hash, err := hashPassword("admin "+n, password)
	if err != nil {
		return Admin{}, err
	}
	a := Admin{Name: n, Created: fromMillis(millis(time.Now()))}
	err = s.change(ctx, func(tx *txn) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO admin_accounts (name, password_hash, created) VALUES (?, ?, ?)
			ON CONFLICT (name) DO NOTHING RETURNING id`, n, hash, millis(a.Created)).Scan(&a.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("admin %s: %w", n, ErrExists)
		} else if err != nil {
			return fmt.Errorf("add admin %s: %w", n, err)
		}
		return nil
	})
	if err != nil {
		return Admin{}, err
	}
	return a, nil
}

// Admins returns the admin accounts by name.
func (s *Store) Admins(ctx context.Context) ([]Admin, error) {
	return queryAll(ctx, s.db, "admins", func(row rowScanner) (Admin, error) {
		var a Admin
		var created int64
		err := row.Scan(&a.ID, &a.Name, &created)
		a.Created = fromMillis(created)
		return a, err
	}, `SELECT id, name, created FROM admin_accounts ORDER BY name`)
}

// RemoveAdmin removes an admin account; ErrNotFound if there is none.
func (s *Store) RemoveAdmin(ctx context.Context, name string) error {
	n, err := normalizeAdminName(name)
	if err != nil {
		return err
	}
	return s.change(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM admin_accounts WHERE name = ?`, n)
		if err != nil {
			return fmt.Errorf("remove admin %s: %w", n, err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return fmt.Errorf("admin %s: %w", n, ErrNotFound)
		}
		return nil
	})
}

// CheckAdminPassword verifies an admin login; every failure is
// ErrBadCredentials.
func (s *Store) CheckAdminPassword(ctx context.Context, name, password string) (Admin, error) {
	n, err := normalizeAdminName(name)
	if err != nil {
		s.passwordMatches("", password)
		return Admin{}, ErrBadCredentials
	}
	var a Admin
	var hash string
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT id, name, password_hash, created FROM admin_accounts WHERE name = ?`, n).
		Scan(&a.ID, &a.Name, &hash, &created)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Admin{}, fmt.Errorf("check password of admin %s: %w", n, err)
	}
	if !s.passwordMatches(hash, password) {
		return Admin{}, ErrBadCredentials
	}
	a.Created = fromMillis(created)
	return a, nil
}
