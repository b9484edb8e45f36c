package certs

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/miekg/dns"
)

// TestDiscoverProvisionalNotCached: a certificate judged untrusted only for
// want of its revocation status (a CRL server down) makes a provisional
// Result that is not cached: the next discovery judges again and, the
// outage over, finds the certificate. A plain untrusted verdict is cached.
func TestDiscoverProvisionalNotCached(t *testing.T) {
	env := newDiscoveryEnv(t, false)
	d := NewDiscoverer(DiscoveryOptions{Resolver: env.zone.addr})
	bob := env.pki.leaf(t, leafOpts{email: "bob@outage.test"})
	env.zone.addCERT("bob.outage.test", dns.CertPKIX, bob.Raw)
	ctx := context.Background()

	outage := true
	calls := 0
	judge := func(_ context.Context, cert *x509.Certificate, _ []*x509.Certificate, _ string) Judgement {
		calls++
		if outage {
			return Judgement{Reason: "revocation status unavailable", Provisional: true}
		}
		return Judgement{Trusted: true, Reason: "fine"}
	}
	r1, err := d.DiscoverJudged(ctx, "bob@outage.test", "k", judge)
	tcheck(t, err, "discover during the outage")
	if len(r1.Certs) != 0 || !r1.Provisional || !r1.Steps[0].Candidates[0].Provisional {
		t.Fatalf("during the outage: %d certificates, provisional %v", len(r1.Certs), r1.Provisional)
	}
	outage = false
	r2, err := d.DiscoverJudged(ctx, "bob@outage.test", "k", judge)
	tcheck(t, err, "discover after the outage")
	if calls != 2 || len(r2.Certs) != 1 || r2.Provisional {
		t.Fatalf("after the outage: %d validations, %d certificates (a provisional result was cached?)", calls, len(r2.Certs))
	}

	// A plain refusal is a verdict: cached.
	refuse := func(context.Context, *x509.Certificate, []*x509.Certificate, string) Judgement {
		calls++
		return Judgement{Reason: "expired"}
	}
	calls = 0
	for range 2 {
		r, err := d.DiscoverJudged(ctx, "bob@outage.test", "k2", refuse)
		tcheck(t, err, "discover")
		if r.Provisional || !r.Stopped {
			t.Errorf("a plain refusal: provisional %v, stopped %v", r.Provisional, r.Stopped)
		}
	}
	if calls != 1 {
		t.Errorf("a plain refusal judged %d times, want 1 (cached)", calls)
	}
}
