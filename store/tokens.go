package store

// Bearer tokens of the HTTP API: one per API client, stored as a SHA-256
// hash only; the token itself is shown once, when it is made.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// APIToken is an API client's token, without the secret.
type APIToken struct {
	ID      int64
	Name    string
	Created time.Time
}

// tokenPrefix marks hisp's tokens, so that a leaked one is recognizable.
const tokenPrefix = "hisp_"

// hashToken is the stored form of a token. Tokens carry 256 random bits,
// so a plain hash is enough: there is nothing to guess.
func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// CreateAPIToken makes a new token for an API client named name and returns
// it; only its hash is kept, so this is the one time it can be read. A name
// in use gives an error wrapping ErrExists.
func (s *Store) CreateAPIToken(ctx context.Context, name string) (APIToken, string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 || strings.ContainsAny(name, "\r\n\t\x00") {
		return APIToken{}, "", fmt.Errorf("add API token: invalid name %q", name)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return APIToken{}, "", fmt.Errorf("add API token: %w", err)
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	t := APIToken{Name: name, Created: fromMillis(millis(time.Now()))}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM api_tokens WHERE name = ?`, name); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("API token %s: %w", name, ErrExists)
		}
		return tx.QueryRowContext(ctx, `INSERT INTO api_tokens (name, hash, created) VALUES (?, ?, ?) RETURNING id`,
			name, hashToken(token), millis(t.Created)).Scan(&t.ID)
	})
	if err != nil {
		return APIToken{}, "", fmt.Errorf("add API token: %w", err)
	}
	return t, token, nil
}

// CheckAPIToken returns the token's client; an error wrapping ErrNotFound
// if the token is not (or no longer) valid.
func (s *Store) CheckAPIToken(ctx context.Context, token string) (APIToken, error) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return APIToken{}, fmt.Errorf("API token: %w", ErrNotFound)
	}
	var t APIToken
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT id, name, created FROM api_tokens WHERE hash = ?`, hashToken(token)).
		Scan(&t.ID, &t.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return APIToken{}, fmt.Errorf("API token: %w", ErrNotFound)
	} else if err != nil {
		return APIToken{}, fmt.Errorf("check API token: %w", err)
	}
	t.Created = fromMillis(created)
	return t, nil
}

// APITokens lists the API clients by name.
func (s *Store) APITokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		var t APIToken
		var created int64
		if err := rows.Scan(&t.ID, &t.Name, &created); err != nil {
			return nil, fmt.Errorf("list API tokens: %w", err)
		}
		t.Created = fromMillis(created)
		out = append(out, t)
	}
	return out, rows.Err()
}

// RemoveAPIToken revokes a client's token; ErrNotFound (wrapped) if there
// is none of that name.
func (s *Store) RemoveAPIToken(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM api_tokens WHERE name = ?`, strings.TrimSpace(name))
	if err != nil {
		return fmt.Errorf("remove API token: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("remove API token: %w", err)
	} else if n == 0 {
		return fmt.Errorf("API token %s: %w", name, ErrNotFound)
	}
	return nil
}
