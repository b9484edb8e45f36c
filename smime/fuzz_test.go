package smime

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/smime/cms"
)

// The fuzz targets feed untrusted input to every parser Open uses. Their
// seed corpora live in testdata/fuzz; `make test` replays them and
// `make fuzz` explores further.

// FuzzOpen runs whole received messages through Open with a fixed key: it
// must never panic, and must return either a result or an error.
func FuzzOpen(f *testing.F) {
	keys := fuzzKeys(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		o, err := Open(msg, keys)
		if (o == nil) == (err == nil) {
			t.Fatalf("Open returned result %v and error %v", o != nil, err)
		}
	})
}

// FuzzMultipart splits MIME multipart bodies: parts must be sub-slices of
// the body, never panic.
func FuzzMultipart(f *testing.F) {
	f.Add([]byte("--b\r\nA: b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n"), "b")
	f.Add([]byte("pre\n--b \nx\n--b\n\ny\n--b--"), "b")
	f.Add([]byte("--b\r\n--b--"), "b")
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		parts, err := splitMultipart(body, boundary)
		if err != nil {
			return
		}
		for _, p := range parts {
			if len(p) > len(body) {
				t.Fatal("part longer than body")
			}
		}
	})
}

// FuzzEntity parses MIME entity headers.
func FuzzEntity(f *testing.F) {
	f.Add([]byte("Content-Type: multipart/signed; boundary=x; protocol=\"application/pkcs7-signature\"\r\n\r\nbody"))
	f.Add([]byte("A: b\n c\n\nbody"))
	f.Add([]byte("\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseEntity(b)
		if err == nil && len(e.rawHeader)+len(e.body) != len(b) {
			t.Fatal("header and body do not add up to the entity")
		}
	})
}

// FuzzSignedData verifies arbitrary detached SignedData over fixed content.
func FuzzSignedData(f *testing.F) {
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := parseSignedData(der)
		if err != nil {
			return
		}
		var res Opened
		_ = verifySigners(sd, []byte("content"), &res)
	})
}

// fuzzKeys loads the fixed fuzzing identity from testdata: the seed
// messages are encrypted to it and signed by it.
func fuzzKeys(t testing.TB) []cms.KeyPair {
	t.Helper()
	id, err := certfile.LoadPEM(filepath.Join("testdata", "fuzz-recipient.pem"), filepath.Join("testdata", "fuzz-recipient.key"))
	if err != nil {
		t.Fatal(err)
	}
	return []cms.KeyPair{{Cert: id.Cert, Key: id.Key}}
}

// TestWriteFuzzSeeds regenerates the committed seed corpora from real
// messages when HISP_WRITE_SEEDS=1: hisp-sealed ones in each algorithm and
// openssl-sealed ones, including refused and broken variants.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("HISP_WRITE_SEEDS") == "" {
		t.Skip("set HISP_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	id, err := certfile.LoadPEM(filepath.Join("testdata", "fuzz-recipient.pem"), filepath.Join("testdata", "fuzz-recipient.key"))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From: fuzz@fuzz.example\r\nTo: fuzz@fuzz.example\r\nSubject: s\r\nMessage-ID: <1@fuzz.example>\r\n\r\nhello\r\n")
	signer := Signer{Cert: id.Cert, Key: id.Key}
	var open, sigs [][]byte
	for _, c := range []cms.ContentCipher{cms.AES128CBC, cms.AES256GCM} {
		for _, k := range []cms.KeyTransport{cms.RSAPKCS1v15, cms.RSAOAEPSHA256} {
			s, err := Seal(msg, signer, []cms.Recipient{{Cert: id.Cert, KeyTransport: k}}, SealOptions{Cipher: c, Digest: SHA384})
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, s, s[:len(s)/2])
		}
	}
	signed, err := Sign(Wrap(nil, msg), signer, SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := parseEntity(signed)
	parts, _ := splitMultipart(e.body, e.params["boundary"])
	sp, _ := parseEntity(parts[1])
	der, _ := decodeBody(sp)
	sigs = append(sigs, der, der[:len(der)/3])
	open = append(open, msg, signed)
	cert, key := filepath.Join("testdata", "fuzz-recipient.pem"), filepath.Join("testdata", "fuzz-recipient.key")
	osigned := openssl(t, Wrap(nil, msg), "cms", "-sign", "-signer", cert, "-inkey", key, "-md", "sha512")
	for _, enc := range [][]string{
		{"-aes-128-gcm", "-recip", cert, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha1"},
		{"-aes-256-cbc", "-keyid", "-recip", cert, "-keyopt", "rsa_padding_mode:oaep"},
		{"-des3", "-recip", cert},
		{"-stream", "-aes-128-cbc", "-recip", cert},
	} {
		open = append(open, openssl(t, osigned, append([]string{"cms", "-encrypt", "-from", "a@b.example", "-to", "c@d.example"}, enc...)...))
	}
	osignedOpaque := openssl(t, Wrap(nil, msg), "cms", "-sign", "-nodetach", "-signer", cert, "-inkey", key)
	signedSeeds := [][]byte{signed, signed[:len(signed)-40], canonicalize(osigned), canonicalize(osignedOpaque), Wrap(nil, msg)}
	for name, corpus := range map[string][][]byte{"FuzzOpen": open, "FuzzSignedData": sigs, "FuzzSigned": signedSeeds} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range corpus {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzSigned feeds decrypted content (what a sender put inside the
// encryption) to the verify-and-unwrap stage of Open, which FuzzOpen
// rarely reaches through the encryption.
func FuzzSigned(f *testing.F) {
	outer, err := parseEntity([]byte("From: a@b.example\r\nTo: c@d.example\r\n\r\n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, decrypted []byte) {
		var res Opened
		if err := openSigned(outer, decrypted, &res); err == nil && res.Message == nil {
			t.Fatal("no error and no message")
		}
	})
}
