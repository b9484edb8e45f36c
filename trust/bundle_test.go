package trust

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// makeP7B returns a certs-only PKCS#7 (DER) of certs.
func makeP7B(t testing.TB, certs ...*x509.Certificate) []byte {
	t.Helper()
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Raw...)
	}
	der, err := pkcs7.DegenerateCertificate(raw)
	if err != nil {
		t.Fatalf("degenerate PKCS#7: %v", err)
	}
	return der
}

func pemP7B(der []byte, typ string) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// signBundle wraps content in a CMS SignedData signed by signer.
func signBundle(t testing.TB, content []byte, signer *testCert, digest asn1.ObjectIdentifier) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(digest)
	if err := sd.AddSigner(signer.cert, signer.key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatalf("add signer: %v", err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatalf("finish signed data: %v", err)
	}
	return der
}

// bundlePKI is a set of anchors and a bundle signer.
type bundlePKI struct {
	a, b   *testCert // anchors
	signer *testCert
	other  *testCert // another would-be signer
}

func newBundlePKI(t testing.TB) *bundlePKI {
	t.Helper()
	return &bundlePKI{
		a:      issue(t, nil, certSpec{cn: "Anchor A", ca: true, key: rsaKey(t, kRoot)}),
		b:      issue(t, nil, certSpec{cn: "Anchor B", ca: true, key: rsaKey(t, kInter)}),
		signer: issue(t, nil, certSpec{cn: "Bundle Signer", key: rsaKey(t, kSigner), ku: x509.KeyUsageDigitalSignature}),
		other:  issue(t, nil, certSpec{cn: "Someone Else", key: rsaKey(t, kOther), ku: x509.KeyUsageDigitalSignature}),
	}
}

func wantAnchors(t *testing.T, got []*x509.Certificate, want ...*x509.Certificate) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d anchors, want %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("anchor %d is %s, want %s", i, got[i].Subject, want[i].Subject)
		}
	}
}

func TestParseBundle(t *testing.T) {
	bp := newBundlePKI(t)
	der := makeP7B(t, bp.a.cert, bp.b.cert)

	for name, data := range map[string][]byte{
		"DER":           der,
		"PEM PKCS7":     pemP7B(der, "PKCS7"),
		"PEM CMS":       pemP7B(der, "CMS"),
		"PEM with text": append([]byte("Anchors of the test community\n"), pemP7B(der, "PKCS7")...),
		"duplicates":    makeP7B(t, bp.a.cert, bp.b.cert, bp.a.cert),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseBundle(data, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantAnchors(t, got, bp.a.cert, bp.b.cert)
		})
	}
}

func TestParseSignedBundle(t *testing.T) {
	bp := newBundlePKI(t)
	inner := makeP7B(t, bp.a.cert, bp.b.cert)
	signed := signBundle(t, inner, bp.signer, pkcs7.OIDDigestAlgorithmSHA256)

	got, err := ParseBundle(signed, bp.signer.cert)
	if err != nil {
		t.Fatalf("signed bundle with the right signer: %v", err)
	}
	wantAnchors(t, got, bp.a.cert, bp.b.cert)

	got, err = ParseBundle(pemP7B(signed, "CMS"), bp.signer.cert)
	if err != nil {
		t.Fatalf("PEM signed bundle: %v", err)
	}
	wantAnchors(t, got, bp.a.cert, bp.b.cert)

	// Inner .p7b in PEM.
	got, err = ParseBundle(signBundle(t, pemP7B(inner, "PKCS7"), bp.signer, pkcs7.OIDDigestAlgorithmSHA256), bp.signer.cert)
	if err != nil {
		t.Fatalf("signed PEM content: %v", err)
	}
	wantAnchors(t, got, bp.a.cert, bp.b.cert)

	// Same issuer and serial as the pinned signer, other key.
	impostor := issue(t, nil, certSpec{cn: "Bundle Signer", key: rsaKey(t, kOther), ku: x509.KeyUsageDigitalSignature, serial: bp.signer.cert.SerialNumber})

	for _, tc := range []struct {
		name   string
		data   []byte
		signer *x509.Certificate
		want   string
	}{
		{"wrong signer", signed, bp.other.cert, "signed by someone other than the configured signer"},
		{"signed by other", signBundle(t, inner, bp.other, pkcs7.OIDDigestAlgorithmSHA256), bp.signer.cert, "someone other"},
		{"impostor", signBundle(t, inner, impostor, pkcs7.OIDDigestAlgorithmSHA256), bp.signer.cert, "does not verify with the configured signer"},
		{"nil signer", signed, nil, "no signer certificate is configured"},
		{"unsigned but signer pinned", inner, bp.signer.cert, "not signed, but a signer"},
		{"SHA-1", signBundle(t, inner, bp.signer, pkcs7.OIDDigestAlgorithmSHA1), bp.signer.cert, "not allowed"},
		{"signed garbage", signBundle(t, []byte("garbage"), bp.signer, pkcs7.OIDDigestAlgorithmSHA256), bp.signer.cert, "content of signed bundle"},
		{"signed twice", signBundle(t, signed, bp.signer, pkcs7.OIDDigestAlgorithmSHA256), bp.signer.cert, "signed again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBundle(tc.data, tc.signer)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}

	// A tampered signature.
	bad := bytes.Clone(signed)
	bad[len(bad)-10] ^= 0xff
	if _, err := ParseBundle(bad, bp.signer.cert); err == nil {
		t.Error("tampered signed bundle accepted")
	}
}

func TestParseBundleGarbage(t *testing.T) {
	bp := newBundlePKI(t)
	empty, err := pkcs7.DegenerateCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":         nil,
		"spaces":        []byte("  \n"),
		"garbage":       []byte("this is not a bundle"),
		"certificate":   bp.a.cert.Raw,
		"PEM cert only": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bp.a.cert.Raw}),
		"PEM bad body":  []byte("-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n"),
		"no certs":      empty,
		"truncated":     makeP7B(t, bp.a.cert)[:200],
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := ParseBundle(data, nil); err == nil {
				t.Fatalf("accepted, %d anchors", len(got))
			}
		})
	}
}

