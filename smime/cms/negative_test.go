package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrongRecipient(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	for _, stream := range []bool{false, true} {
		der := opensslEncrypt(t, dir, []byte("for alice"), "-aes-128-cbc", stream, false, []*party{f.r2048}, []KeyTransport{RSAOAEPSHA256})
		_, err := Decrypt(der, []KeyPair{f.other.keyPair(), f.r3072.keyPair()})
		if !errors.Is(err, ErrNoMatchingRecipient) {
			t.Errorf("stream=%v: got %v, want ErrNoMatchingRecipient", stream, err)
		}
	}
	der, err := Encrypt(rand.Reader, []byte("for alice"), AES256GCM, []Recipient{{Cert: f.r2048.cert, UseSKI: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decrypt(der, []KeyPair{f.other.keyPair()}); !errors.Is(err, ErrNoMatchingRecipient) {
		t.Errorf("SKI: got %v, want ErrNoMatchingRecipient", err)
	}
}

// TestSKIWithoutExtension matches a subject key identifier against a
// certificate that has no such extension, by the RFC 5280 method 1 hash.
func TestSKIWithoutExtension(t *testing.T) {
	f := getFixture(t)
	withSKI := *f.noSKI.cert
	sum := sha1.Sum(x509.MarshalPKCS1PublicKey(&f.noSKI.key.PublicKey))
	withSKI.SubjectKeyId = sum[:]
	der, err := Encrypt(rand.Reader, []byte("hello"), AES128CBC, []Recipient{{Cert: &withSKI, UseSKI: true}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decrypt(der, []KeyPair{f.noSKI.keyPair()})
	if err != nil || string(got.Content) != "hello" {
		t.Fatalf("got %v", err)
	}
}

// TestTruncated cuts messages of each kind at every length.
func TestTruncated(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	content := testContent(300)
	var msgs [][]byte
	for _, c := range allCiphers {
		der, err := Encrypt(rand.Reader, content, c, []Recipient{{Cert: f.r2048.cert}})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, der)
	}
	msgs = append(msgs,
		opensslEncrypt(t, dir, content, "-aes-128-cbc", true, false, []*party{f.r2048}, []KeyTransport{RSAPKCS1v15}),
		opensslEncrypt(t, dir, content, "-aes-256-gcm", true, true, []*party{f.r2048}, []KeyTransport{RSAOAEPSHA256}))
	keys := []KeyPair{f.r2048.keyPair()}
	for i, msg := range msgs {
		if _, err := Decrypt(bytes.Clone(msg), keys); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		for n := range len(msg) {
			_, err := Decrypt(bytes.Clone(msg[:n]), keys)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("message %d cut to %d of %d bytes: got %v, want ErrMalformed", i, n, len(msg), err)
			}
		}
		// Trailing data is refused too.
		if _, err := Decrypt(append(bytes.Clone(msg), 0), keys); !errors.Is(err, ErrMalformed) {
			t.Errorf("message %d with a trailing byte: got %v, want ErrMalformed", i, err)
		}
	}
}

// TestRefusedCiphers has openssl encrypt with 3DES, DES and RC2, which the
// Direct profile refuses (Algorithms table: 3DES MUST NOT).
func TestRefusedCiphers(t *testing.T) {
	f := getFixture(t)
	for _, tc := range []struct {
		flag   string
		legacy bool
		oid    asn1.ObjectIdentifier
		name   string
	}{
		{"-des3", false, asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}, "3DES-CBC"},
		{"-des", true, asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}, "DES-CBC"},
		{"-rc2", true, asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}, "RC2-CBC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cert, _ := writeParty(t, dir, f.r2048)
			in := filepath.Join(dir, "content")
			if err := os.WriteFile(in, []byte("hello"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, tc.flag, "-recip", cert}
			if tc.legacy {
				args = append(args, "-provider", "legacy", "-provider", "default")
			}
			der, err := runOpenSSL(t, nil, args...)
			if err != nil {
				if tc.legacy {
					// OpenSSL 3 moved DES and RC2 to the legacy
					// provider, which a distribution may leave out.
					// Only this sub-case depends on it.
					t.Skipf("openssl without the legacy provider cannot make %s: %v", tc.name, err)
				}
				t.Fatal(err)
			}
			_, err = Decrypt(der, []KeyPair{f.r2048.keyPair()})
			if !errors.Is(err, ErrRefusedAlgorithm) || errors.Is(err, ErrUnsupportedAlgorithm) {
				t.Fatalf("got %v, want ErrRefusedAlgorithm only", err)
			}
			var ua *UnsupportedAlgorithmError
			if !errors.As(err, &ua) || !ua.OID.Equal(tc.oid) || ua.Role != RoleContentEncryption || ua.Name != tc.name || !ua.Refused() {
				t.Fatalf("got %#v", err)
			}
			want := "cms: content encryption algorithm " + tc.name + " (" + tc.oid.String() + ") is refused by the Direct profile"
			if err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
			// Refused before looking for a recipient.
			if _, err := Decrypt(der, nil); !errors.Is(err, ErrRefusedAlgorithm) {
				t.Errorf("without keys: got %v", err)
			}
		})
	}
}

