package smime

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
	"github.com/hisp-project/hisp/smime/cms"
)

// seal pieces: sign with hisp, let the test alter the signed entity, then
// encrypt to r1.
func sealAltered(t *testing.T, alter func(signed []byte) []byte) []byte {
	t.Helper()
	p := getPKI(t)
	msg := canonicalize(sampleMessage(t))
	e, err := parseEntity(msg)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := Sign(Wrap(e.rawHeader, e.body), Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}, SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return encryptTo(t, alter(signed), e.header)
}

func encryptTo(t *testing.T, entity []byte, h textproto.Header) []byte {
	t.Helper()
	p := getPKI(t)
	out, err := Encrypt(entity, RoutingHeader(h), []cms.Recipient{{Cert: p.r1.Cert}}, SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// opensslSealed signs wrapped sample content with openssl using signArgs,
// then encrypts it with openssl to r1 using encArgs.
func opensslSealed(t *testing.T, signArgs, encArgs []string) []byte {
	t.Helper()
	p := getPKI(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.eml")
	if err := os.WriteFile(in, Wrap(nil, canonicalize(sampleMessage(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	signed := openssl(t, nil, append([]string{"cms", "-sign", "-in", in}, signArgs...)...)
	return openssl(t, signed, append(append([]string{"cms", "-encrypt", "-from", "alice@hospital.example", "-to", "bob@clinic.example"}, encArgs...), p.files("r1").cert)...)
}

func TestOpenRefuses(t *testing.T) {
	p := getPKI(t)
	rsa, weak := p.files("rsa"), p.files("weak")
	plain := canonicalize(sampleMessage(t))

	tests := []struct {
		name    string
		message func(t *testing.T) []byte
		keys    []cms.KeyPair
		want    error
	}{
		{"tampered body", func(t *testing.T) []byte {
			return sealAltered(t, func(s []byte) []byte {
				return bytes.Replace(s, []byte("Acetaminophen 500 mg"), []byte("Acetaminophen 900 mg"), 1)
			})
		}, nil, ErrDigestMismatch},
		{"tampered signature", func(t *testing.T) []byte {
			return sealAltered(t, func(s []byte) []byte { return alterSignature(t, s) })
		}, nil, ErrBadSignature},
		{"wrong recipient key", func(t *testing.T) []byte {
			return sealAltered(t, func(s []byte) []byte { return s })
		}, p.keys(p.other), ErrNoRecipient},
		{"truncated CMS", func(t *testing.T) []byte {
			s := sealAltered(t, func(s []byte) []byte { return s })
			return s[:len(s)*2/3]
		}, nil, ErrMalformed},
		{"SHA-1 signature", func(t *testing.T) []byte {
			return opensslSealed(t, []string{"-signer", rsa.cert, "-inkey", rsa.key, "-md", "sha1"}, []string{"-aes-128-cbc"})
		}, nil, ErrWeakDigest},
		{"3DES content", func(t *testing.T) []byte {
			return opensslSealed(t, []string{"-signer", rsa.cert, "-inkey", rsa.key}, []string{"-des3"})
		}, nil, ErrWeakCipher},
		{"1024-bit signer", func(t *testing.T) []byte {
			return opensslSealed(t, []string{"-signer", weak.cert, "-inkey", weak.key}, []string{"-aes-128-cbc"})
		}, nil, ErrWeakKey},
		{"signer certificate absent", func(t *testing.T) []byte {
			return opensslSealed(t, []string{"-signer", rsa.cert, "-inkey", rsa.key, "-nocerts"}, []string{"-aes-128-cbc"})
		}, nil, ErrSignerCertMissing},
		{"unsigned", func(t *testing.T) []byte {
			e, _ := parseEntity(plain)
			return encryptTo(t, Wrap(e.rawHeader, e.body), e.header)
		}, nil, ErrNotSigned},
		{"unencrypted", func(t *testing.T) []byte { return plain }, nil, ErrNotEncrypted},
		{"signed but not encrypted", func(t *testing.T) []byte {
			e, _ := parseEntity(plain)
			s, err := Sign(Wrap(e.rawHeader, e.body), Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}, SealOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return append(RoutingHeader(e.header), s...)
		}, nil, ErrNotEncrypted},
		{"empty", func(t *testing.T) []byte { return nil }, nil, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.message(t)
			keys := tc.keys
			if keys == nil {
				keys = p.keys(p.r1)
			}
			o, err := Open(msg, keys)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: got %v (result %v), want %v", err, o != nil, tc.want)
			}
			if o != nil {
				t.Fatal("a refused message must return no result")
			}
		})
	}
}

// alterSignature flips a bit in the signature value at the end of the
// SignedData of a multipart/signed entity.
func alterSignature(t *testing.T, signed []byte) []byte {
	t.Helper()
	e, err := parseEntity(signed)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := splitMultipart(e.body, e.params["boundary"])
	if err != nil {
		t.Fatal(err)
	}
	sp, err := parseEntity(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	der, err := decodeBody(sp)
	if err != nil {
		t.Fatal(err)
	}
	der[len(der)-3] ^= 0x01
	var b bytes.Buffer
	writeBase64Lines(&b, der)
	return bytes.Replace(signed, sp.body, b.Bytes(), 1)
}

func TestSealRefuses(t *testing.T) {
	p := getPKI(t)
	msg := sampleMessage(t)
	_, err := Seal(msg, Signer{Cert: p.weak.Cert, Key: p.weak.Key}, []cms.Recipient{{Cert: p.r1.Cert}}, SealOptions{})
	if !errors.Is(err, ErrWeakKey) {
		t.Errorf("1024-bit signer: got %v, want ErrWeakKey", err)
	}
	_, err = Seal(msg, Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}, []cms.Recipient{{Cert: p.weak.Cert}}, SealOptions{})
	if !errors.Is(err, cms.ErrWeakKey) {
		t.Errorf("1024-bit recipient: got %v, want cms.ErrWeakKey", err)
	}
	_, err = Seal(msg, Signer{Cert: p.rsaSigner.Cert, Key: p.other.Key}, []cms.Recipient{{Cert: p.r1.Cert}}, SealOptions{})
	if !errors.Is(err, ErrWeakKey) {
		t.Errorf("key not matching certificate: got %v", err)
	}
	if _, err := Seal(msg, Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}, nil, SealOptions{}); err == nil {
		t.Error("no recipients: sealed anyway")
	}
}

// TestOpenAccepts covers what other agents send that is not what hisp
// sends: legacy x-pkcs7 types, unwrapped messages, opaque signed-data and
// several signers of which one is refused (TV-07).
func TestOpenAccepts(t *testing.T) {
	p := getPKI(t)
	rsa, weak := p.files("rsa"), p.files("weak")
	plain := canonicalize(sampleMessage(t))

	t.Run("legacy x-pkcs7 types", func(t *testing.T) {
		s := sealAltered(t, func(s []byte) []byte {
			return bytes.ReplaceAll(s, []byte("application/pkcs7-signature"), []byte("application/x-pkcs7-signature"))
		})
		s = bytes.Replace(s, []byte("application/pkcs7-mime"), []byte("application/x-pkcs7-mime"), 1)
		o, err := Open(s, p.keys(p.r1))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(o.Message, plain) {
			t.Fatal("message differs")
		}
	})
	t.Run("unwrapped", func(t *testing.T) {
		e, _ := parseEntity(plain)
		// The signed content is the message's own MIME entity; the
		// other headers travel outside, as older agents send.
		var content []byte
		for f := e.header.Fields(); f.Next(); {
			if strings.HasPrefix(strings.ToLower(f.Key()), "content-") {
				raw, _ := f.Raw()
				content = append(content, raw...)
			}
		}
		content = append(append(content, "\r\n"...), e.body...)
		signed, err := Sign(content, Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}, SealOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sealed := encryptTo(t, signed, e.header)
		o, err := Open(sealed, p.keys(p.r1))
		if err != nil {
			t.Fatal(err)
		}
		if o.Wrapped {
			t.Error("reported wrapped")
		}
		for _, want := range []string{"From: Alice Hospital <alice@hospital.example>\r\n", "Content-Type: multipart/mixed", "Acetaminophen"} {
			if !bytes.Contains(o.Message, []byte(want)) {
				t.Errorf("unwrapped message lacks %q", want)
			}
		}
	})
	t.Run("opaque signed-data", func(t *testing.T) {
		s := opensslSealed(t, []string{"-nodetach", "-signer", rsa.cert, "-inkey", rsa.key}, []string{"-aes-256-cbc"})
		o, err := Open(s, p.keys(p.r1))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(o.Message, plain) {
			t.Fatal("message differs")
		}
	})
	t.Run("one of two signers refused", func(t *testing.T) {
		s := opensslSealed(t, []string{"-signer", weak.cert, "-inkey", weak.key, "-signer", rsa.cert, "-inkey", rsa.key}, []string{"-aes-128-cbc"})
		o, err := Open(s, p.keys(p.r1))
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Signers) != 2 || len(o.ValidSigners()) != 1 || !o.ValidSigners()[0].Equal(p.rsaSigner.Cert) {
			t.Fatalf("signers %+v", o.Signers)
		}
	})
	t.Run("base64 with odd line lengths", func(t *testing.T) {
		s := sealAltered(t, func(s []byte) []byte { return s })
		e, _ := parseEntity(s)
		der, _ := decodeBody(e)
		b64 := base64.StdEncoding.EncodeToString(der)
		var odd []byte
		for len(b64) > 0 {
			n := min(len(b64), 64)
			odd = append(append(odd, b64[:n]...), '\n')
			b64 = b64[n:]
		}
		s = append(bytes.ReplaceAll(e.rawHeader, []byte("\r\n"), []byte("\n")), odd...)
		if _, err := Open(s, p.keys(p.r1)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenLeavesInputAlone: a binary (not base64) body is decrypted in a
// copy, never in the caller's buffer.
func TestOpenLeavesInputAlone(t *testing.T) {
	p := getPKI(t)
	s := sealAltered(t, func(s []byte) []byte { return s })
	e, _ := parseEntity(s)
	der, _ := decodeBody(e)
	hdr := bytes.Replace(e.rawHeader, []byte("Content-Transfer-Encoding: base64"), []byte("Content-Transfer-Encoding: binary"), 1)
	msg := append(append([]byte{}, hdr...), der...)
	orig := bytes.Clone(msg)
	if _, err := Open(msg, p.keys(p.r1)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg, orig) {
		t.Fatal("Open modified its input")
	}
}
