package cms

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"testing"
)

var (
	allCiphers       = []ContentCipher{AES128CBC, AES256CBC, AES128GCM, AES256GCM}
	encryptTransport = []KeyTransport{RSAPKCS1v15, RSAOAEPSHA1, RSAOAEPSHA256}
)

func TestRoundTrip(t *testing.T) {
	f := getFixture(t)
	ciphers := slices.Concat(allCiphers, []ContentCipher{AES192CBC, AES192GCM})
	for _, c := range ciphers {
		for _, kt := range slices.Concat(encryptTransport, []KeyTransport{0}) {
			for _, ski := range []bool{false, true} {
				name := fmt.Sprintf("%v/%v/ski=%v", c, kt, ski)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					for _, size := range []int{0, 1, 15, 16, 17, 5000} {
						content := testContent(size)
						der, err := Encrypt(rand.Reader, content, c, []Recipient{
							{Cert: f.r2048.cert, KeyTransport: kt, UseSKI: ski},
							{Cert: f.r3072.cert, KeyTransport: kt, UseSKI: ski},
						})
						if err != nil {
							t.Fatal(err)
						}
						for _, p := range []*party{f.r2048, f.r3072} {
							got, err := Decrypt(bytes.Clone(der), []KeyPair{f.other.keyPair(), p.keyPair()})
							if err != nil {
								t.Fatalf("%s, %d bytes: %v", p.name, size, err)
							}
							if !bytes.Equal(got.Content, content) {
								t.Fatalf("%s, %d bytes: content differs", p.name, size)
							}
							wantKT := kt
							if wantKT == 0 {
								wantKT = RSAOAEPSHA256
							}
							if got.Cipher != c || got.KeyTransport != wantKT || got.Recipient != p.cert || !got.ContentType.Equal(oidData) {
								t.Fatalf("got %v %v %v %v", got.Cipher, got.KeyTransport, got.Recipient.Subject, got.ContentType)
							}
						}
					}
				})
			}
		}
	}
}

// TestVersions checks the version numbers of RFC 5652 section 6.1 and
// RFC 5083 section 2.1, and the DER order of the RecipientInfos.
func TestVersions(t *testing.T) {
	f := getFixture(t)
	for _, tc := range []struct {
		cipher ContentCipher
		ski    bool
		want   int
	}{
		{AES128CBC, false, 0},
		{AES128CBC, true, 2},
		{AES128GCM, false, 0},
		{AES128GCM, true, 0},
	} {
		der, err := Encrypt(rand.Reader, []byte("x"), tc.cipher, []Recipient{{Cert: f.r2048.cert}, {Cert: f.r3072.cert, UseSKI: tc.ski}})
		if err != nil {
			t.Fatal(err)
		}
		var ci struct {
			Type    asn1.ObjectIdentifier
			Content struct {
				Version    int
				Recipients []asn1.RawValue `asn1:"set"`
				ECI        asn1.RawValue
				MAC        []byte `asn1:"optional"`
			} `asn1:"explicit,tag:0"`
		}
		if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) != 0 {
			t.Fatalf("%v: encoding/asn1 does not read our DER: %v", tc.cipher, err)
		}
		if ci.Content.Version != tc.want {
			t.Errorf("%v ski=%v: version %d, want %d", tc.cipher, tc.ski, ci.Content.Version, tc.want)
		}
		r := ci.Content.Recipients
		if len(r) != 2 || bytes.Compare(r[0].FullBytes, r[1].FullBytes) > 0 {
			t.Errorf("%v: RecipientInfos not in DER SET OF order", tc.cipher)
		}
	}
}

func TestEncryptErrors(t *testing.T) {
	f := getFixture(t)
	content := []byte("hello")

	_, err := Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.weak.cert}})
	if !errors.Is(err, ErrWeakKey) {
		t.Errorf("1024-bit recipient: got %v, want ErrWeakKey", err)
	}
	_, err = Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.ecCert}})
	var ua *UnsupportedAlgorithmError
	if !errors.As(err, &ua) || !errors.Is(err, ErrUnsupportedAlgorithm) || ua.Role != RoleKeyTransport {
		t.Errorf("ECDSA recipient: got %v, want an UnsupportedAlgorithmError", err)
	}
	_, err = Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.r2048.cert, KeyTransport: RSAOAEPSHA256MGF1SHA1}})
	if !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("OAEP SHA-256 with MGF1-SHA1: got %v, want ErrUnsupportedAlgorithm", err)
	}
	_, err = Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.r2048.cert, KeyTransport: 42}})
	if !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("unknown key transport: got %v, want ErrUnsupportedAlgorithm", err)
	}
	_, err = Encrypt(rand.Reader, content, 0, []Recipient{{Cert: f.r2048.cert}})
	if !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("zero cipher: got %v, want ErrUnsupportedAlgorithm", err)
	}
	if _, err = Encrypt(rand.Reader, content, AES128CBC, nil); err == nil {
		t.Errorf("no recipients: no error")
	}
	if _, err = Encrypt(rand.Reader, content, AES128CBC, []Recipient{{}}); err == nil {
		t.Errorf("recipient without certificate: no error")
	}
	if _, err = Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.noSKI.cert, UseSKI: true}}); err == nil {
		t.Errorf("UseSKI without a subject key identifier: no error")
	}
	// Another recipient being weak fails the whole message: the caller
	// decides whom to drop.
	_, err = Encrypt(rand.Reader, content, AES128GCM, []Recipient{{Cert: f.r2048.cert}, {Cert: f.weak.cert}})
	if !errors.Is(err, ErrWeakKey) {
		t.Errorf("one weak recipient of two: got %v, want ErrWeakKey", err)
	}
}

