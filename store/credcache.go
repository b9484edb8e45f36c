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
	// flight holds the bcrypt checks running now, so that the same login
	// and password arriving at once (clients connecting in parallel) cost
	// one check, not one each.
	flight map[[sha256.Size]byte]*check
}

// check is a bcrypt comparison in flight; ok is set before done closes.
type check struct {
	done chan struct{}
	ok   bool
}

func newCredentialCache(ttl time.Duration) *credentialCache {
	c := &credentialCache{ttl: ttl, now: time.Now, m: make(map[[sha256.Size]byte]time.Time),
		flight: make(map[[sha256.Size]byte]*check)}
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

// matches answers whether password matches the bcrypt hash: from the
// cache when the pair passed within the TTL, else with compare, run once
// for concurrent checks of the same pair (whose answer is the same). A
// pair that matched is kept; one that did not never is.
func (c *credentialCache) matches(hash, password string, compare func() bool) bool {
	k := c.id(hash, password)
	c.mu.Lock()
	if until, ok := c.m[k]; ok {
		if c.now().Before(until) {
			c.mu.Unlock()
			c.hits.Add(1)
			return true
		}
		delete(c.m, k)
	}
	if f := c.flight[k]; f != nil {
		c.mu.Unlock()
		<-f.done
		if f.ok {
			c.hits.Add(1)
		}
		return f.ok
	}
	f := &check{done: make(chan struct{})}
	c.flight[k] = f
	c.mu.Unlock()

	c.hashed.Add(1)
	f.ok = compare()
	c.mu.Lock()
	delete(c.flight, k)
	if f.ok {
		c.rememberLocked(k)
	}
	c.mu.Unlock()
	close(f.done)
	return f.ok
}

// rememberLocked keeps a pair that passed its check.
func (c *credentialCache) rememberLocked(k [sha256.Size]byte) {
	if c.ttl <= 0 {
		return
	}
	now := c.now()
	if len(c.m) >= credentialCacheMax {
		for old, until := range c.m {
			if !now.Before(until) || len(c.m) >= credentialCacheMax {
				delete(c.m, old)
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