// TestUnknownCipher changes the AES-128-CBC identifier into AES-128-CCM and
// an unknown one.
func TestUnknownCipher(t *testing.T) {
	f := getFixture(t)
	der, err := Encrypt(rand.Reader, []byte("hello"), AES128CBC, []Recipient{{Cert: f.r2048.cert}})
	if err != nil {
		t.Fatal(err)
	}
	aes128CBC, _ := asn1.Marshal(oidAES128CBC)
	for _, last := range []byte{7, 99} {
		msg := bytes.Clone(der)
		i := bytes.Index(msg, aes128CBC)
		msg[i+len(aes128CBC)-1] = last
		_, err := Decrypt(msg, []KeyPair{f.r2048.keyPair()})
		var ua *UnsupportedAlgorithmError
		if !errors.Is(err, ErrUnsupportedAlgorithm) || errors.Is(err, ErrRefusedAlgorithm) || !errors.As(err, &ua) || ua.Refused() {
			t.Errorf("OID ending %d: got %v, want ErrUnsupportedAlgorithm", last, err)
		}
		if !strings.Contains(err.Error(), "is not supported") {
			t.Errorf("message %q", err)
		}
	}
}

// TestWeakKey: a 1024-bit key is refused on Encrypt and, as our own key, on
// Decrypt.
func TestWeakKey(t *testing.T) {
	f := getFixture(t)
	if _, err := Encrypt(rand.Reader, []byte("x"), AES128CBC, []Recipient{{Cert: f.weak.cert}}); !errors.Is(err, ErrWeakKey) {
		t.Errorf("Encrypt: got %v, want ErrWeakKey", err)
	}
	dir := t.TempDir()
	der := opensslEncrypt(t, dir, []byte("x"), "-aes-128-cbc", false, false, []*party{f.weak}, []KeyTransport{RSAOAEPSHA256})
	if _, err := Decrypt(der, []KeyPair{f.weak.keyPair()}); !errors.Is(err, ErrWeakKey) {
		t.Errorf("Decrypt: got %v, want ErrWeakKey", err)
	}
}

// seededReader is a deterministic entropy source, so that a tampering test
// gives the same outcome on every run.
func seededReader(seed byte) *mrand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return mrand.NewChaCha8(s)
}

func TestTamperedGCM(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	content := testContent(1000)
	ours, err := Encrypt(rand.Reader, content, AES128GCM, []Recipient{{Cert: f.r2048.cert, KeyTransport: RSAPKCS1v15}})
	if err != nil {
		t.Fatal(err)
	}
	theirs := opensslEncrypt(t, dir, content, "-aes-256-gcm", false, false, []*party{f.r2048}, []KeyTransport{RSAOAEPSHA1})
	for name, msg := range map[string][]byte{"hisp": ours, "openssl": theirs} {
		// Both end with the ciphertext, then the mac: 04 10 and 16 bytes.
		if msg[len(msg)-18] != 0x04 || msg[len(msg)-17] != 16 {
			t.Fatalf("%s: unexpected layout", name)
		}
		for what, pos := range map[string]int{"ciphertext": len(msg) - 18 - 100, "mac": len(msg) - 1} {
			m := bytes.Clone(msg)
			m[pos] ^= 0x01
			_, err := Decrypt(m, []KeyPair{f.r2048.keyPair()})
			if !errors.Is(err, ErrDecryptionFailed) {
				t.Errorf("%s, tampered %s: got %v, want ErrDecryptionFailed", name, what, err)
			}
		}
	}
}

