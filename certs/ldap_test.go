package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// certsOnlyPKCS7 builds a degenerate CMS SignedData holding certs, as
// `openssl crl2pkcs7 -nocrl` makes.
func certsOnlyPKCS7(certs ...*x509.Certificate) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(1)
				b.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {})
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1})
				})
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					for _, c := range certs {
						b.AddBytes(c.Raw)
					}
				})
				b.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {})
			})
		})
	})
	return b.BytesOrPanic()
}

// indefiniteLength re-encodes the outer SEQUENCE of a DER value with BER's
// indefinite length, as some tools write PKCS#7 files.
func indefiniteLength(t testing.TB, der []byte) []byte {
	t.Helper()
	in := cryptobyte.String(der)
	var content cryptobyte.String
	if !in.ReadASN1(&content, cbasn1.SEQUENCE) {
		t.Fatal("not a SEQUENCE")
	}
	return append(append([]byte{0x30, 0x80}, content...), 0, 0)
}

func TestParseCertBlob(t *testing.T) {
	pki := newTestPKI(t)
	a := pki.leaf(t, leafOpts{email: "a@blob.test"})
	b := pki.leaf(t, leafOpts{dnsName: "blob.test"})
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for _, tc := range []struct {
		name  string
		value []byte
		want  []*x509.Certificate
	}{
		{"DER", a.Raw, []*x509.Certificate{a}},
		{"PKCS#7", certsOnlyPKCS7(a, b), []*x509.Certificate{a, b}},
		{"PEM", append(pemOf("CERTIFICATE", a.Raw), pemOf("CERTIFICATE", b.Raw)...), []*x509.Certificate{a, b}},
		{"PEM PKCS7", pemOf("PKCS7", certsOnlyPKCS7(b)), []*x509.Certificate{b}},
		{"BER PKCS#7 (indefinite length)", indefiniteLength(t, certsOnlyPKCS7(a, b)), []*x509.Certificate{a, b}},
		{"empty", nil, nil},
		{"garbage", []byte("hello"), nil},
		{"PKCS#7 without certificates", certsOnlyPKCS7(), nil},
		{"DER with trailing data", append(append([]byte{}, a.Raw...), 0), nil},
		{"PEM without certificate", pemOf("PRIVATE KEY", []byte{1}), nil},
	} {
		got, err := parseCertBlob(tc.value)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: %d certificates, want an error", tc.name, len(got))
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: %d certificates, want %d", tc.name, len(got), len(tc.want))
			continue
		}
		for i := range got {
			if !got[i].Equal(tc.want[i]) {
				t.Errorf("%s: certificate %d differs", tc.name, i)
			}
		}
	}
}

// TestParsePKCS7OpenSSL reads a certs-only PKCS#7 made by OpenSSL, so the
// parser is not only checked against the tests' own encoder.
func TestParsePKCS7OpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: `make test` installs it (scripts/test-deps.sh)")
	}
	pki := newTestPKI(t)
	a := pki.leaf(t, leafOpts{email: "a@openssl.test"})
	dir := t.TempDir()
	in := filepath.Join(dir, "certs.pem")
	pemData := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw})...)
	tcheck(t, os.WriteFile(in, pemData, 0o600), "write")
	out, err := exec.Command(openssl, "crl2pkcs7", "-nocrl", "-certfile", in, "-outform", "DER").Output()
	tcheck(t, err, "openssl crl2pkcs7")
	certs, err := parseCertBlob(out)
	tcheck(t, err, "parse")
	if len(certs) != 2 || !certs[0].Equal(a) || !certs[1].Equal(pki.ca) {
		t.Fatalf("got %d certificates", len(certs))
	}
	if !bytes.Equal(certsOnlyPKCS7(a, pki.ca), out) {
		t.Log("note: own encoder differs from OpenSSL's (harmless)")
	}
}

// FuzzLDAPCertValue feeds arbitrary LDAP attribute values to the parser: it
// must not panic, and what it returns must be certificates.
func FuzzLDAPCertValue(f *testing.F) {
	pki := newTestPKI(f)
	a := pki.leaf(f, leafOpts{email: "a@fuzz.test"})
	f.Add(a.Raw)
	f.Add(certsOnlyPKCS7(a))
	f.Add(certsOnlyPKCS7(a, pki.ca))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: certsOnlyPKCS7(a)}))
	f.Add([]byte{0x30, 0x03, 0x06, 0x01, 0x00})
	f.Add(indefiniteLength(f, certsOnlyPKCS7(a, pki.ca)))
	f.Fuzz(func(t *testing.T, value []byte) {
		certs, err := parseCertBlob(value)
		if err != nil {
			if len(certs) != 0 {
				t.Fatalf("error %v with %d certificates", err, len(certs))
			}
			return
		}
		if len(certs) == 0 || len(certs) > maxCertsPerStep {
			t.Fatalf("%d certificates without error", len(certs))
		}
		for _, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatal("empty certificate")
			}
		}
	})
}
