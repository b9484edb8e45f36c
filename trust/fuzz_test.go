package trust

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/smallstep/pkcs7"
)

// fuzzSignerFile is the certificate the committed signed seed bundles are
// signed with, so the fuzzer reaches the content of signed bundles.
const fuzzSignerFile = "testdata/bundle-signer.pem"

func FuzzParseBundle(f *testing.F) {
	data, err := os.ReadFile(fuzzSignerFile)
	if err != nil {
		f.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		f.Fatalf("no PEM in %s", fuzzSignerFile)
	}
	signer, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("-----BEGIN PKCS7-----\n-----END PKCS7-----\n"))
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80, 0x00, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range []*x509.Certificate{nil, signer} {
			certs, err := ParseBundle(data, s)
			if err == nil && len(certs) == 0 {
				t.Fatal("no error and no anchors")
			}
			if errors.Is(err, errParserPanic) {
				t.Fatalf("parser panic: %v", err)
			}
			if err != nil && certs != nil {
				t.Fatalf("error %v with %d anchors", err, len(certs))
			}
			for _, c := range certs {
				if c == nil {
					t.Fatal("nil anchor")
				}
			}
		}
		// What an AIA caIssuers URL serves goes through similar code.
		if certs, err := parseCertificates(data); errors.Is(err, errParserPanic) {
			t.Fatalf("parseCertificates: parser panic: %v", err)
		} else if err == nil && len(certs) == 0 {
			t.Fatal("parseCertificates: no error and no certificates")
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpus of FuzzParseBundle and the
// signer certificate. It runs only with HISP_WRITE_FUZZ_CORPUS=1; the
// output is committed.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("HISP_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set HISP_WRITE_FUZZ_CORPUS=1 to rewrite the committed seed corpus")
	}
	bp := newBundlePKI(t)
	if err := os.WriteFile(fuzzSignerFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bp.signer.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	der := makeP7B(t, bp.a.cert, bp.b.cert)
	signed := signBundle(t, der, bp.signer, pkcs7.OIDDigestAlgorithmSHA256)
	empty, err := pkcs7.DegenerateCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{
		"der-p7b":        der,
		"pem-p7b":        pemP7B(der, "PKCS7"),
		"pem-cms":        pemP7B(makeP7B(t, bp.a.cert), "CMS"),
		"signed-der":     signed,
		"signed-pem":     pemP7B(signed, "CMS"),
		"signed-pem-p7b": signBundle(t, pemP7B(der, "PKCS7"), bp.signer, pkcs7.OIDDigestAlgorithmSHA256),
		"signed-other":   signBundle(t, der, bp.other, pkcs7.OIDDigestAlgorithmSHA256),
		"empty-p7b":      empty,
		"certificate":    bp.a.cert.Raw,
		"garbage":        []byte("not a bundle"),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseBundle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFuzzSeeds checks that the committed signed seeds verify with the
// committed signer, so the fuzzer reaches the content of signed bundles.
func TestFuzzSeeds(t *testing.T) {
	data, err := os.ReadFile(fuzzSignerFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	signer, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"der-p7b": 2, "pem-p7b": 2, "pem-cms": 1, "signed-der": 2, "signed-pem": 2, "signed-pem-p7b": 2} {
		content, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParseBundle", name))
		if err != nil {
			t.Fatal(err)
		}
		var quoted string
		if _, err := fmt.Sscanf(string(content), "go test fuzz v1\n[]byte(%q)\n", &quoted); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := signer
		if name == "der-p7b" || name == "pem-p7b" || name == "pem-cms" {
			s = nil
		}
		certs, err := ParseBundle([]byte(quoted), s)
		if err != nil || len(certs) != want {
			t.Errorf("%s: %d anchors, error %v; want %d", name, len(certs), err, want)
		}
	}
}
