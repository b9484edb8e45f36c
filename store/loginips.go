package store

import (
	"context"
	"fmt"
	"time"
)

// LoginIP is a client a login name logged in from (its key as the login
// limiter counts clients: an IPv4 address, or the first address of an IPv6
// /64), and when last.
type LoginIP struct {
	Name, IP string
	LastGood time.Time
}

// RememberLoginIP records a successful login of name from ip at at (a
// later one than on record replaces it), and forgets logins of any name
// older than before.
func (s *Store) RememberLoginIP(ctx context.Context, name, ip string, at, before time.Time) error {
	err := s.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO login_known_ips (name, ip, last_good) VALUES (?, ?, ?)
			ON CONFLICT (name, ip) DO UPDATE SET last_good = excluded.last_good
			WHERE excluded.last_good > login_known_ips.last_good`, name, ip, millis(at)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM login_known_ips WHERE last_good < ?`, millis(before))
		return err
	})
	if err != nil {
		return fmt.Errorf("remember login of %s from %s: %w", name, ip, err)
	}
	return nil
}

// LoginIPs returns the logins recorded since since, of every name.
func (s *Store) LoginIPs(ctx context.Context, since time.Time) ([]LoginIP, error) {
	return queryAll(ctx, s.db, "list login IPs", func(r rowScanner) (LoginIP, error) {
		var l LoginIP
		var at int64
		err := r.Scan(&l.Name, &l.IP, &at)
		l.LastGood = fromMillis(at)
		return l, err
	}, `SELECT name, ip, last_good FROM login_known_ips WHERE last_good >= ? ORDER BY last_good`, millis(since))
}