func TestNames(t *testing.T) {
	for c := AES128CBC; c <= AES192GCM; c++ {
		got, err := ParseContentCipher(c.String())
		if err != nil || got != c {
			t.Errorf("ParseContentCipher(%q) = %v, %v", c.String(), got, err)
		}
	}
	for s, want := range map[string]ContentCipher{"AES-128-CBC": AES128CBC, "aes-256-gcm": AES256GCM, " aes128-gcm ": AES128GCM} {
		if got, err := ParseContentCipher(s); err != nil || got != want {
			t.Errorf("ParseContentCipher(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "des-ede3-cbc", "aes128", "rc2"} {
		if _, err := ParseContentCipher(s); err == nil {
			t.Errorf("ParseContentCipher(%q): no error", s)
		}
	}
	want := map[KeyTransport]string{RSAPKCS1v15: "rsa-pkcs1v15", RSAOAEPSHA1: "rsa-oaep-sha1", RSAOAEPSHA256: "rsa-oaep-sha256", RSAOAEPSHA256MGF1SHA1: "rsa-oaep-sha256-mgf1-sha1"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), s)
		}
		if got, err := ParseKeyTransport(s); err != nil || got != k {
			t.Errorf("ParseKeyTransport(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseKeyTransport("rsa"); err == nil {
		t.Error("ParseKeyTransport(rsa): no error")
	}
	wantCipher := map[ContentCipher]string{AES128CBC: "aes128-cbc", AES256CBC: "aes256-cbc", AES128GCM: "aes128-gcm", AES256GCM: "aes256-gcm"}
	for c, s := range wantCipher {
		if c.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(c), c.String(), s)
		}
	}
	if ContentCipher(0).String() != "ContentCipher(0)" || KeyTransport(9).String() != "KeyTransport(9)" {
		t.Error("String of invalid values")
	}
}

// TestDecrypter decrypts with a key that is only a crypto.Decrypter, as an
// HSM would give.
func TestDecrypter(t *testing.T) {
	f := getFixture(t)
	for _, kt := range encryptTransport {
		der, err := Encrypt(rand.Reader, []byte("hello"), AES256GCM, []Recipient{{Cert: f.r2048.cert, KeyTransport: kt}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decrypt(der, []KeyPair{{Cert: f.r2048.cert, Key: decrypterOnly{f.r2048.key}}})
		if err != nil || string(got.Content) != "hello" {
			t.Fatalf("%v: %v", kt, err)
		}
	}
}

func TestDecryptKeyErrors(t *testing.T) {
	f := getFixture(t)
	der, err := Encrypt(rand.Reader, []byte("hello"), AES128CBC, []Recipient{{Cert: f.r2048.cert}})
	if err != nil {
		t.Fatal(err)
	}
	// A key that does not belong to the certificate.
	if _, err := Decrypt(bytes.Clone(der), []KeyPair{{Cert: f.r2048.cert, Key: f.r3072.key}}); err == nil {
		t.Error("mismatched key: no error")
	}
	// Not a decrypter.
	if _, err := Decrypt(bytes.Clone(der), []KeyPair{{Cert: f.r2048.cert, Key: "key"}}); err == nil {
		t.Error("string key: no error")
	}
	// No keys at all.
	if _, err := Decrypt(bytes.Clone(der), nil); !errors.Is(err, ErrNoMatchingRecipient) {
		t.Errorf("no keys: got %v, want ErrNoMatchingRecipient", err)
	}
	// A KeyPair without certificate is skipped.
	if _, err := Decrypt(bytes.Clone(der), []KeyPair{{}, f.r2048.keyPair()}); err != nil {
		t.Errorf("nil certificate then the right one: %v", err)
	}
}
