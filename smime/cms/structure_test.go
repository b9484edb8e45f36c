package cms

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"
)

// Tests that rebuild messages with encoding/asn1, for encodings neither
// Encrypt nor openssl produce.

// testContentInfo mirrors our EnvelopedData and AuthEnvelopedData output.
type testContentInfo struct {
	Type    asn1.ObjectIdentifier
	Content testEnvelope `asn1:"explicit,tag:0"`
}

type testEnvelope struct {
	Version    int
	Recipients []asn1.RawValue `asn1:"set"`
	ECI        testECI
	AuthAttrs  []asn1.RawValue `asn1:"optional,set,tag:1"`
	MAC        []byte          `asn1:"optional"`
}

type testECI struct {
	ContentType asn1.ObjectIdentifier
	Algorithm   pkix.AlgorithmIdentifier
	Encrypted   []byte `asn1:"tag:0"`
}

// sealedForTest encrypts content to p with the given cipher and returns the
// parsed message and its content-encryption key.
func sealedForTest(t *testing.T, p *party, c ContentCipher, content []byte) (*testContentInfo, []byte) {
	t.Helper()
	der, err := Encrypt(rand.Reader, content, c, []Recipient{{Cert: p.cert, KeyTransport: RSAOAEPSHA256}})
	if err != nil {
		t.Fatal(err)
	}
	var ci testContentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) != 0 {
		t.Fatalf("parsing our own message: %v", err)
	}
	var ri keyTransRecipientInfo
	if _, err := asn1.Unmarshal(ci.Content.Recipients[0].FullBytes, &ri); err != nil {
		t.Fatal(err)
	}
	cek, err := rsa.DecryptOAEP(sha256.New(), nil, p.key, ri.EncryptedKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &ci, cek
}