// TestParseBundleOpenSSL reads bundles made by openssl crl2pkcs7 and signed
// by openssl cms.
func TestParseBundleOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	bp := newBundlePKI(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certPEM := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	a, b := write("a.pem", certPEM(bp.a.cert)), write("b.pem", certPEM(bp.b.cert))
	signerPEM := write("signer.pem", certPEM(bp.signer.cert))
	keyDER, err := x509.MarshalPKCS8PrivateKey(bp.signer.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := write("signer.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))

	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	derPath, pemPath, signedPath := filepath.Join(dir, "b.p7b"), filepath.Join(dir, "b.pem.p7b"), filepath.Join(dir, "b.p7m")
	run("crl2pkcs7", "-nocrl", "-certfile", a, "-certfile", b, "-outform", "DER", "-out", derPath)
	run("crl2pkcs7", "-nocrl", "-certfile", a, "-certfile", b, "-out", pemPath)
	run("cms", "-sign", "-nodetach", "-binary", "-md", "sha256", "-in", derPath, "-signer", signerPEM, "-inkey", keyPEM,
		"-outform", "DER", "-out", signedPath)

	for _, tc := range []struct {
		path   string
		signer *x509.Certificate
	}{{derPath, nil}, {pemPath, nil}, {signedPath, bp.signer.cert}} {
		data, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBundle(data, tc.signer)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(tc.path), err)
		}
		wantAnchors(t, got, bp.a.cert, bp.b.cert)
	}
	data, _ := os.ReadFile(signedPath)
	if _, err := ParseBundle(data, bp.other.cert); err == nil {
		t.Error("openssl-signed bundle accepted with the wrong signer")
	}
}

// bundleServer serves a bundle that tests can change or break.
type bundleServer struct {
	mu     sync.Mutex
	data   []byte
	status int
	hits   int
	srv    *httptest.Server
}

func newBundleServer(t testing.TB, data []byte) *bundleServer {
	bs := &bundleServer{data: data, status: http.StatusOK}
	bs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bs.mu.Lock()
		defer bs.mu.Unlock()
		bs.hits++
		if bs.status != http.StatusOK {
			http.Error(w, "broken", bs.status)
			return
		}
		w.Write(bs.data)
	}))
	t.Cleanup(bs.srv.Close)
	return bs
}

func (bs *bundleServer) set(data []byte, status int) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	bs.data, bs.status = data, status
}

func (bs *bundleServer) hitCount() int {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.hits
}

