package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// Test PKI: keys are generated once per test binary and reused, since RSA
// key generation is slow; certificates, CRLs and OCSP responses are made
// per test.

var keyCache struct {
	sync.Mutex
	rsa map[int]*rsa.PrivateKey
	ec  map[elliptic.Curve]*ecdsa.PrivateKey
}

// rsaKey returns RSA key number i (2048 bits), or a 1024-bit key for i < 0.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	keyCache.Lock()
	defer keyCache.Unlock()
	if keyCache.rsa == nil {
		keyCache.rsa = map[int]*rsa.PrivateKey{}
	}
	if k := keyCache.rsa[i]; k != nil {
		return k
	}
	bits := 2048
	if i < 0 {
		bits = 1024
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	keyCache.rsa[i] = k
	return k
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	keyCache.Lock()
	defer keyCache.Unlock()
	if keyCache.ec == nil {
		keyCache.ec = map[elliptic.Curve]*ecdsa.PrivateKey{}
	}
	if k := keyCache.ec[c]; k != nil {
		return k
	}
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatalf("generate ECDSA key: %v", err)
	}
	keyCache.ec[c] = k
	return k
}

// Key numbers used by the tests.
const (
	kRoot = iota
	kInter
	kLeaf
	kOther
	kSigner
)

type certSpec struct {
	cn           string
	emails, dns  []string
	subjectEmail string // PKCS#9 emailAddress in the subject DN
	ca           bool
	ku           x509.KeyUsage // zero: CA certSign|cRLSign, leaf digitalSignature|keyEncipherment
	noKU         bool
	eku          []x509.ExtKeyUsage // nil: emailProtection for a leaf
	notBefore    time.Time          // zero: an hour ago
	notAfter     time.Time          // zero: in a year
	crl, ocsp    []string
	aia          []string
	sigAlg       x509.SignatureAlgorithm
	key          crypto.Signer // subject key; nil: the leaf key
	serial       *big.Int      // nil: the next of a counter
}

type testCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serialCounter struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serialCounter.Lock()
	defer serialCounter.Unlock()
	serialCounter.n++
	return big.NewInt(1000 + serialCounter.n)
}

// issue makes a certificate from s, signed by parent, or self-signed when
// parent is nil.
func issue(t testing.TB, parent *testCert, s certSpec) *testCert {
	t.Helper()
	now := time.Now()
	key := s.key
	if key == nil {
		key = rsaKey(t, kLeaf)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          s.serial,
		Subject:               pkix.Name{CommonName: s.cn, Organization: []string{"hisp test"}},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		EmailAddresses:        s.emails,
		DNSNames:              s.dns,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
		KeyUsage:              s.ku,
		ExtKeyUsage:           s.eku,
		CRLDistributionPoints: s.crl,
		OCSPServer:            s.ocsp,
		IssuingCertificateURL: s.aia,
		SignatureAlgorithm:    s.sigAlg,
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = nextSerial()
	}
	if s.subjectEmail != "" {
		tmpl.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: s.subjectEmail}}
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(365 * 24 * time.Hour)
	}
	if tmpl.KeyUsage == 0 && !s.noKU {
		if s.ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		}
	}
	if tmpl.ExtKeyUsage == nil && !s.ca {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	}
	parentCert, signer := tmpl, key
	if parent != nil {
		parentCert, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		t.Fatalf("create certificate %q: %v", s.cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate %q: %v", s.cn, err)
	}
	return &testCert{c, key}
}

// testPKI is a root and an intermediate, with an HTTP server for CRLs, AIA
// certificates and OCSP that counts requests per path.
type testPKI struct {
	t     testing.TB
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	funcs map[string]http.HandlerFunc
	hits  map[string]int
	root  *testCert
	inter *testCert
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{t: t, files: map[string][]byte{}, funcs: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	p.root = issue(t, nil, certSpec{cn: "Test Root CA", ca: true, key: rsaKey(t, kRoot)})
	p.inter = issue(t, p.root, certSpec{cn: "Test Intermediate CA", ca: true, key: rsaKey(t, kInter)})
	return p
}

func (p *testPKI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.hits[r.URL.Path]++
	f := p.funcs[r.URL.Path]
	data, ok := p.files[r.URL.Path]
	p.mu.Unlock()
	switch {
	case f != nil:
		f(w, r)
	case ok:
		w.Write(data)
	default:
		http.NotFound(w, r)
	}
}

func (p *testPKI) url(path string) string { return p.srv.URL + path }

func (p *testPKI) serve(path string, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.files[path] = data
}

func (p *testPKI) handle(path string, f http.HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.funcs[path] = f
}

func (p *testPKI) hitCount(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[path]
}

// leaf issues an end-entity certificate from the intermediate.
func (p *testPKI) leaf(s certSpec) *testCert {
	p.t.Helper()
	return issue(p.t, p.inter, s)
}

// crl makes a CRL of issuer revoking the given certificates, signed with
// key (issuer's own key when nil).
func makeCRL(t testing.TB, issuer *testCert, key crypto.Signer, revoked ...*x509.Certificate) []byte {
	t.Helper()
	if key == nil {
		key = issuer.key
	}
	now := time.Now()
	tmpl := &x509.RevocationList{
		Number:     nextSerial(),
		ThisUpdate: now.Add(-time.Hour),
		NextUpdate: now.Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   c.SerialNumber,
			RevocationTime: now.Add(-30 * time.Minute),
			ReasonCode:     1, // keyCompromise
		})
	}
	issuerCert := issuer.cert
	if key != issuer.key {
		// Same name, other key: what a forged CRL looks like.
		forger := issue(t, nil, certSpec{cn: issuer.cert.Subject.CommonName, ca: true, key: key})
		forger.cert.RawSubject = issuer.cert.RawSubject
		issuerCert = forger.cert
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuerCert, key)
	if err != nil {
		t.Fatalf("create CRL: %v", err)
	}
	return der
}

// ocspResponder answers OCSP requests for certificates of issuer with the
// status status returns for a serial number.
func ocspResponder(t testing.TB, issuer *testCert, status func(serial *big.Int) int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			w.Write(ocsp.MalformedRequestErrorResponse)
			return
		}
		now := time.Now()
		tmpl := ocsp.Response{
			Status:       status(req.SerialNumber),
			SerialNumber: req.SerialNumber,
			ThisUpdate:   now.Add(-time.Hour),
			NextUpdate:   now.Add(time.Hour),
		}
		if tmpl.Status == ocsp.Revoked {
			tmpl.RevokedAt = now.Add(-30 * time.Minute)
			tmpl.RevocationReason = ocsp.KeyCompromise
		}
		der, err := ocsp.CreateResponse(issuer.cert, issuer.cert, tmpl, issuer.key)
		if err != nil {
			t.Errorf("create OCSP response: %v", err)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(der)
	}
}

func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (p *testPKI) validator(opts Options) *Validator {
	if opts.HTTPClient == nil {
		opts.HTTPClient = p.srv.Client()
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	return NewValidator(opts)
}
