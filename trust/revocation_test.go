package trust

import (
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// unreachable is a URL nothing listens on.
const unreachable = "http://127.0.0.1:1/nothing"

func TestCRLRevoked(t *testing.T) {
	p := newPKI(t)
	crl := p.url("/inter.crl")
	revoked := p.leaf(certSpec{cn: "revoked", emails: []string{"bob@b.example"}, crl: []string{crl}})
	good := p.leaf(certSpec{cn: "good", emails: []string{"bob@b.example"}, crl: []string{crl}})
	p.serve("/inter.crl", makeCRL(t, p.inter, nil, revoked.cert))

	v := p.validator(Options{})
	check(t, v, p.req(revoked, "bob@b.example", Signing), false, `certificate "revoked" revoked by CRL `+crl+" on ")
	check(t, v, p.req(revoked, "bob@b.example", Signing), false, "(keyCompromise)")
	check(t, v, p.req(good, "bob@b.example", Signing), true, `"good" not revoked (CRL `+crl+")")

	// Cached until nextUpdate: three validations, one fetch.
	if n := p.hitCount("/inter.crl"); n != 1 {
		t.Errorf("CRL fetched %d times, want 1", n)
	}
}

func TestCRLIntermediateRevoked(t *testing.T) {
	p := newPKI(t)
	inter := issue(t, p.root, certSpec{cn: "Revoked Intermediate", ca: true, key: rsaKey(t, kInter), crl: []string{p.url("/root.crl")}})
	p.serve("/root.crl", makeCRL(t, p.root, nil, inter.cert))
	leaf := issue(t, inter, certSpec{cn: "bob", emails: []string{"bob@b.example"}})
	req := p.req(leaf, "bob@b.example", Encryption)
	req.Intermediates = []*x509.Certificate{inter.cert}
	check(t, p.validator(Options{}), req, false, `certificate "Revoked Intermediate" revoked by CRL`)

	// The anchor itself is not checked: with the intermediate as anchor
	// the chain is trusted.
	req.Anchors = []*x509.Certificate{inter.cert}
	check(t, p.validator(Options{}), req, true, "")
}

func TestCRLUnavailable(t *testing.T) {
	p := newPKI(t)
	p.serve("/garbage.crl", []byte("garbage"))
	stale := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-24 * time.Hour)}
	staleDER, err := x509.CreateRevocationList(rand.Reader, stale, p.inter.cert, p.inter.key)
	if err != nil {
		t.Fatal(err)
	}
	p.serve("/stale.crl", staleDER)
	p.serve("/forged.crl", makeCRL(t, p.inter, rsaKey(t, kOther)))
	p.serve("/root.crl", makeCRL(t, p.root, nil)) // a good CRL of another issuer

	for _, tc := range []struct {
		url, problem string
	}{
		{unreachable, "connect"},
		{p.url("/missing.crl"), "HTTP status 404"},
		{p.url("/garbage.crl"), "parse"},
		{p.url("/stale.crl"), "out of date since"},
		{p.url("/forged.crl"), "signature does not verify"},
		{p.url("/root.crl"), "not by the certificate's issuer"},
		{"ldap://ldap.example/cn=crl", "only http and https"},
	} {
		t.Run(tc.problem, func(t *testing.T) {
			leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{tc.url}})
			req := p.req(leaf, "bob@b.example", Signing)
			vd := check(t, p.validator(Options{}), req, false, `revocation status of "bob" unavailable: CRL `+tc.url)
			if !strings.Contains(vd.Reason, tc.problem) || !strings.Contains(vd.Reason, "revocation policy: refuse") {
				t.Errorf("reason %q lacks %q or the policy", vd.Reason, tc.problem)
			}
			check(t, p.validator(Options{Revocation: AllowUnavailable}), req, true, "accepted by revocation policy")
		})
	}
}

func TestCRLSecondDistributionPoint(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{unreachable, p.url("/inter.crl")}})
	p.serve("/inter.crl", makeCRL(t, p.inter, nil, leaf.cert))
	check(t, p.validator(Options{}), p.req(leaf, "bob@b.example", Signing), false, "revoked by CRL "+p.url("/inter.crl"))
}

func TestFailureCached(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{p.url("/missing.crl")}})
	v := p.validator(Options{})
	check(t, v, p.req(leaf, "bob@b.example", Signing), false, "404")
	check(t, v, p.req(leaf, "bob@b.example", Signing), false, "404")
	if n := p.hitCount("/missing.crl"); n != 1 {
		t.Errorf("failing CRL fetched %d times, want 1", n)
	}
	// Once the failure has aged, the CRL is fetched again.
	later := time.Now().Add(2 * failureTTL)
	v.now = func() time.Time { return later }
	p.serve("/missing.crl", makeCRL(t, p.inter, nil))
	check(t, v, p.req(leaf, "bob@b.example", Signing), true, "not revoked")
}

func ocspStatus(s int) func(*big.Int) int {
	return func(*big.Int) int { return s }
}