// withRecipient replaces the RecipientInfos by one KTRI for p with the given
// algorithm and encrypted key.
func withRecipient(t *testing.T, ci *testContentInfo, p *party, alg pkix.AlgorithmIdentifier, ek []byte) []byte {
	t.Helper()
	ias, err := asn1.Marshal(issuerAndSerialNumber{Issuer: asn1.RawValue{FullBytes: p.cert.RawIssuer}, SerialNumber: p.cert.SerialNumber})
	if err != nil {
		t.Fatal(err)
	}
	ri, err := asn1.Marshal(keyTransRecipientInfo{RID: asn1.RawValue{FullBytes: ias}, KeyEncryptionAlgorithm: alg, EncryptedKey: ek})
	if err != nil {
		t.Fatal(err)
	}
	ci.Content.Recipients = []asn1.RawValue{{FullBytes: ri}}
	der, err := asn1.Marshal(*ci)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOAEPParameterEncodings decrypts RSAES-OAEP with the parameter
// encodings of RFC 4055 section 4.1 that senders use.
func TestOAEPParameterEncodings(t *testing.T) {
	f := getFixture(t)
	p := f.r2048
	content := []byte("hello OAEP")
	ci, cek := sealedForTest(t, p, AES128CBC, content)

	sha1Null := pkix.AlgorithmIdentifier{Algorithm: oidSHA1, Parameters: asn1.NullRawValue}
	sha256Absent := pkix.AlgorithmIdentifier{Algorithm: oidSHA256}
	sha384 := pkix.AlgorithmIdentifier{Algorithm: oidSHA384, Parameters: asn1.NullRawValue}
	sha512 := pkix.AlgorithmIdentifier{Algorithm: oidSHA512, Parameters: asn1.NullRawValue}
	mgf := func(h pkix.AlgorithmIdentifier) pkix.AlgorithmIdentifier {
		return pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: mustMarshal(t, h)}}
	}
	oaep := func(params []byte) pkix.AlgorithmIdentifier {
		return pkix.AlgorithmIdentifier{Algorithm: oidRSAESOAEP, Parameters: asn1.RawValue{FullBytes: params}}
	}
	label := []byte("direct")
	labelSource := pkix.AlgorithmIdentifier{Algorithm: oidPSpecified, Parameters: asn1.RawValue{FullBytes: mustMarshal(t, label)}}
	emptyLabel := pkix.AlgorithmIdentifier{Algorithm: oidPSpecified, Parameters: asn1.RawValue{FullBytes: mustMarshal(t, []byte{})}}

	for _, tc := range []struct {
		name  string
		alg   pkix.AlgorithmIdentifier
		opts  rsa.OAEPOptions
		label []byte
		want  KeyTransport
	}{
		{"absent parameters", pkix.AlgorithmIdentifier{Algorithm: oidRSAESOAEP}, rsa.OAEPOptions{Hash: crypto.SHA1}, nil, RSAOAEPSHA1},
		{"NULL parameters", pkix.AlgorithmIdentifier{Algorithm: oidRSAESOAEP, Parameters: asn1.NullRawValue}, rsa.OAEPOptions{Hash: crypto.SHA1}, nil, RSAOAEPSHA1},
		{"empty SEQUENCE", oaep([]byte{0x30, 0}), rsa.OAEPOptions{Hash: crypto.SHA1}, nil, RSAOAEPSHA1},
		{"explicit SHA-1", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha1Null, MaskGenFunc: mgf(sha1Null), PSourceFunc: emptyLabel})), rsa.OAEPOptions{Hash: crypto.SHA1}, nil, RSAOAEPSHA1},
		{"SHA-256, absent hash parameters", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha256Absent, MaskGenFunc: mgf(sha256Absent)})), rsa.OAEPOptions{Hash: crypto.SHA256}, nil, RSAOAEPSHA256},
		{"SHA-256, MGF1 default SHA-1", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha256Absent})), rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA1}, nil, RSAOAEPSHA256MGF1SHA1},
		{"SHA-256 with a label", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha256Absent, MaskGenFunc: mgf(sha256Absent), PSourceFunc: labelSource})), rsa.OAEPOptions{Hash: crypto.SHA256}, label, RSAOAEPSHA256},
		{"rsaEncryption, absent parameters", pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption}, rsa.OAEPOptions{}, nil, RSAPKCS1v15},
		{"SHA-384", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha384, MaskGenFunc: mgf(sha384)})), rsa.OAEPOptions{Hash: crypto.SHA384}, nil, RSAOAEPSHA384},
		{"SHA-512", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha512, MaskGenFunc: mgf(sha512)})), rsa.OAEPOptions{Hash: crypto.SHA512}, nil, RSAOAEPSHA512},
		{"SHA-384, MGF1 default SHA-1", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha384})), rsa.OAEPOptions{Hash: crypto.SHA384, MGFHash: crypto.SHA1}, nil, RSAOAEPSHA384MGF1SHA1},
		{"SHA-512, MGF1 default SHA-1", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha512})), rsa.OAEPOptions{Hash: crypto.SHA512, MGFHash: crypto.SHA1}, nil, RSAOAEPSHA512MGF1SHA1},
	} {
		var ek []byte
		var err error
		if tc.want == RSAPKCS1v15 {
			//lint:ignore SA1019 the test makes RSA PKCS #1 v1.5 key transport, which Direct accepts (AL-08).
			ek, err = rsa.EncryptPKCS1v15(rand.Reader, &p.key.PublicKey, cek)
		} else {
			tc.opts.Label = tc.label
			ek, err = rsa.EncryptOAEPWithOptions(rand.Reader, &p.key.PublicKey, cek, &tc.opts)
		}
		if err != nil {
			t.Fatal(err)
		}
		der := withRecipient(t, ci, p, tc.alg, ek)
		got, err := Decrypt(der, []KeyPair{p.keyPair()})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !bytes.Equal(got.Content, content) || got.KeyTransport != tc.want {
			t.Errorf("%s: key transport %v, want %v", tc.name, got.KeyTransport, tc.want)
		}
	}

	// Unsupported variants: refused with the key transport role, before
	// any RSA operation.
	for _, tc := range []struct {
		name string
		alg  pkix.AlgorithmIdentifier
	}{
		{"SHA-512 with MGF1-SHA-256", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: sha512, MaskGenFunc: mgf(sha256Absent)}))},
		{"SHA-1 with MGF1-SHA-512", oaep(mustMarshal(t, rsaesOAEPParams{MaskGenFunc: mgf(sha512)}))},
		{"MD5 hash", oaep(mustMarshal(t, rsaesOAEPParams{HashFunc: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}}}))},
		{"MGF other than MGF1", oaep(mustMarshal(t, rsaesOAEPParams{MaskGenFunc: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3}}}))},
		{"MGF1 with an unknown hash", oaep(mustMarshal(t, rsaesOAEPParams{MaskGenFunc: mgf(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3}})}))},
		{"label source other than pSpecified", oaep(mustMarshal(t, rsaesOAEPParams{PSourceFunc: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3}}}))},
		{"RSASSA-PSS", pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}}},
	} {
		der := withRecipient(t, ci, p, tc.alg, make([]byte, 256))
		_, err := Decrypt(der, []KeyPair{p.keyPair()})
		var ua *UnsupportedAlgorithmError
		if !errors.As(err, &ua) || ua.Role != RoleKeyTransport || !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Errorf("%s: got %v, want an unsupported key transport", tc.name, err)
		}
	}

	// Garbage parameters.
	for name, params := range map[string][]byte{
		"not a SEQUENCE":   {0x04, 0x00},
		"MGF1 without OID": mustMarshal(t, rsaesOAEPParams{MaskGenFunc: pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: []byte{0x05, 0x00}}}}),
	} {
		der := withRecipient(t, ci, p, oaep(params), make([]byte, 256))
		if _, err := Decrypt(der, []KeyPair{p.keyPair()}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}

	// The encrypted key is fine, but holds a key of the wrong size.
	ek, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &p.key.PublicKey, cek[:8], nil)
	if err != nil {
		t.Fatal(err)
	}
	alg, _ := oaepSHA256Identifier()
	if _, err := Decrypt(withRecipient(t, ci, p, alg, ek), []KeyPair{p.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
		t.Errorf("short content-encryption key: got %v, want ErrDecryptionFailed", err)
	}
}

