package certs

import (
	"sync"
	"time"
)

// defaultCacheEntries bounds each cache of a Discoverer. When a cache is full,
// expired entries are dropped first, then arbitrary ones.
const defaultCacheEntries = 10000

// ttlCache is a map whose entries expire at a given time (CD-11). It is safe
// for concurrent use. The zero value is not usable; see newTTLCache.
type ttlCache[V any] struct {
	mu  sync.RWMutex
	m   map[string]ttlEntry[V]
	max int
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](max int) *ttlCache[V] {
	return &ttlCache[V]{m: map[string]ttlEntry[V]{}, max: max}
}

// get returns the value stored for key and when it expires, unless it has
// expired at now.
func (c *ttlCache[V]) get(key string, now time.Time) (V, time.Time, bool) {
	c.mu.RLock()
	e, ok := c.m[key]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, time.Time{}, false
	}
	return e.v, e.expires, true
}

// put stores v for key until expires. Values that would expire at or before
// now are not stored.
func (c *ttlCache[V]) put(key string, v V, expires, now time.Time) {
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		// Still full: drop arbitrary entries (map order is random) until a
		// tenth of the room is free, so that this scan is not repeated on
		// every put.
		for k := range c.m {
			if len(c.m) < c.max-c.max/10 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = ttlEntry[V]{v, expires}
}

// clear removes all entries.
func (c *ttlCache[V]) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// len returns the number of entries, expired ones included.
func (c *ttlCache[V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// earliest returns the earlier of a and b, treating the zero time as "no
// limit".
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}