func TestOCSP(t *testing.T) {
	p := newPKI(t)
	ocspURL := p.url("/ocsp")
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, ocsp: []string{ocspURL}})
	req := p.req(leaf, "bob@b.example", Signing)

	p.handle("/ocsp", ocspResponder(t, p.inter, ocspStatus(ocsp.Good)))
	v := p.validator(Options{})
	check(t, v, req, true, `"bob" not revoked (OCSP `+ocspURL+")")
	check(t, v, req, true, "")
	if n := p.hitCount("/ocsp"); n != 1 {
		t.Errorf("OCSP asked %d times, want 1 (cached)", n)
	}

	p.handle("/ocsp", ocspResponder(t, p.inter, ocspStatus(ocsp.Revoked)))
	check(t, p.validator(Options{}), req, false, `certificate "bob" revoked by OCSP `+ocspURL+" on ")

	p.handle("/ocsp", ocspResponder(t, p.inter, ocspStatus(ocsp.Unknown)))
	check(t, p.validator(Options{}), req, false, "does not know the certificate")

	p.handle("/ocsp", func(w http.ResponseWriter, r *http.Request) { w.Write(ocsp.TryLaterErrorResponse) })
	check(t, p.validator(Options{}), req, false, "unavailable: OCSP "+ocspURL)

	p.handle("/ocsp", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	check(t, p.validator(Options{}), req, false, "HTTP status 500")
	check(t, p.validator(Options{Revocation: AllowUnavailable}), req, true, "accepted by revocation policy")

	// Signed by another key.
	other := issue(t, nil, certSpec{cn: "Test Intermediate CA", ca: true, key: rsaKey(t, kOther)})
	p.handle("/ocsp", ocspResponder(t, other, ocspStatus(ocsp.Good)))
	check(t, p.validator(Options{}), req, false, "response signature does not verify")

	unreach := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, ocsp: []string{unreachable}})
	check(t, p.validator(Options{}), p.req(unreach, "bob@b.example", Signing), false, "unavailable: OCSP "+unreachable)
	check(t, p.validator(Options{Revocation: AllowUnavailable}), p.req(unreach, "bob@b.example", Signing), true, "accepted")
}

func TestOCSPDelegatedResponder(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, ocsp: []string{p.url("/ocsp")}})
	req := p.req(leaf, "bob@b.example", Signing)
	for _, tc := range []struct {
		eku     []x509.ExtKeyUsage
		trusted bool
	}{
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}, true},
		{[]x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, false},
	} {
		responder := issue(t, p.inter, certSpec{cn: "OCSP Responder", key: rsaKey(t, kOther), ku: x509.KeyUsageDigitalSignature, eku: tc.eku})
		p.handle("/ocsp", func(w http.ResponseWriter, r *http.Request) {
			now := time.Now()
			der, err := ocsp.CreateResponse(p.inter.cert, responder.cert, ocsp.Response{
				Status: ocsp.Good, SerialNumber: leaf.cert.SerialNumber, ThisUpdate: now.Add(-time.Minute),
				NextUpdate: now.Add(time.Hour), Certificate: responder.cert,
			}, responder.key)
			if err != nil {
				t.Error(err)
			}
			w.Write(der)
		})
		want := ""
		if !tc.trusted {
			want = "lacks the OCSPSigning extended key usage"
		}
		check(t, p.validator(Options{}), req, tc.trusted, want)
	}
}

func TestCRLAndOCSP(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{p.url("/inter.crl")}, ocsp: []string{p.url("/ocsp")}})
	req := p.req(leaf, "bob@b.example", Signing)
	p.serve("/inter.crl", makeCRL(t, p.inter, nil))

	// The CRL does not list it yet, OCSP says revoked: revoked.
	p.handle("/ocsp", ocspResponder(t, p.inter, ocspStatus(ocsp.Revoked)))
	check(t, p.validator(Options{}), req, false, "revoked by OCSP")

	// The CRL answers, OCSP is down: one source is enough.
	p.handle("/ocsp", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	check(t, p.validator(Options{}), req, true, "not revoked (CRL ")

	// Both answer.
	p.handle("/ocsp", ocspResponder(t, p.inter, ocspStatus(ocsp.Good)))
	check(t, p.validator(Options{}), req, true, "not revoked (CRL "+p.url("/inter.crl")+", OCSP "+p.url("/ocsp")+")")
}

// TestConcurrentFetch checks that concurrent validations needing the same
// CRL fetch it once.
func TestConcurrentFetch(t *testing.T) {
	p := newPKI(t)
	leaf := p.leaf(certSpec{cn: "bob", emails: []string{"bob@b.example"}, crl: []string{p.url("/slow.crl")}})
	crl := makeCRL(t, p.inter, nil)
	entered, release := make(chan struct{}, 10), make(chan struct{})
	p.handle("/slow.crl", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Write(crl)
	})
	v := p.validator(Options{})
	results := make(chan Verdict)
	for range 8 {
		go func() { results <- v.Validate(t.Context(), p.req(leaf, "bob@b.example", Signing)) }()
	}
	<-entered
	close(release)
	for range 8 {
		if vd := <-results; !vd.Trusted {
			t.Errorf("not trusted: %s", vd.Reason)
		}
	}
	if n := p.hitCount("/slow.crl"); n != 1 {
		t.Errorf("CRL fetched %d times, want 1", n)
	}
}