// TestTamperedKey damages the encrypted key: OAEP fails outright, PKCS #1
// v1.5 yields a random key and the tag check fails.
func TestTamperedKey(t *testing.T) {
	f := getFixture(t)
	for _, kt := range encryptTransport {
		der, err := Encrypt(rand.Reader, []byte("hello"), AES128GCM, []Recipient{{Cert: f.r2048.cert, KeyTransport: kt}})
		if err != nil {
			t.Fatal(err)
		}
		// The encrypted key is the 256-byte OCTET STRING.
		i := bytes.Index(der, []byte{0x04, 0x82, 0x01, 0x00})
		if i < 0 {
			t.Fatal("encrypted key not found")
		}
		der[i+4+10] ^= 0x80
		if _, err := Decrypt(der, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
			t.Errorf("%v: got %v, want ErrDecryptionFailed", kt, err)
		}
	}
}

func TestTamperedCBC(t *testing.T) {
	f := getFixture(t)
	content := testContent(1000) // 1000 % 16 = 8: eight bytes of padding
	const pad = 8
	der, err := Encrypt(seededReader(1), content, AES128CBC, []Recipient{{Cert: f.r2048.cert}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decrypt(bytes.Clone(der), []KeyPair{f.r2048.keyPair()}); err != nil {
		t.Fatal(err)
	}
	// The ciphertext ends the message. Changing the last byte of the
	// second-to-last block changes the last plaintext byte, the padding
	// length, to 0.
	m := bytes.Clone(der)
	m[len(m)-17] ^= pad
	if _, err := Decrypt(m, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
		t.Errorf("padding byte set to 0: got %v, want ErrDecryptionFailed", err)
	}
	// Padding that claims more than a block.
	m = bytes.Clone(der)
	m[len(m)-17] ^= pad ^ 17
	if _, err := Decrypt(m, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
		t.Errorf("padding byte set to 17: got %v, want ErrDecryptionFailed", err)
	}
	// Padding whose bytes differ.
	m = bytes.Clone(der)
	m[len(m)-18] ^= 0x01
	if _, err := Decrypt(m, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
		t.Errorf("padding bytes differ: got %v, want ErrDecryptionFailed", err)
	}
	// The last block itself: garbage plaintext; with this seed its padding
	// is invalid (CBC has no integrity, so some other seed could pass).
	m = bytes.Clone(der)
	m[len(m)-5] ^= 0x01
	if _, err := Decrypt(m, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
		t.Errorf("last block changed: got %v, want ErrDecryptionFailed", err)
	}
}

// TestNotEnveloped gives Decrypt a SignedData and a bare OCTET STRING.
func TestNotEnveloped(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	cert, key := writeParty(t, dir, f.r2048)
	in := filepath.Join(dir, "content")
	if err := os.WriteFile(in, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	signed := openssl(t, nil, "cms", "-sign", "-binary", "-outform", "DER", "-in", in, "-signer", cert, "-inkey", key)
	for name, msg := range map[string][]byte{"signed-data": signed, "octets": {4, 1, 0}, "empty": nil, "EOC": {0, 0}} {
		if _, err := Decrypt(msg, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

// TestOtherRecipientKinds mixes key agreement (EC), KEK and password
// recipients with a key transport one: only the last is used, the others
// are skipped.
func TestOtherRecipientKinds(t *testing.T) {
	f := getFixture(t)
	dir := t.TempDir()
	cert, _ := writeParty(t, dir, f.r2048)
	ecPath := filepath.Join(dir, "ec.pem")
	if err := os.WriteFile(ecPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ecCert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "content")
	if err := os.WriteFile(in, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	der := openssl(t, nil, "cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, "-aes-128-cbc",
		"-recip", ecPath, "-recip", cert,
		"-secretkey", "000102030405060708090a0b0c0d0e0f", "-secretkeyid", "0102")
	pwri := openssl(t, nil, "cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, "-aes-256-cbc",
		"-pwri_password", "secret", "-recip", cert)
	for name, msg := range map[string][]byte{"kari+kekri": der, "pwri": pwri} {
		got, err := Decrypt(bytes.Clone(msg), []KeyPair{f.r2048.keyPair()})
		if err != nil || string(got.Content) != "hello" {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := Decrypt(bytes.Clone(msg), []KeyPair{f.other.keyPair()}); !errors.Is(err, ErrNoMatchingRecipient) {
			t.Errorf("%s, other key: got %v, want ErrNoMatchingRecipient", name, err)
		}
	}
	// Only a KEK recipient: nothing for us.
	kekOnly := openssl(t, nil, "cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, "-aes-128-cbc",
		"-secretkey", "000102030405060708090a0b0c0d0e0f", "-secretkeyid", "0102")
	if _, err := Decrypt(kekOnly, []KeyPair{f.r2048.keyPair()}); !errors.Is(err, ErrNoMatchingRecipient) {
		t.Errorf("KEK only: got %v, want ErrNoMatchingRecipient", err)
	}
}
