package certs

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hisp-project/hisp/internal/clientip"
)

// Response rate limiting of UDP answers, after BIND's RRL: a DNS server
// answering UDP is a reflector (a CERT answer is about 20 times the query),
// and the source address of a UDP query is not checked. Each client gets a
// token bucket; an answer over its rate is dropped, except every Slip-th,
// which goes out as an empty truncated answer (TC=1, a few dozen bytes) so
// that a real client behind the address retries over TCP (CD-04), where addresses
// cannot be forged and no limit applies. Clients are single addresses for
// IPv4 and /64 prefixes for IPv6 (one host's usual allocation).

// Defaults of RateLimit.
const (
	DefaultRateLimitPerSecond = 20
	DefaultRateLimitSlip      = 2
	DefaultRateLimitClients   = 10000
)

// RateLimit configures response rate limiting of UDP answers. The zero value
// takes the defaults.
type RateLimit struct {
	// PerSecond is the answers per second one client gets over UDP, and
	// the burst it may use at once; DefaultRateLimitPerSecond. Negative
	// turns rate limiting off.
	PerSecond int
	// Slip: every Slip-th answer over the rate is sent truncated, the
	// others dropped; DefaultRateLimitSlip; 1 truncates every one;
	// negative drops every one.
	Slip int
	// Clients bounds the table of clients; DefaultRateLimitClients. When
	// it is full, clients whose bucket is full again are forgotten first.
	Clients int
	// Limited, when set, is called for each answer over the rate with
	// whether it slipped (sent truncated) or was dropped.
	Limited func(slipped bool)
	// Exempt reports clients that are never limited. nil: loopback
	// addresses, which cannot be forged from outside the machine (the
	// gateway's own discovery of its local domains, hisp sandbox).
	Exempt func(netip.Addr) bool
}

// rrlVerdict is what to do with one UDP answer.
type rrlVerdict int

const (
	rrlAnswer rrlVerdict = iota
	rrlSlip
	rrlDrop
)

// rateLimiter holds the token buckets.
type rateLimiter struct {
	rate    float64 // tokens per second, also the bucket size
	slip    int
	max     int
	limited func(slipped bool)
	exempt  func(netip.Addr) bool
	now     func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited int // answers over the rate, for the slip count
}

// newRateLimiter returns nil when rate limiting is off.
func newRateLimiter(o RateLimit) *rateLimiter {
	if o.PerSecond < 0 {
		return nil
	}
	if o.PerSecond == 0 {
		o.PerSecond = DefaultRateLimitPerSecond
	}
	if o.Slip == 0 {
		o.Slip = DefaultRateLimitSlip
	}
	if o.Clients <= 0 {
		o.Clients = DefaultRateLimitClients
	}
	if o.Limited == nil {
		o.Limited = func(bool) {}
	}
	if o.Exempt == nil {
		o.Exempt = netip.Addr.IsLoopback
	}
	return &rateLimiter{rate: float64(o.PerSecond), slip: o.Slip, max: o.Clients, limited: o.Limited,
		exempt: o.Exempt, now: time.Now, buckets: make(map[netip.Addr]*bucket)}
}

// check takes a token for an answer to remote and says what to do.
func (l *rateLimiter) check(remote net.Addr) rrlVerdict {
	key, ok := clientip.Of(remote) // IPv4, or the /64 of IPv6
	if !ok || l.exempt(key) {
		return rrlAnswer
	}
	now := l.now()
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.rate, last: now}
		l.buckets[key] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.rate, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		b.limited = 0
		l.mu.Unlock()
		return rrlAnswer
	}
	b.limited++
	slipped := l.slip > 0 && b.limited%l.slip == 0
	l.mu.Unlock()
	l.limited(slipped)
	if slipped {
		return rrlSlip
	}
	return rrlDrop
}

// evict makes room in a full table: clients whose bucket has filled up
// again are as good as new and go first; if none has, an eighth of the
// table goes (map order: arbitrary ones). Called with mu held.
func (l *rateLimiter) evict(now time.Time) {
	const refill = time.Second // a bucket holds one second's tokens
	for k, b := range l.buckets {
		if now.Sub(b.last) >= refill {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.max {
		return
	}
	n := max(1, l.max/8)
	for k := range l.buckets {
		if n == 0 {
			break
		}
		delete(l.buckets, k)
		n--
	}
}

// size returns the number of clients in the table.
func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
