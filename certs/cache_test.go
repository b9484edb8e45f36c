package certs

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeClock is a settable clock for cache expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingValidator wraps v and counts its calls.
func countingValidator(v ValidateFunc, n *atomic.Int32) ValidateFunc {
	return func(ctx context.Context, c *x509.Certificate, inter []*x509.Certificate, addr string) (bool, string) {
		n.Add(1)
		return v(ctx, c, inter, addr)
	}
}

func TestDiscoverCache(t *testing.T) {
	env := newDiscoveryEnv(t, false)
	clock := &fakeClock{t: time.Now()}
	d := NewDiscoverer(DiscoveryOptions{Resolver: env.zone.addr, Now: clock.now})
	ab := env.pki.leaf(t, leafOpts{email: "bob@cache.test"})
	env.zone.addCERT("bob.cache.test", dns.CertPKIX, ab.Raw) // TTL 300 s
	var calls atomic.Int32
	v := countingValidator(env.pki.validator(), &calls)
	ctx := context.Background()

	// Lookups are cached; validate runs on every Discover.
	res, err := d.Discover(ctx, "bob@cache.test", v)
	tcheck(t, err, "discover")
	wantCerts(t, res, DNSAddress, ab)
	if res.Steps[0].Cached {
		t.Error("first look-up marked cached")
	}
	n := env.zone.queryCount()
	res, err = d.Discover(ctx, "bob@cache.test", v)
	tcheck(t, err, "discover")
	wantCerts(t, res, DNSAddress, ab)
	if !res.Steps[0].Cached || env.zone.queryCount() != n {
		t.Errorf("second look-up not from the cache (cached %v, %d new queries)", res.Steps[0].Cached, env.zone.queryCount()-n)
	}
	if calls.Load() != 2 {
		t.Errorf("validate called %d times, want 2", calls.Load())
	}

	// DiscoverKeyed caches the verdict per key.
	r1, err := d.DiscoverKeyed(ctx, "bob@cache.test", "anchors-1", v)
	tcheck(t, err, "discover keyed")
	r2, err := d.DiscoverKeyed(ctx, "bob@cache.test", "anchors-1", v)
	tcheck(t, err, "discover keyed")
	if r1 != r2 || calls.Load() != 3 {
		t.Errorf("keyed result not cached (same %v, validate calls %d)", r1 == r2, calls.Load())
	}
	r3, err := d.DiscoverKeyed(ctx, "bob@cache.test", "anchors-2", v)
	tcheck(t, err, "discover keyed")
	if r3 == r1 || calls.Load() != 4 {
		t.Errorf("new key did not validate again (validate calls %d)", calls.Load())
	}

	// After the TTL everything is looked up again.
	clock.advance(301 * time.Second)
	n = env.zone.queryCount()
	r4, err := d.DiscoverKeyed(ctx, "bob@cache.test", "anchors-1", v)
	tcheck(t, err, "discover keyed")
	if r4 == r1 || env.zone.queryCount() == n || r4.Steps[0].Cached {
		t.Error("cache entry outlived its TTL")
	}

	// FlushCache forgets.
	d.FlushCache()
	n = env.zone.queryCount()
	if _, err := d.DiscoverKeyed(ctx, "bob@cache.test", "anchors-1", v); err != nil || env.zone.queryCount() == n {
		t.Errorf("flushed cache still answered (err %v)", err)
	}
}

