package store

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
)

// A verified-credential cache, as a mail server's auth cache keeps one: a
// login and password that passed their bcrypt check are accepted again,
// for a while, without paying for another (tens of milliseconds of CPU,
// the bulk of a connection-per-message client's cost).
//
// What is kept is a keyed hash (HMAC-SHA256 under a key made at random
// for this process and never written anywhere) of the stored bcrypt hash
// and the password, with an expiry: never the password, and nothing that
// can be checked against a guess without the key. Keying by the stored
// hash makes a changed password (a new hash, whoever changed it: another
// process, an admin command) or a removed account (no hash) miss at once,
// with no flush to send. Failures are never kept. The login limiter's
// turns (internal/loginlimit) come before any check, cached or not.

// Defaults of the credential cache.
const (
	DefaultCredentialCacheTTL = 10 * time.Minute
	credentialCacheMax        = 10000
)

type credentialCache struct {
	key [32]byte
	now func() time.Time
	// hits and hashed count the password checks answered from the cache
	// and those that ran bcrypt.
	hits, hashed atomic.Uint64

	mu  sync.Mutex
	ttl time.Duration
	m   map[[sha256.Size]byte]time.Time // keyed hash -> expiry
}

func newCredentialCache(ttl time.Duration) *credentialCache {
	c := &credentialCache{ttl: ttl, now: time.Now, m: make(map[[sha256.Size]byte]time.Time)}
	rand.Read(c.key[:])
	return c
}

func (c *credentialCache) id(hash, password string) [sha256.Size]byte {
	mac := hmac.New(sha256.New, c.key[:])
	mac.Write([]byte(hash))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var k [sha256.Size]byte
	mac.Sum(k[:0])
	return k
}

// verified reports whether the pair passed a check within the TTL.
func (c *credentialCache) verified(hash, password string) bool {
	k := c.id(hash, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.m[k]
	if !ok {
		return false
	}
	if !c.now().Before(until) {
		delete(c.m, k)
		return false
	}
	return true
}

// remember keeps a pair that passed its check.
func (c *credentialCache) remember(hash, password string) {
	k := c.id(hash, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ttl <= 0 {
		return
	}
	now := c.now()
	if len(c.m) >= credentialCacheMax {
		for k, until := range c.m {
			if !now.Before(until) || len(c.m) >= credentialCacheMax {
				delete(c.m, k)
			}
		}
	}
	c.m[k] = now.Add(c.ttl)
}

// setTTL changes the TTL; 0 turns the cache off and empties it.
func (c *credentialCache) setTTL(ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ttl = ttl
	if ttl <= 0 {
		clear(c.m)
	}
}

// SetCredentialCache sets how long a verified login and password are
// accepted again without a bcrypt check (DefaultCredentialCacheTTL when
// the store opens); 0 turns the cache off.
func (s *Store) SetCredentialCache(ttl time.Duration) { s.creds.setTTL(ttl) }

// PasswordChecks counts this process's password checks: those answered by
// the credential cache and those that ran bcrypt (unknown logins
// included).
func (s *Store) PasswordChecks() (cached, hashed uint64) {
	return s.creds.hits.Load(), s.creds.hashed.Load()
}
