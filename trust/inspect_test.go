package trust

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

// TestInspect: Inspect reports each rule on its own, so that a certificate
// with several problems shows all of them, and an expired certificate
// still shows its path to the anchor.
func TestInspect(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	p.serve("/inter.crl", makeCRL(t, p.inter, nil))
	now := time.Now()

	good := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{p.url("/inter.crl")}})
	in := v.Inspect(context.Background(), p.req(good, "bob@b.example", Encryption))
	if !in.OK() || len(in.Findings) != 6 || in.Binding != AddressBound || len(in.Chain) != 3 {
		t.Fatalf("good certificate: %+v", in)
	}
	if f := in.Find(RuleRevocation); !strings.Contains(f.Reason, "not revoked (CRL "+p.url("/inter.crl")) {
		t.Errorf("revocation: %+v", f)
	}
	if f := in.Find(RuleKey); f.Reason != "RSA 2048 bits, signed with SHA256-RSA" {
		t.Errorf("key: %+v", f)
	}

	// Expired, signing only, bound to another address, CRL unreachable:
	// each rule says so, and the path is still found.
	bad := p.leaf(certSpec{cn: "old", emails: []string{"carol@b.example"}, ku: x509.KeyUsageDigitalSignature,
		notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour), crl: []string{p.url("/missing.crl")}})
	in = v.Inspect(context.Background(), p.req(bad, "bob@b.example", Encryption))
	want := map[Rule]string{
		RuleBinding:    "not bound to bob@b.example",
		RuleValidity:   `"old" expired on`,
		RuleKeyUsage:   "lacks keyEncipherment",
		RuleRevocation: "revocation status of \"old\" unavailable: CRL " + p.url("/missing.crl"),
	}
	for r, part := range want {
		if f := in.Find(r); f.OK || !strings.Contains(f.Reason, part) {
			t.Errorf("%s: %+v, want a failure with %q", r, f, part)
		}
	}
	if f := in.Find(RuleChain); !f.OK || !strings.Contains(f.Reason, `anchor "Test Root CA" via 1 intermediate`) {
		t.Errorf("chain of an expired certificate: %+v", f)
	}
	if in.OK() {
		t.Error("OK with failed rules")
	}

	// No anchors: the chain fails and revocation is not checked.
	req := p.req(good, "bob@b.example", Encryption)
	req.Anchors = nil
	in = v.Inspect(context.Background(), req)
	if f := in.Find(RuleChain); f.OK || !strings.Contains(f.Reason, "no trust anchors") {
		t.Errorf("chain without anchors: %+v", f)
	}
	if f := in.Find(RuleRevocation); f.OK || !strings.Contains(f.Reason, "not checked") {
		t.Errorf("revocation without anchors: %+v", f)
	}
}
