package trust

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// check validates req and compares the outcome: trusted, and for refusals a
// part the reason must contain.
func check(t *testing.T, v *Validator, req Request, trusted bool, reasonPart string) Verdict {
	t.Helper()
	vd := v.Validate(context.Background(), req)
	if vd.Reason == "" {
		t.Errorf("verdict without reason: %+v", vd)
	}
	if vd.Trusted != trusted {
		t.Fatalf("trusted = %v, want %v; reason: %s", vd.Trusted, trusted, vd.Reason)
	}
	if reasonPart != "" && !strings.Contains(vd.Reason, reasonPart) {
		t.Errorf("reason %q does not contain %q", vd.Reason, reasonPart)
	}
	if trusted && (len(vd.Chain) == 0 || vd.Anchor == nil || vd.Chain[len(vd.Chain)-1] != vd.Anchor) {
		t.Errorf("trusted verdict without chain to anchor: %+v", vd)
	}
	t.Logf("reason: %s", vd.Reason)
	return vd
}

func (p *testPKI) req(leaf *testCert, address string, purpose Purpose) Request {
	return Request{
		Cert:          leaf.cert,
		Intermediates: []*x509.Certificate{p.inter.cert},
		Anchors:       []*x509.Certificate{p.root.cert},
		Address:       address,
		Purpose:       purpose,
	}
}

func TestAddressBound(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	for _, purpose := range []Purpose{Signing, Encryption} {
		vd := check(t, v, p.req(leaf, "bob@b.example", purpose), true, "address-bound")
		if vd.Binding != AddressBound || len(vd.Chain) != 3 || !vd.Anchor.Equal(p.root.cert) {
			t.Errorf("binding %v, chain %d, anchor %s", vd.Binding, len(vd.Chain), vd.Anchor.Subject)
		}
	}
	// Another address of the same domain does not bind.
	check(t, v, p.req(leaf, "alice@b.example", Signing), false, "not bound to alice@b.example")
}

func TestDomainBound(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	leaf := p.leaf(certSpec{cn: "b.example", dns: []string{"b.example"}})
	vd := check(t, v, p.req(leaf, "bob@b.example", Encryption), true, "domain-bound")
	if vd.Binding != DomainBound {
		t.Errorf("binding %v, want domain-bound", vd.Binding)
	}
	check(t, v, p.req(leaf, "b.example", Encryption), true, "domain-bound")
	check(t, v, p.req(leaf, "bob@c.example", Encryption), false, "not bound")

	// An address-bound certificate does not bind to a bare domain.
	al := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	check(t, v, p.req(al, "b.example", Encryption), false, "only a dNSName binds to a domain")

	// Address-bound wins when both names are present (AS-08).
	both := p.leaf(certSpec{cn: "both", emails: []string{"bob@b.example"}, dns: []string{"b.example"}})
	if vd := check(t, v, p.req(both, "bob@b.example", Signing), true, ""); vd.Binding != AddressBound {
		t.Errorf("binding %v, want address-bound", vd.Binding)
	}
}

func TestBindingCaseInsensitive(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	al := p.leaf(certSpec{cn: "bob", emails: []string{"Bob.Smith@B.Example"}})
	check(t, v, p.req(al, "BOB.SMITH@b.example", Signing), true, "address-bound")
	check(t, v, p.req(al, "bob.smith@b.example", Signing), true, "address-bound")
	dl := p.leaf(certSpec{cn: "org", dns: []string{"B.EXAMPLE"}})
	check(t, v, p.req(dl, "Alice@b.Example", Signing), true, "domain-bound")
}

func TestWildcardRefused(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	leaf := p.leaf(certSpec{cn: "wild", dns: []string{"*.b.example"}})
	check(t, v, p.req(leaf, "bob@sub.b.example", Encryption), false, "wildcard dNSName never binds")
	check(t, v, p.req(leaf, "bob@b.example", Encryption), false, "wildcard")
}

func TestSubjectEmailDoesNotBind(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	leaf := p.leaf(certSpec{cn: "bob", subjectEmail: "bob@b.example"})
	check(t, v, p.req(leaf, "bob@b.example", Signing), false, "subject emailAddress bob@b.example does not bind")
}

