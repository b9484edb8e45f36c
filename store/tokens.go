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
	"slices"
	"strings"
	"time"
)

// APIToken is an API client's token, without the secret.
type APIToken struct {
	ID   int64
	Name string
	// Domains limits the token to messages whose sender is in one of these
	// local domains (an EHR's token); nil: every message.
	Domains []string
	// Admin tokens may also use the admin operations of the API (hisp token
	// add --admin); they are never limited to domains.
	Admin   bool
	Created time.Time
}

// Sees reports whether the token may read a message of sender.
func (t APIToken) Sees(sender string) bool {
	if t.Domains == nil {
		return true
	}
	_, domain, err := NormalizeAddress(sender)
	return err == nil && slices.Contains(t.Domains, domain)
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
// it; only its hash is kept, so this is the one time it can be read. With
// domains (local domains), the token sees only the messages of their
// senders. A name in use gives an error wrapping ErrExists.
func (s *Store) CreateAPIToken(ctx context.Context, name string, domains ...string) (APIToken, string, error) {
	return s.CreateAPITokenScope(ctx, name, false, domains)
}

// CreateAPITokenScope is CreateAPIToken with the admin scope: an admin
// token may use every operation of the API and cannot be limited to
// domains.
func (s *Store) CreateAPITokenScope(ctx context.Context, name string, admin bool, domains []string) (APIToken, string, error) {
	name = strings.TrimSpace(name)
	if admin && len(domains) > 0 {
		return APIToken{}, "", fmt.Errorf("add API token %s: an admin token cannot be limited to domains", name)
	}
	if name == "" || len(name) > 100 || strings.ContainsAny(name, "\r\n\t\x00") {
		return APIToken{}, "", fmt.Errorf("add API token: invalid name %q", name)
	}
	var scope []string
	for _, d := range domains {
		nd, err := NormalizeDomain(d)
		if err != nil {
			return APIToken{}, "", fmt.Errorf("add API token %s: %w", name, err)
		}
		if !slices.Contains(scope, nd) {
			scope = append(scope, nd)
		}
	}
	slices.Sort(scope)
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return APIToken{}, "", fmt.Errorf("add API token: %w", err)
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	t := APIToken{Name: name, Domains: scope, Admin: admin, Created: fromMillis(millis(time.Now()))}
	err := s.tx(ctx, func(tx *txn) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM api_tokens WHERE name = ?`, name); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("API token %s: %w", name, ErrExists)
		}
		for _, d := range scope {
			if err := domainExists(ctx, tx, d); err != nil {
				return err
			}
		}
		return tx.QueryRowContext(ctx, `INSERT INTO api_tokens (name, hash, created, domains, admin) VALUES (?, ?, ?, ?, ?) RETURNING id`,
			name, hashToken(token), millis(t.Created), strings.Join(scope, " "), admin).Scan(&t.ID)
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
	var domains string
	err := s.db.QueryRowContext(ctx, `SELECT id, name, created, domains, admin FROM api_tokens WHERE hash = ?`, hashToken(token)).
		Scan(&t.ID, &t.Name, &created, &domains, &t.Admin)
	if errors.Is(err, sql.ErrNoRows) {
		return APIToken{}, fmt.Errorf("API token: %w", ErrNotFound)
	} else if err != nil {
		return APIToken{}, fmt.Errorf("check API token: %w", err)
	}
	t.Created, t.Domains = fromMillis(created), tokenDomains(domains)
	return t, nil
}

// APITokens lists the API clients by name.
func (s *Store) APITokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created, domains, admin FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		var t APIToken
		var created int64
		var domains string
		if err := rows.Scan(&t.ID, &t.Name, &created, &domains, &t.Admin); err != nil {
			return nil, fmt.Errorf("list API tokens: %w", err)
		}
		t.Created, t.Domains = fromMillis(created), tokenDomains(domains)
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

// tokenDomains reads the stored scope of a token: nil for every domain.
func tokenDomains(stored string) []string {
	if f := strings.Fields(stored); len(f) > 0 {
		return f
	}
	return nil
}
