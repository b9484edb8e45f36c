package cms

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Interoperability with "openssl cms" (OpenSSL 3), in both directions.

var opensslCipherFlag = map[ContentCipher]string{
	AES128CBC: "-aes-128-cbc",
	AES256CBC: "-aes-256-cbc",
	AES128GCM: "-aes-128-gcm",
	AES256GCM: "-aes-256-gcm",
}

// opensslKeyOpts are the -keyopt options that select a key transport for the
// preceding -recip.
var opensslKeyOpts = map[KeyTransport][]string{
	RSAPKCS1v15:           {"-keyopt", "rsa_padding_mode:pkcs1"},
	RSAOAEPSHA1:           {"-keyopt", "rsa_padding_mode:oaep"},
	RSAOAEPSHA256:         {"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256"},
	RSAOAEPSHA256MGF1SHA1: {"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha1"},
}

// interopContent is larger than OpenSSL's streaming chunks and holds bytes
// that text mode would mangle.
func interopContent() []byte {
	return append(testContent(9000), 0, 1, '\n', '\r', 0xff, '\r', '\n')
}

// opensslEncrypt runs openssl cms -encrypt to the given recipients, each with
// its key transport.
func opensslEncrypt(t *testing.T, dir string, content []byte, cipherFlag string, stream, keyid bool, recips []*party, kts []KeyTransport) []byte {
	t.Helper()
	in := filepath.Join(dir, "content.bin")
	if err := os.WriteFile(in, content, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, cipherFlag}
	if stream {
		args = append(args, "-stream")
	}
	if keyid {
		args = append(args, "-keyid")
	}
	for i, p := range recips {
		cert, _ := writeParty(t, dir, p)
		args = append(args, "-recip", cert)
		args = append(args, opensslKeyOpts[kts[i]]...)
	}
	return openssl(t, nil, args...)
}

// TestOpenSSLToHisp decrypts what openssl encrypts: every cipher, key
// transport and recipient identifier, DER and streamed BER, two recipients
// with RSA-2048 and RSA-3072 keys, each decrypting.
func TestOpenSSLToHisp(t *testing.T) {
	f := getFixture(t)
	opensslPath(t)
	content := interopContent()
	kts := slices.Concat(encryptTransport, []KeyTransport{RSAOAEPSHA256MGF1SHA1})
	for _, c := range allCiphers {
		for _, kt := range kts {
			for _, keyid := range []bool{false, true} {
				for _, stream := range []bool{false, true} {
					name := fmt.Sprintf("%v/%v/keyid=%v/stream=%v", c, kt, keyid, stream)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						dir := t.TempDir()
						der := opensslEncrypt(t, dir, content, opensslCipherFlag[c], stream, keyid,
							[]*party{f.r2048, f.r3072}, []KeyTransport{kt, kt})
						if stream && !bytes.HasPrefix(der, []byte{0x30, 0x80}) {
							t.Fatalf("openssl -stream did not write indefinite-length BER: % x", der[:4])
						}
						for _, p := range []*party{f.r2048, f.r3072} {
							got, err := Decrypt(bytes.Clone(der), []KeyPair{f.other.keyPair(), p.keyPair()})
							if err != nil {
								t.Fatalf("%s: %v", p.name, err)
							}
							if !bytes.Equal(got.Content, content) {
								t.Fatalf("%s: content differs", p.name)
							}
							if got.Cipher != c || got.KeyTransport != kt || got.Recipient != p.cert {
								t.Fatalf("%s: got %v, %v, %s; want %v, %v", p.name, got.Cipher, got.KeyTransport, got.Recipient.Subject, c, kt)
							}
						}
					})
				}
			}
		}
	}
}

// TestOpenSSLMixedRecipients has recipients with different key transports in
// one message.
func TestOpenSSLMixedRecipients(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	content := interopContent()
	der := opensslEncrypt(t, dir, content, "-aes-256-gcm", true, false,
		[]*party{f.r2048, f.r3072}, []KeyTransport{RSAPKCS1v15, RSAOAEPSHA256MGF1SHA1})
	for i, p := range []*party{f.r2048, f.r3072} {
		got, err := Decrypt(bytes.Clone(der), []KeyPair{p.keyPair()})
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if want := []KeyTransport{RSAPKCS1v15, RSAOAEPSHA256MGF1SHA1}[i]; !bytes.Equal(got.Content, content) || got.KeyTransport != want {
			t.Fatalf("%s: key transport %v, want %v", p.name, got.KeyTransport, want)
		}
	}
}

// TestHispToOpenSSL has openssl decrypt what Encrypt produces, for each of
// two recipients.
func TestHispToOpenSSL(t *testing.T) {
	f := getFixture(t)
	opensslPath(t)
	content := interopContent()
	for _, c := range allCiphers {
		for _, kt := range encryptTransport {
			for _, ski := range []bool{false, true} {
				name := fmt.Sprintf("%v/%v/ski=%v", c, kt, ski)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					der, err := Encrypt(rand.Reader, content, c, []Recipient{
						{Cert: f.r2048.cert, KeyTransport: kt, UseSKI: ski},
						{Cert: f.r3072.cert, KeyTransport: kt, UseSKI: ski},
					})
					if err != nil {
						t.Fatal(err)
					}
					in := filepath.Join(dir, "msg.der")
					if err := os.WriteFile(in, der, 0o600); err != nil {
						t.Fatal(err)
					}
					for _, p := range []*party{f.r2048, f.r3072} {
						cert, key := writeParty(t, dir, p)
						got := openssl(t, nil, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-recip", cert, "-inkey", key)
						if !bytes.Equal(got, content) {
							t.Fatalf("%s: openssl decrypted %d bytes, want the %d bytes encrypted", p.name, len(got), len(content))
						}
					}
				})
			}
		}
	}
}

// TestHispToOpenSSLLarge checks a message of a few megabytes, to exercise
// long length encodings on both sides.
func TestHispToOpenSSLLarge(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	content := testContent(3 << 20)
	for _, c := range []ContentCipher{AES128CBC, AES256GCM} {
		der, err := Encrypt(rand.Reader, content, c, []Recipient{{Cert: f.r2048.cert}})
		if err != nil {
			t.Fatal(err)
		}
		in := filepath.Join(dir, "msg.der")
		if err := os.WriteFile(in, der, 0o600); err != nil {
			t.Fatal(err)
		}
		cert, key := writeParty(t, dir, f.r2048)
		got := openssl(t, nil, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-recip", cert, "-inkey", key)
		if !bytes.Equal(got, content) {
			t.Fatalf("%v: openssl decrypted %d bytes, want %d", c, len(got), len(content))
		}
		// And back: openssl streams it as BER with many chunks.
		back := opensslEncrypt(t, dir, content, opensslCipherFlag[c], true, false, []*party{f.r2048}, []KeyTransport{RSAOAEPSHA256})
		dec, err := Decrypt(back, []KeyPair{f.r2048.keyPair()})
		if err != nil || !bytes.Equal(dec.Content, content) {
			t.Fatalf("%v: decrypting openssl's streamed message: %v", c, err)
		}
	}
}