func TestDiscoverNegativeCache(t *testing.T) {
	env := newDiscoveryEnv(t, false)
	clock := &fakeClock{t: time.Now()}
	d := NewDiscoverer(DiscoveryOptions{Resolver: env.zone.addr, Now: clock.now, NegativeTTL: 30 * time.Second})
	v := env.pki.validator()
	ctx := context.Background()
	r1, err := d.DiscoverKeyed(ctx, "nobody@neg.test", "k", v)
	tcheck(t, err, "discover")
	wantNoCerts(t, r1)
	n := env.zone.queryCount()
	if n != 3 { // CERT address, CERT domain, SRV
		t.Errorf("%d queries, want 3", n)
	}
	r2, err := d.Discover(ctx, "nobody@neg.test", v)
	tcheck(t, err, "discover")
	if env.zone.queryCount() != n {
		t.Error("negative answers not cached")
	}
	for _, s := range r2.Steps {
		if !s.Cached {
			t.Errorf("step %s not cached", s.Step)
		}
	}
	if r3, _ := d.DiscoverKeyed(ctx, "nobody@neg.test", "k", v); r3 != r1 {
		t.Error("negative result not cached")
	}
	clock.advance(31 * time.Second)
	if _, err := d.Discover(ctx, "nobody@neg.test", v); err != nil || env.zone.queryCount() == n {
		t.Errorf("negative answer outlived NegativeTTL (err %v)", err)
	}
}

// TestDiscoverKeyedCertExpiry checks that a cached verdict does not outlive
// the certificate it trusts.
func TestDiscoverKeyedCertExpiry(t *testing.T) {
	env := newDiscoveryEnv(t, false)
	clock := &fakeClock{t: time.Now()}
	d := NewDiscoverer(DiscoveryOptions{Resolver: env.zone.addr, Now: clock.now})
	short := env.pki.leaf(t, leafOpts{email: "s@short.test", notAfter: time.Now().Add(100 * time.Second)})
	env.zone.addCERT("s.short.test", dns.CertPKIX, short.Raw)
	var calls atomic.Int32
	v := countingValidator(env.pki.validator(), &calls)
	ctx := context.Background()
	r1, err := d.DiscoverKeyed(ctx, "s@short.test", "k", v)
	tcheck(t, err, "discover")
	wantCerts(t, r1, DNSAddress, short)
	clock.advance(150 * time.Second) // DNS TTL 300 s still fresh
	r2, err := d.DiscoverKeyed(ctx, "s@short.test", "k", v)
	tcheck(t, err, "discover")
	if r2 == r1 || calls.Load() != 2 {
		t.Errorf("verdict outlived its certificate (validate calls %d)", calls.Load())
	}
}

func TestTTLCacheBound(t *testing.T) {
	now := time.Now()
	c := newTTLCache[int](10)
	for i := range 25 {
		c.put(fmt.Sprint(i), i, now.Add(time.Minute), now)
		if c.len() > 10 {
			t.Fatalf("cache grew to %d entries", c.len())
		}
	}
	if v, _, ok := c.get("24", now); !ok || v != 24 {
		t.Error("latest entry missing")
	}
	if _, _, ok := c.get("24", now.Add(time.Minute)); ok {
		t.Error("expired entry returned")
	}
	c.put("old", 1, now, now)
	if _, _, ok := c.get("old", now.Add(-time.Second)); ok {
		t.Error("entry expiring at once was stored")
	}
}

// BenchmarkDiscoverCached measures discovery of a recipient whose verdict is
// cached (goal: under 5 µs).
func BenchmarkDiscoverCached(b *testing.B) {
	pki := newTestPKI(b)
	z := startTestZone(b)
	ab := pki.leaf(b, leafOpts{email: "bob@bench.test"})
	z.addCERT("bob.bench.test", dns.CertPKIX, ab.Raw)
	d := NewDiscoverer(DiscoveryOptions{Resolver: z.addr})
	ctx := context.Background()
	v := pki.validator()
	res, err := d.DiscoverKeyed(ctx, "bob@bench.test", "anchors", v)
	if err != nil || len(res.Certs) != 1 {
		b.Fatalf("warm-up: %v", err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := d.DiscoverKeyed(ctx, "bob@bench.test", "anchors", v)
		if err != nil || len(res.Certs) != 1 {
			b.Fatal("cached discovery failed")
		}
	}
}