// TestAuthAttrs decrypts AuthEnvelopedData with authenticated attributes,
// which RFC 5083 section 2.2 feeds to GCM as additional data, DER-encoded
// with a SET OF tag.
func TestAuthAttrs(t *testing.T) {
	f := getFixture(t)
	p := f.r2048
	content := []byte("hello authenticated attributes")
	ci, cek := sealedForTest(t, p, AES128GCM, content)

	// One attribute: contentType id-data (RFC 5652 section 11.1).
	attr := mustMarshal(t, struct {
		Type   asn1.ObjectIdentifier
		Values []asn1.ObjectIdentifier `asn1:"set"`
	}{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}, []asn1.ObjectIdentifier{oidData}})
	aad := mustMarshal(t, struct {
		Attrs []asn1.RawValue `asn1:"set"`
	}{[]asn1.RawValue{{FullBytes: attr}}})
	aad = aad[len(aad)-(len(attr)+2):] // the SET OF itself, without the outer SEQUENCE
	if aad[0] != 0x31 {
		t.Fatalf("AAD % x", aad[:2])
	}

	nonce := make([]byte, 12)
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	sealed := gcm.Seal(nil, nonce, content, aad)
	ci.Content.ECI.Algorithm.Parameters = asn1.RawValue{FullBytes: mustMarshal(t, gcmParameters{Nonce: nonce, ICVLen: 16})}
	ci.Content.ECI.Encrypted = sealed[:len(content)]
	ci.Content.MAC = sealed[len(content):]
	ci.Content.AuthAttrs = []asn1.RawValue{{FullBytes: attr}}
	der := mustMarshal(t, *ci)

	got, err := Decrypt(bytes.Clone(der), []KeyPair{p.keyPair()})
	if err != nil || !bytes.Equal(got.Content, content) {
		t.Fatalf("with authAttrs: %v", err)
	}
	// Without the attributes the tag does not match.
	ci.Content.AuthAttrs = nil
	if _, err := Decrypt(mustMarshal(t, *ci), []KeyPair{p.keyPair()}); !errors.Is(err, ErrDecryptionFailed) {
		t.Errorf("authAttrs removed: got %v, want ErrDecryptionFailed", err)
	}
}

