package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// ErrBadCredentials is returned by CheckPassword for an unknown address, an
// address without a password, or a wrong password: callers cannot tell
// which, so a login prompt reveals no addresses.
var ErrBadCredentials = errors.New("invalid address or password")

// MinPasswordLength is the shortest password SetPassword accepts.
const MinPasswordLength = 8

// SetPassword sets the login password of a local address (submission and
// IMAP). Passwords are stored as bcrypt hashes only.
func (s *Store) SetPassword(ctx context.Context, address, password string) error {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		return err
	}
	hash, err := hashPassword(addr, password)
	if err != nil {
		return err
	}
	return s.change(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE addresses SET password_hash = ? WHERE address = ?`, hash, addr)
		if err != nil {
			return fmt.Errorf("set password of %s: %w", addr, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("address %s: %w", addr, ErrNotFound)
		}
		return nil
	})
}

// hashPassword checks a login's new password and returns its bcrypt hash,
// the only form stored; who names the login in errors.
func hashPassword(who, password string) (string, error) {
	if len(password) < MinPasswordLength {
		return "", fmt.Errorf("password for %s: shorter than %d characters", who, MinPasswordLength)
	}
	if len(password) > 72 {
		return "", fmt.Errorf("password for %s: longer than 72 bytes (bcrypt's limit)", who)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(hash), nil
}

// passwordMatches compares a password with a stored bcrypt hash. With no
// hash ("": no such login, or none without a password) it compares with a
// dummy hash, so that unknown and known logins take the same time, and
// reports false.
// A pair that matched lately matches again without bcrypt (credcache.go).
func (s *Store) passwordMatches(hash, password string) bool {
	if hash == "" {
		s.creds.hashed.Add(1)
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
		return false
	}
	return s.creds.matches(hash, password, func() bool {
		return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
	})
}

// dummyHash is compared against when an address has no password, so that
// unknown and known addresses take the same time.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("hisp: no such account"), bcrypt.DefaultCost)
	return h
})

// CheckPassword verifies the login of a local address and returns the
// normalized address. Every failure is ErrBadCredentials (wrapped only for
// store errors).
func (s *Store) CheckPassword(ctx context.Context, address, password string) (string, error) {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		s.passwordMatches("", password)
		return "", ErrBadCredentials
	}
	var hash sql.NullString
	err = s.db.QueryRowContext(ctx, `SELECT password_hash FROM addresses WHERE address = ?`, addr).Scan(&hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("check password of %s: %w", addr, err)
	}
	if !s.passwordMatches(hash.String, password) {
		return "", ErrBadCredentials
	}
	return addr, nil
}