func checksum(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestFetchBundle(t *testing.T) {
	ctx := context.Background()
	bp := newBundlePKI(t)
	v1, v2 := makeP7B(t, bp.a.cert), makeP7B(t, bp.a.cert, bp.b.cert)
	bs := newBundleServer(t, v1)
	src := BundleSource{ID: 1, Domain: "b.example", Location: bs.srv.URL + "/bundle.p7b"}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	st, changed, err := FetchBundle(ctx, bs.srv.Client(), src, BundleState{}, t0)
	if err != nil || !changed {
		t.Fatalf("first fetch: changed %v, err %v", changed, err)
	}
	if st.Checksum != checksum(v1) || !st.LastAttempt.Equal(t0) || !st.LastSuccess.Equal(t0) || st.LastError != "" {
		t.Errorf("state after first fetch: %+v", st)
	}
	wantAnchors(t, st.Anchors, bp.a.cert)

	// Unchanged.
	t1 := t0.Add(time.Hour)
	st2, changed, err := FetchBundle(ctx, bs.srv.Client(), src, st, t1)
	if err != nil || changed {
		t.Fatalf("unchanged fetch: changed %v, err %v", changed, err)
	}
	if st2.Checksum != st.Checksum || &st2.Anchors[0] != &st.Anchors[0] || !st2.LastSuccess.Equal(t1) {
		t.Errorf("state after unchanged fetch: %+v", st2)
	}

	// Changed.
	bs.set(v2, http.StatusOK)
	t2 := t1.Add(time.Hour)
	st3, changed, err := FetchBundle(ctx, bs.srv.Client(), src, st2, t2)
	if err != nil || !changed || st3.Checksum != checksum(v2) {
		t.Fatalf("changed fetch: changed %v, err %v, state %+v", changed, err, st3)
	}
	wantAnchors(t, st3.Anchors, bp.a.cert, bp.b.cert)

	// Failures keep the last good set.
	for name, set := range map[string]func(){
		"500":     func() { bs.set(v2, http.StatusInternalServerError) },
		"garbage": func() { bs.set([]byte("garbage"), http.StatusOK) },
		"empty":   func() { bs.set(nil, http.StatusOK) },
	} {
		t.Run(name, func(t *testing.T) {
			set()
			t3 := t2.Add(time.Hour)
			st4, changed, err := FetchBundle(ctx, bs.srv.Client(), src, st3, t3)
			if err == nil || changed {
				t.Fatalf("failing fetch: changed %v, err %v", changed, err)
			}
			if st4.LastError == "" || st4.LastError != err.Error() || !st4.LastAttempt.Equal(t3) || !st4.LastSuccess.Equal(t2) {
				t.Errorf("state after failure: %+v", st4)
			}
			if st4.Checksum != st3.Checksum {
				t.Errorf("checksum changed on failure")
			}
			wantAnchors(t, st4.Anchors, bp.a.cert, bp.b.cert)
			t.Logf("error: %v", err)
		})
	}

	// A nil client works (a default one).
	bs.set(v1, http.StatusOK)
	if _, changed, err := FetchBundle(ctx, nil, src, st3, t2); err != nil || !changed {
		t.Errorf("nil client: changed %v, err %v", changed, err)
	}
}

func TestFetchBundleFile(t *testing.T) {
	ctx := context.Background()
	bp := newBundlePKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.p7b")
	data := pemP7B(makeP7B(t, bp.a.cert), "PKCS7")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, loc := range []string{path, "file://" + path} {
		st, changed, err := FetchBundle(ctx, nil, BundleSource{ID: 1, Location: loc}, BundleState{}, now)
		if err != nil || !changed || st.Checksum != checksum(data) {
			t.Fatalf("%s: changed %v, err %v", loc, changed, err)
		}
		wantAnchors(t, st.Anchors, bp.a.cert)
	}
	for _, loc := range []string{filepath.Join(dir, "missing.p7b"), "ftp://example.org/bundle.p7b"} {
		st, _, err := FetchBundle(ctx, nil, BundleSource{ID: 1, Location: loc}, BundleState{}, now)
		if err == nil || st.LastError == "" {
			t.Errorf("%s: no error", loc)
		}
	}
}

func TestFetchBundleSigned(t *testing.T) {
	bp := newBundlePKI(t)
	signed := signBundle(t, makeP7B(t, bp.a.cert), bp.signer, pkcs7.OIDDigestAlgorithmSHA256)
	bs := newBundleServer(t, signed)
	src := BundleSource{ID: 1, Location: bs.srv.URL, Signer: bp.signer.cert}
	st, _, err := FetchBundle(context.Background(), bs.srv.Client(), src, BundleState{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, st.Anchors, bp.a.cert)
	src.Signer = bp.other.cert
	if _, _, err := FetchBundle(context.Background(), bs.srv.Client(), src, BundleState{}, time.Now()); err == nil {
		t.Error("signed bundle accepted with the wrong signer")
	}
}

// TestNewBundleSource: a stored bundle's pinned signer (DER) becomes the
// certificate a signed bundle must be signed with; none for an unsigned
// bundle; a stored signer that does not parse is an error naming the bundle.
func TestNewBundleSource(t *testing.T) {
	signer := issue(t, nil, certSpec{cn: "Bundle Signer", key: rsaKey(t, kSigner), ku: x509.KeyUsageDigitalSignature})
	src, err := NewBundleSource(7, "a.example", "https://bundles.example/a.p7b", signer.cert.Raw, time.Hour)
	if err != nil || src.Signer == nil || !src.Signer.Equal(signer.cert) || src.ID != 7 || src.Refresh != time.Hour {
		t.Fatalf("signed: %+v, %v", src, err)
	}
	if src, err := NewBundleSource(8, "a.example", "/etc/bundle.p7b", nil, 0); err != nil || src.Signer != nil {
		t.Fatalf("unsigned: %+v, %v", src, err)
	}
	if _, err := NewBundleSource(9, "a.example", "/etc/bundle.p7b", []byte("not DER"), 0); err == nil || !strings.Contains(err.Error(), "bundle 9 signer") {
		t.Fatalf("garbage signer: %v", err)
	}
}
