package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// party is a test certificate with its key and PEM files.
type party struct {
	name string
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

func (p *party) keyPair() KeyPair { return KeyPair{Cert: p.cert, Key: p.key} }

// fixture holds the keys and certificates shared by the tests. RSA key
// generation is slow, so they are made once per test binary.
type fixture struct {
	ca     *party
	r2048  *party // first recipient
	r3072  *party // second recipient
	other  *party // a certificate nobody encrypts to
	weak   *party // 1024 bits
	noSKI  *party // a certificate without the subject key identifier extension
	ecCert *x509.Certificate
	ecKey  *ecdsa.PrivateKey
}

var testFixture = sync.OnceValues(makeFixture)

func getFixture(t testing.TB) *fixture {
	t.Helper()
	f, err := testFixture()
	if err != nil {
		t.Fatalf("making test certificates: %v", err)
	}
	return f
}

func makeFixture() (*fixture, error) {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hisp test CA", Organization: []string{"hisp"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	ca := &party{name: "ca", cert: caCert, key: caKey}

	f := &fixture{ca: ca}
	serial := int64(100)
	leaf := func(name string, bits int, withSKI bool) (*party, error) {
		key, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, err
		}
		serial++
		tmpl := &x509.Certificate{
			// A large serial, to exercise multi-byte INTEGER encodings.
			SerialNumber:   new(big.Int).Lsh(big.NewInt(serial), 100),
			Subject:        pkix.Name{CommonName: name, Organization: []string{"hisp"}},
			EmailAddresses: []string{name + "@direct.example"},
			NotBefore:      time.Now().Add(-time.Hour),
			NotAfter:       time.Now().Add(24 * time.Hour),
			KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
			ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		}
		// The RFC 5280 section 4.2.1.2 method 1 identifier: SHA-1 of the
		// subjectPublicKey bits, which for RSA are the PKCS #1 public key.
		if withSKI {
			pubDER := x509.MarshalPKCS1PublicKey(&key.PublicKey)
			sum := sha1.Sum(pubDER)
			tmpl.SubjectKeyId = sum[:]
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return &party{name: name, cert: cert, key: key}, nil
	}
	if f.r2048, err = leaf("alice", 2048, true); err != nil {
		return nil, err
	}
	if f.r3072, err = leaf("bob", 3072, true); err != nil {
		return nil, err
	}
	if f.other, err = leaf("mallory", 2048, true); err != nil {
		return nil, err
	}
	if f.weak, err = leaf("weak", 1024, true); err != nil {
		return nil, err
	}
	if f.noSKI, err = leaf("noski", 2048, false); err != nil {
		return nil, err
	}

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ecTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(99),
		Subject:      pkix.Name{CommonName: "ec"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		SubjectKeyId: []byte{1, 2, 3, 4},
		KeyUsage:     x509.KeyUsageKeyAgreement,
	}
	ecDER, err := x509.CreateCertificate(rand.Reader, ecTmpl, caCert, &ecKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if f.ecCert, err = x509.ParseCertificate(ecDER); err != nil {
		return nil, err
	}
	f.ecKey = ecKey
	return f, nil
}

// writeParty writes the certificate and key of p as PEM files in dir and
// returns their paths.
func writeParty(t testing.TB, dir string, p *party) (certPath, keyPath string) {
	t.Helper()
	certPath = filepath.Join(dir, p.name+".crt.pem")
	keyPath = filepath.Join(dir, p.name+".key.pem")
	if _, err := os.Stat(certPath); err == nil {
		return certPath, keyPath
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// opensslPath returns the openssl binary. The interoperability tests are
// the point of this package, so a missing binary fails the test.
func opensslPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required for the interoperability tests: %v", err)
	}
	return path
}

// openssl runs the openssl command with args and returns its standard output.
func openssl(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := runOpenSSL(t, stdin, args...)
	if err != nil {
		t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func runOpenSSL(t testing.TB, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(opensslPath(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &opensslError{err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

type opensslError struct {
	err    error
	stderr string
}

func (e *opensslError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// testContent returns n bytes of message-like content.
func testContent(n int) []byte {
	line := []byte("Content-Type: text/plain\r\n\r\nPatient summary follows. 0123456789 abcdefghijklmnopqrstuvwxyz\r\n")
	b := make([]byte, 0, n)
	for len(b) < n {
		b = append(b, line...)
	}
	return b[:n]
}

// decrypterOnly hides the concrete key type, as an HSM-backed key would.
type decrypterOnly struct{ crypto.Decrypter }
