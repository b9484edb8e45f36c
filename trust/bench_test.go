package trust

import (
	"context"
	"crypto/x509"
	"testing"
)

// BenchmarkValidateCachedCRL validates a root → intermediate → leaf chain
// whose leaf and intermediate both name a CRL, with both CRLs cached: the
// cost of trusting a known sender on every message.
func BenchmarkValidateCachedCRL(b *testing.B) {
	p := newPKI(b)
	inter := issue(b, p.root, certSpec{cn: "Test Intermediate CA", ca: true, key: rsaKey(b, kInter), crl: []string{p.url("/root.crl")}})
	leaf := issue(b, inter, certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{p.url("/inter.crl")}})
	p.serve("/root.crl", makeCRL(b, p.root, nil))
	p.serve("/inter.crl", makeCRL(b, inter, nil))
	v := p.validator(Options{})
	req := Request{
		Cert:          leaf.cert,
		Intermediates: []*x509.Certificate{inter.cert},
		Anchors:       []*x509.Certificate{p.root.cert},
		Address:       "bob@b.example",
		Purpose:       Signing,
	}
	ctx := context.Background()
	if vd := v.Validate(ctx, req); !vd.Trusted {
		b.Fatalf("not trusted: %s", vd.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		if vd := v.Validate(ctx, req); !vd.Trusted {
			b.Fatalf("not trusted: %s", vd.Reason)
		}
	}
	b.StopTimer()
	if p.hitCount("/inter.crl") != 1 || p.hitCount("/root.crl") != 1 {
		b.Errorf("CRLs fetched %d and %d times, want once each", p.hitCount("/inter.crl"), p.hitCount("/root.crl"))
	}
}
