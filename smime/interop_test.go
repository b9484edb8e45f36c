package smime

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smime/cms"
)

var (
	allCiphers    = []cms.ContentCipher{cms.AES128CBC, cms.AES256CBC, cms.AES128GCM, cms.AES256GCM}
	allTransports = []cms.KeyTransport{cms.RSAPKCS1v15, cms.RSAOAEPSHA1, cms.RSAOAEPSHA256}
	allDigests    = []Digest{SHA256, SHA384, SHA512}
)

// opensslCipher is the openssl cms flag of a content cipher.
func opensslCipher(c cms.ContentCipher) string {
	return map[cms.ContentCipher]string{cms.AES128CBC: "-aes-128-cbc", cms.AES256CBC: "-aes-256-cbc",
		cms.AES128GCM: "-aes-128-gcm", cms.AES256GCM: "-aes-256-gcm"}[c]
}

// opensslKeyopts are the -keyopt flags following a -recip for a key transport.
func opensslKeyopts(k cms.KeyTransport) []string {
	switch k {
	case cms.RSAOAEPSHA1:
		return []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha1", "-keyopt", "rsa_mgf1_md:sha1"}
	case cms.RSAOAEPSHA256:
		return []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256"}
	case cms.RSAOAEPSHA256MGF1SHA1:
		return []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha1"}
	}
	return nil
}

// TestSealOpenedByOpenSSL: every message hisp seals is decrypted by openssl
// for each of two recipients and its signature verified by openssl, giving
// back exactly the wrapped, canonical message.
func TestSealOpenedByOpenSSL(t *testing.T) {
	p := getPKI(t)
	msg := sampleMessage(t)
	wantContent := Wrap(nil, canonicalize(msg))
	for _, signerName := range []string{"rsa", "ec"} {
		signer := p.rsaSigner
		if signerName == "ec" {
			signer = p.ecSigner
		}
		for _, d := range allDigests {
			for _, c := range allCiphers {
				for _, k := range allTransports {
					name := fmt.Sprintf("%s/%s/%s/%s", signerName, d, c, k)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						recips := []cms.Recipient{{Cert: p.r1.Cert, KeyTransport: k}, {Cert: p.r2.Cert, KeyTransport: k, UseSKI: true}}
						sealed, err := Seal(msg, Signer{Cert: signer.Cert, Key: signer.Key}, recips, SealOptions{Digest: d, Cipher: c})
						if err != nil {
							t.Fatal(err)
						}
						for _, r := range []string{"r1", "r2"} {
							f := p.files(r)
							signed := openssl(t, sealed, "cms", "-decrypt", "-recip", f.cert, "-inkey", f.key)
							content := openssl(t, signed, "cms", "-verify", "-CAfile", p.files("ca").cert, "-purpose", "smimesign")
							if !bytes.Equal(content, wantContent) {
								t.Fatalf("recipient %s: openssl verified content differs from the wrapped message:\n got %q\nwant %q", r, head(content), head(wantContent))
							}
						}
					})
				}
			}
		}
	}
}

// TestOpenSSLSealedOpenedByHisp: messages signed and encrypted by openssl,
// over the whole algorithm matrix, open in hisp for each recipient.
func TestOpenSSLSealedOpenedByHisp(t *testing.T) {
	p := getPKI(t)
	msg := canonicalize(sampleMessage(t))
	wrapped := Wrap(nil, msg)
	dir := t.TempDir()
	wrappedFile := filepath.Join(dir, "wrapped.eml")
	if err := os.WriteFile(wrappedFile, wrapped, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, signerName := range []string{"rsa", "ec"} {
		for _, d := range allDigests {
			sf := p.files(signerName)
			signed := openssl(t, nil, "cms", "-sign", "-in", wrappedFile, "-signer", sf.cert, "-inkey", sf.key, "-md", d.String())
			for _, c := range allCiphers {
				for _, k := range append(allTransports, cms.RSAOAEPSHA256MGF1SHA1) {
					name := fmt.Sprintf("%s/%s/%s/%s", signerName, d, c, k)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						args := []string{"cms", "-encrypt", opensslCipher(c), "-from", "alice@hospital.example",
							"-to", "bob@clinic.example", "-subject", "Direct message",
							"-recip", p.files("r1").cert}
						args = append(args, opensslKeyopts(k)...)
						args = append(args, "-recip", p.files("r2").cert)
						args = append(args, opensslKeyopts(k)...)
						sealed := openssl(t, signed, args...)
						for _, r := range []*testpki.Identity{p.r1, p.r2} {
							o, err := Open(sealed, p.keys(p.other, r))
							if err != nil {
								t.Fatalf("open for %s: %v", r.Cert.Subject, err)
							}
							if !bytes.Equal(o.Message, msg) {
								t.Fatalf("inner message differs:\n got %q\nwant %q", head(o.Message), head(msg))
							}
							if !o.Wrapped || o.Cipher != c || o.KeyTransport != k || !o.Recipient.Equal(r.Cert) {
								t.Errorf("got wrapped=%v cipher=%s transport=%s, want %s %s", o.Wrapped, o.Cipher, o.KeyTransport, c, k)
							}
							if len(o.Signers) != 1 || o.Signers[0].Err != nil || o.Signers[0].Digest != d.String() {
								t.Fatalf("signers: %+v", o.Signers)
							}
						}
					})
				}
			}
		}
	}
}

// TestRoundTrip: hisp opens what hisp seals, and the outer message carries
// only routing headers and a generic Subject (MF-04).
func TestRoundTrip(t *testing.T) {
	p := getPKI(t)
	msg := sampleMessage(t)
	sealed, err := Seal(msg, Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key, Chain: []*x509.Certificate{p.ca.Cert}},
		[]cms.Recipient{{Cert: p.r1.Cert}}, SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	outer, err := parseEntity(sealed)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"From", "To", "Cc", "Date", "Message-Id"} {
		if outer.header.Get(h) == "" {
			t.Errorf("outer header lacks %s", h)
		}
	}
	if got := outer.header.Get("Subject"); got != DefaultSubject {
		t.Errorf("outer Subject %q, want the generic %q", got, DefaultSubject)
	}
	if bytes.Contains(sealed, []byte("Discharge")) || outer.header.Has("Disposition-Notification-Options") {
		t.Error("outer message leaks inner headers")
	}
	if ct := outer.header.Get("Content-Type"); ct != `application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"` {
		t.Errorf("Content-Type %q", ct)
	}
	o, err := Open(sealed, p.keys(p.r1))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(o.Message, canonicalize(msg)) {
		t.Fatalf("round trip differs")
	}
	if len(o.Certificates) != 2 {
		t.Errorf("got %d certificates in the signature, want signer and chain", len(o.Certificates))
	}
	if o.KeyTransport != cms.RSAOAEPSHA256 || o.Cipher != cms.AES128CBC {
		t.Errorf("defaults: %s %s", o.Cipher, o.KeyTransport)
	}
}

func head(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}