func TestValidityPeriod(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	now := time.Now()
	expired := p.leaf(certSpec{cn: "old", emails: []string{"bob@b.example"},
		notBefore: now.Add(-48 * time.Hour), notAfter: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)})
	check(t, v, p.req(expired, "bob@b.example", Signing), false, `"old" expired on 2025-01-02 03:04:05 UTC`)

	future := p.leaf(certSpec{cn: "new", emails: []string{"bob@b.example"}, notBefore: now.Add(24 * time.Hour)})
	check(t, v, p.req(future, "bob@b.example", Signing), false, `"new" is not valid before`)

	// The leaf is fine, its intermediate expired.
	oldInter := issue(t, p.root, certSpec{cn: "Old Intermediate", ca: true, key: rsaKey(t, kInter),
		notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)})
	leaf := issue(t, oldInter, certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	req := p.req(leaf, "bob@b.example", Signing)
	req.Intermediates = []*x509.Certificate{oldInter.cert}
	check(t, v, req, false, `"Old Intermediate" expired on`)
}

func TestKeyUsage(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	signOnly := p.leaf(certSpec{cn: "sign", emails: []string{"bob@b.example"}, ku: x509.KeyUsageDigitalSignature})
	encOnly := p.leaf(certSpec{cn: "enc", emails: []string{"bob@b.example"}, ku: x509.KeyUsageKeyEncipherment})
	dual := p.leaf(certSpec{cn: "dual", emails: []string{"bob@b.example"}})

	check(t, v, p.req(signOnly, "bob@b.example", Signing), true, "")
	check(t, v, p.req(signOnly, "bob@b.example", Encryption), false, "lacks keyEncipherment")
	check(t, v, p.req(encOnly, "bob@b.example", Encryption), true, "")
	check(t, v, p.req(encOnly, "bob@b.example", Signing), false, "lacks digitalSignature")
	check(t, v, p.req(dual, "bob@b.example", Signing), true, "")
	check(t, v, p.req(dual, "bob@b.example", Encryption), true, "")

	// No KeyUsage extension: refused by default, accepted when allowed.
	noKU := p.leaf(certSpec{cn: "noku", emails: []string{"bob@b.example"}, noKU: true})
	check(t, v, p.req(noKU, "bob@b.example", Signing), false, "has no key usage")
	lax := p.validator(Options{AllowMissingKeyUsage: true})
	check(t, lax, p.req(noKU, "bob@b.example", Encryption), true, "")

	// EKU must allow emailProtection when present.
	tls := p.leaf(certSpec{cn: "tls", emails: []string{"bob@b.example"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	check(t, v, p.req(tls, "bob@b.example", Signing), false, "does not include emailProtection")
	anyEKU := p.leaf(certSpec{cn: "any", emails: []string{"bob@b.example"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	check(t, v, p.req(anyEKU, "bob@b.example", Signing), true, "")
}

func TestAlgorithms(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})

	small := p.leaf(certSpec{cn: "small", emails: []string{"bob@b.example"}, key: rsaKey(t, -1)})
	check(t, v, p.req(small, "bob@b.example", Encryption), false, "1024-bit RSA key")

	sha1 := p.leaf(certSpec{cn: "sha1", emails: []string{"bob@b.example"}, sigAlg: x509.SHA1WithRSA})
	check(t, v, p.req(sha1, "bob@b.example", Signing), false, "signed with SHA1-RSA")

	// An intermediate signed with SHA-1 breaks the path.
	sha1Inter := issue(t, p.root, certSpec{cn: "SHA1 Intermediate", ca: true, key: rsaKey(t, kInter), sigAlg: x509.SHA1WithRSA})
	leaf := issue(t, sha1Inter, certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	req := p.req(leaf, "bob@b.example", Signing)
	req.Intermediates = []*x509.Certificate{sha1Inter.cert}
	check(t, v, req, false, `"SHA1 Intermediate" is signed with SHA1-RSA`)
	// And as an anchor that is not self-signed, it is refused too.
	req.Anchors = []*x509.Certificate{sha1Inter.cert}
	check(t, v, req, false, `"SHA1 Intermediate" is signed with SHA1-RSA`)

	// A self-signed anchor's own SHA-1 signature does not matter.
	oldRoot := issue(t, nil, certSpec{cn: "Old Root", ca: true, key: rsaKey(t, kOther), sigAlg: x509.SHA1WithRSA})
	inter := issue(t, oldRoot, certSpec{cn: "Inter", ca: true, key: rsaKey(t, kInter)})
	leaf = issue(t, inter, certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	check(t, v, Request{Cert: leaf.cert, Intermediates: []*x509.Certificate{inter.cert}, Anchors: []*x509.Certificate{oldRoot.cert},
		Address: "bob@b.example", Purpose: Signing}, true, "")

	// A 1024-bit anchor is refused.
	weakRoot := issue(t, nil, certSpec{cn: "Weak Root", ca: true, key: rsaKey(t, -1)})
	leaf = issue(t, weakRoot, certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	check(t, v, Request{Cert: leaf.cert, Anchors: []*x509.Certificate{weakRoot.cert}, Address: "bob@b.example", Purpose: Signing},
		false, `"Weak Root" has a 1024-bit RSA key`)
}

func TestECDSA(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	ec := p.leaf(certSpec{cn: "ec", emails: []string{"bob@b.example"}, key: ecKey(t, elliptic.P256()), ku: x509.KeyUsageDigitalSignature})
	check(t, v, p.req(ec, "bob@b.example", Signing), true, "")
	ec384 := p.leaf(certSpec{cn: "ec384", emails: []string{"bob@b.example"}, key: ecKey(t, elliptic.P384()), ku: x509.KeyUsageDigitalSignature})
	check(t, v, p.req(ec384, "bob@b.example", Signing), true, "")
	ecDual := p.leaf(certSpec{cn: "ecdual", emails: []string{"bob@b.example"}, key: ecKey(t, elliptic.P256()),
		ku: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment})
	check(t, v, p.req(ecDual, "bob@b.example", Encryption), false, "cannot be used for encryption")
	ec521 := p.leaf(certSpec{cn: "ec521", emails: []string{"bob@b.example"}, key: ecKey(t, elliptic.P521()), ku: x509.KeyUsageDigitalSignature})
	check(t, v, p.req(ec521, "bob@b.example", Signing), false, "P-521")
}

func TestAnchors(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}})

	// An intermediate as the anchor (TV-02).
	req := p.req(leaf, "bob@b.example", Signing)
	req.Intermediates = nil
	req.Anchors = []*x509.Certificate{p.inter.cert}
	vd := check(t, v, req, true, `issued by anchor "Test Intermediate CA"`)
	if len(vd.Chain) != 2 || vd.Anchor != p.inter.cert {
		t.Errorf("chain %d, anchor %s", len(vd.Chain), vd.Anchor.Subject)
	}

	// Another root: no path.
	other := issue(t, nil, certSpec{cn: "Other Root", ca: true, key: rsaKey(t, kOther)})
	req = p.req(leaf, "bob@b.example", Signing)
	req.Anchors = []*x509.Certificate{other.cert}
	check(t, v, req, false, "no path to a trust anchor")

	// The intermediate missing, without AIA.
	req = p.req(leaf, "bob@b.example", Signing)
	req.Intermediates = nil
	check(t, v, req, false, `no anchor or intermediate issued "bob"`)

	// No anchors at all.
	req.Anchors = nil
	check(t, v, req, false, "no trust anchors")

	// No certificate.
	check(t, v, Request{Address: "bob@b.example", Purpose: Signing, Anchors: []*x509.Certificate{p.root.cert}}, false, "no certificate")
}

func TestAIA(t *testing.T) {
	p := newPKI(t)
	v := p.validator(Options{})
	p.serve("/inter.cer", p.inter.cert.Raw)
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, aia: []string{p.url("/inter.cer")}})
	req := p.req(leaf, "bob@b.example", Encryption)
	req.Intermediates = nil
	vd := check(t, v, req, true, "via 1 intermediate")
	if !vd.Chain[1].Equal(p.inter.cert) {
		t.Errorf("chain[1] = %s", vd.Chain[1].Subject)
	}
	check(t, v, req, true, "")
	if n := p.hitCount("/inter.cer"); n != 1 {
		t.Errorf("AIA fetched %d times, want 1 (cached)", n)
	}

	// PEM and certs-only PKCS#7 are accepted too.
	p7, err := pkcs7.DegenerateCertificate(p.inter.cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"/inter.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.inter.cert.Raw}),
		"/inter.p7c": p7,
	} {
		p.serve(name, data)
		leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, aia: []string{p.url(name)}})
		req := p.req(leaf, "bob@b.example", Encryption)
		req.Intermediates = nil
		check(t, v, req, true, "")
	}

	// Unreachable AIA.
	bad := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, aia: []string{p.url("/missing.cer")}})
	req = p.req(bad, "bob@b.example", Encryption)
	req.Intermediates = nil
	check(t, v, req, false, "fetching it from the AIA caIssuers URL failed: fetch "+p.url("/missing.cer")+": HTTP status 404 Not Found")

	// AIA serving garbage.
	p.serve("/garbage.cer", []byte("not a certificate"))
	bad = p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, aia: []string{p.url("/garbage.cer")}})
	req = p.req(bad, "bob@b.example", Encryption)
	req.Intermediates = nil
	check(t, v, req, false, "parse certificates from")
}
