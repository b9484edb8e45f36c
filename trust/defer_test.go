package trust

import (
	"testing"
	"time"
)

// TestRevocationDefer: with DeferUnavailable, an unreachable CRL or OCSP
// responder makes the verdict untrusted and Provisional (try again), a
// revoked certificate is refused for good, and once the CRL is back (and
// the failure has aged past FailureTTL) the certificate is trusted.
func TestRevocationDefer(t *testing.T) {
	p := newPKI(t)
	crl := p.url("/inter.crl")
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{crl}})
	ocspOnly := p.leaf(certSpec{cn: "carol", emails: []string{"carol@b.example"}, ocsp: []string{unreachable}})
	v := p.validator(Options{Revocation: DeferUnavailable, FailureTTL: time.Second})

	vd := check(t, v, p.req(leaf, "bob@b.example", Signing), false, "revocation policy: defer")
	if !vd.Provisional {
		t.Error("an unreachable CRL under defer: not provisional")
	}
	if vd := check(t, v, p.req(ocspOnly, "carol@b.example", Signing), false, "OCSP "+unreachable); !vd.Provisional {
		t.Error("an unreachable OCSP responder under defer: not provisional")
	}
	for _, pol := range []RevocationPolicy{RefuseUnavailable, AllowUnavailable} {
		if vd := p.validator(Options{Revocation: pol}).Validate(t.Context(), p.req(leaf, "bob@b.example", Signing)); vd.Provisional {
			t.Errorf("policy %s gives a provisional verdict", pol)
		}
	}

	p.serve("/inter.crl", makeCRL(t, p.inter, nil))
	later := time.Now().Add(2 * time.Second)
	v.now = func() time.Time { return later }
	if vd := check(t, v, p.req(leaf, "bob@b.example", Signing), true, "not revoked"); vd.Provisional {
		t.Error("trusted and provisional")
	}

	revoked := p.leaf(certSpec{cn: "mallory", emails: []string{"bob@b.example"}, crl: []string{crl}})
	p.serve("/inter.crl", makeCRL(t, p.inter, nil, revoked.cert))
	if vd := check(t, p.validator(Options{Revocation: DeferUnavailable}), p.req(revoked, "bob@b.example", Signing), false, "revoked by CRL"); vd.Provisional {
		t.Error("a revoked certificate is provisional")
	}
	if DeferUnavailable.String() != "defer" {
		t.Errorf("String %q", DeferUnavailable)
	}
}
