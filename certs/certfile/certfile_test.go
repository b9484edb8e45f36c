package certfile

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
)

func TestLoadPEMKeyFormats(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	rsaID := testpki.Issue(t, ca, testpki.Options{Email: []string{"a@b.example"}})
	ecID := testpki.Issue(t, ca, testpki.Options{Email: []string{"e@b.example"}, Curve: "P-256"})
	certFile, pkcs8File := rsaID.WriteFiles(t, dir, "rsa")
	pkcs1File := filepath.Join(dir, "rsa1.key")
	write(t, pkcs1File, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaID.Key.(*rsa.PrivateKey))}))
	ecCert, _ := ecID.WriteFiles(t, dir, "ec")
	sec1, err := x509.MarshalECPrivateKey(ecID.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1File := filepath.Join(dir, "ec1.key")
	write(t, sec1File, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))

	for _, c := range []struct{ cert, key string }{{certFile, pkcs8File}, {certFile, pkcs1File}, {ecCert, sec1File}} {
		if _, err := LoadPEM(c.cert, c.key); err != nil {
			t.Errorf("%s + %s: %v", filepath.Base(c.cert), filepath.Base(c.key), err)
		}
	}
	if _, err := LoadPEM(certFile, sec1File); err == nil {
		t.Error("a key of another certificate was accepted")
	}
	if _, err := LoadPEM(certFile, certFile); !errors.Is(err, ErrNoKey) {
		t.Errorf("certificate as key: got %v", err)
	}
}

func TestLoadPKCS12FromOpenSSL(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	id := testpki.Issue(t, ca, testpki.Options{Email: []string{"a@b.example"}})
	certFile, keyFile := id.WriteFiles(t, dir, "id")
	caFile, _ := ca.WriteFiles(t, dir, "ca")
	p12 := filepath.Join(dir, "id.p12")
	pw := filepath.Join(dir, "pw")
	write(t, pw, []byte("s3cret\n"))
	out, err := exec.Command("openssl", "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-certfile", caFile,
		"-out", p12, "-passout", "pass:s3cret").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12: %v: %s", err, out)
	}
	got, err := LoadPKCS12(p12, pw)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(id.Cert) || len(got.Chain) != 1 || !got.Chain[0].Equal(ca.Cert) {
		t.Fatalf("got cert %v chain %d", got.Cert.Subject, len(got.Chain))
	}
	write(t, pw, []byte("wrong\n"))
	if _, err := LoadPKCS12(p12, pw); err == nil {
		t.Error("wrong password accepted")
	}
}

func TestParseCertificatesDER(t *testing.T) {
	id := testpki.NewCA(t, "ca")
	certs, err := ParseCertificates(id.Cert.Raw)
	if err != nil || len(certs) != 1 {
		t.Fatalf("DER: %v", err)
	}
	if _, err := ParseCertificates([]byte("-----BEGIN NOTHING-----\n-----END NOTHING-----\n")); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no certificate: got %v", err)
	}
}

func write(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