// TestGCMParameters covers tag lengths other than 16 and bad parameters.
func TestGCMParameters(t *testing.T) {
	f := getFixture(t)
	p := f.r2048
	content := []byte("hello GCM")
	ci, cek := sealedForTest(t, p, AES256GCM, content)
	block, _ := aes.NewCipher(cek)

	seal := func(nonceLen, tagLen int, icv int) []byte {
		nonce := make([]byte, nonceLen)
		var gcm cipher.AEAD
		var err error
		if nonceLen == 12 {
			gcm, err = cipher.NewGCMWithTagSize(block, tagLen)
		} else {
			gcm, err = cipher.NewGCMWithNonceSize(block, nonceLen)
		}
		if err != nil {
			t.Fatal(err)
		}
		sealed := gcm.Seal(nil, nonce, content, nil)
		c := *ci
		params := gcmParameters{Nonce: nonce, ICVLen: icv}
		c.Content.ECI.Algorithm.Parameters = asn1.RawValue{FullBytes: mustMarshal(t, params)}
		c.Content.ECI.Encrypted = sealed[:len(content)]
		c.Content.MAC = sealed[len(content):]
		return mustMarshal(t, c)
	}
	for _, tc := range []struct {
		name       string
		nonce, tag int
		icv        int
		want       error
	}{
		{"12-byte tag (the default)", 12, 12, 12, nil},
		{"14-byte tag", 12, 14, 14, nil},
		{"16-byte nonce", 16, 16, 16, nil},
		{"ICV length differs from the mac", 12, 16, 12, ErrMalformed},
		{"ICV length 8", 12, 16, 8, ErrMalformed},
		{"16-byte nonce and 12-byte tag", 16, 16, 12, ErrUnsupportedAlgorithm},
	} {
		der := seal(tc.nonce, tc.tag, tc.icv)
		got, err := Decrypt(der, []KeyPair{p.keyPair()})
		if tc.want == nil {
			if err != nil || !bytes.Equal(got.Content, content) {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// ICVlen absent means 12 (RFC 5084 section 3.2).
	c := *ci
	nonce := make([]byte, 12)
	gcm, _ := cipher.NewGCMWithTagSize(block, 12)
	sealed := gcm.Seal(nil, nonce, content, nil)
	c.Content.ECI.Algorithm.Parameters = asn1.RawValue{FullBytes: mustMarshal(t, struct{ Nonce []byte }{nonce})}
	c.Content.ECI.Encrypted = sealed[:len(content)]
	c.Content.MAC = sealed[len(content):]
	if got, err := Decrypt(mustMarshal(t, c), []KeyPair{p.keyPair()}); err != nil || !bytes.Equal(got.Content, content) {
		t.Errorf("ICVlen absent: %v", err)
	}
}

// TestCipherEnvelopeMismatch puts GCM in EnvelopedData and CBC in
// AuthEnvelopedData.
func TestCipherEnvelopeMismatch(t *testing.T) {
	f := getFixture(t)
	p := f.r2048
	gcmMsg, _ := sealedForTest(t, p, AES128GCM, []byte("x"))
	cbcMsg, _ := sealedForTest(t, p, AES128CBC, []byte("x"))

	a := *gcmMsg
	a.Type = oidEnvelopedData
	a.Content.MAC = nil
	b := *cbcMsg
	b.Type = oidAuthEnvelopedData
	b.Content.MAC = make([]byte, 16)
	for name, msg := range map[string][]byte{"GCM in EnvelopedData": mustMarshal(t, a), "CBC in AuthEnvelopedData": mustMarshal(t, b)} {
		if _, err := Decrypt(msg, []KeyPair{p.keyPair()}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	// AuthEnvelopedData without its mac.
	c := *gcmMsg
	c.Content.MAC = nil
	if _, err := Decrypt(mustMarshal(t, c), []KeyPair{p.keyPair()}); !errors.Is(err, ErrMalformed) {
		t.Errorf("no mac: got %v, want ErrMalformed", err)
	}
}
