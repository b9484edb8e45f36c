package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var writeCorpus = flag.Bool("cms.writecorpus", false, "write the seed corpus of FuzzDecrypt and FuzzBER to testdata/fuzz")

// fuzzParty is the fixed key pair in testdata, used by the fuzz targets and
// their committed seed corpus.
func fuzzParty(t testing.TB) *party {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join("testdata", "fuzz-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join("testdata", "fuzz-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("testdata: no PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &party{name: "fuzz", cert: cert, key: key.(*rsa.PrivateKey)}
}

// typedErrors are the errors Decrypt may return with a usable key.
var typedErrors = []error{ErrMalformed, ErrUnsupportedAlgorithm, ErrRefusedAlgorithm, ErrNoMatchingRecipient, ErrDecryptionFailed, ErrWeakKey}

func isTyped(err error) bool {
	for _, e := range typedErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func FuzzDecrypt(f *testing.F) {
	p := fuzzParty(f)
	keys := []KeyPair{p.keyPair()}
	f.Add([]byte{0x30, 0x80, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		got, err := Decrypt(data, keys)
		if err != nil {
			if !isTyped(err) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if got.Recipient != p.cert || got.Cipher.keySize() == 0 || got.KeyTransport == 0 {
			t.Fatalf("odd result %+v", got)
		}
		if len(got.Content) > len(orig) {
			t.Fatalf("%d bytes of content from %d bytes of input", len(got.Content), len(orig))
		}
	})
}

func FuzzBER(f *testing.F) {
	for _, s := range []string{
		"30800201010000", "2480040161248004016204016300000000", "2380030200ff030207800000",
		"a0800401610000", "bf818001800000", "010101", "30840000000302010a",
	} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := toDER(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		// DER in, the same DER out.
		d2, err := toDER(d)
		if err != nil || !bytes.Equal(d, d2) {
			t.Fatalf("not idempotent: %x -> %x (%v)", d, d2, err)
		}
		// encoding/asn1 reads it.
		var raw asn1.RawValue
		if rest, err := asn1.Unmarshal(d, &raw); err != nil || len(rest) != 0 {
			t.Fatalf("encoding/asn1 refuses %x: %v", d, err)
		}
		// Any BER form of it comes back to it.
		rng := mrand.New(mrand.NewPCG(uint64(len(data)), 7))
		ber := berify(t, d, rng, false, 0)
		d3, err := toDER(ber)
		if err != nil || !bytes.Equal(d, d3) {
			t.Fatalf("BER form %x of %x normalizes to %x (%v)", ber, d, d3, err)
		}
		// compactOctets agrees with toDER on OCTET STRINGs.
		e, _, _ := parseBER(ber, 0)
		if e.is(asn1.ClassUniversal, asn1.TagOctetString) {
			var want []byte
			if _, err := asn1.Unmarshal(d, &want); err != nil {
				t.Fatal(err)
			}
			got, err := compactOctets(e, 0)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("compactOctets: %x, %v; want %x", got, err, want)
			}
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpus from real
// messages, ours and openssl's, when run with -cms.writecorpus.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -cms.writecorpus to regenerate testdata/fuzz")
	}
	p := fuzzParty(t)
	dir := t.TempDir()
	content := testContent(200)
	seeds := map[string][]byte{}
	add := func(name string, b []byte) { seeds[name] = b }

	for i, c := range []ContentCipher{AES128CBC, AES256CBC, AES192CBC, AES128GCM, AES256GCM, AES192GCM, AES128CBC, AES128GCM} {
		kt, ski := encryptTransport[i%3], i%2 == 1
		der, err := Encrypt(rand.Reader, content, c, []Recipient{{Cert: p.cert, KeyTransport: kt, UseSKI: ski}})
		if err != nil {
			t.Fatal(err)
		}
		add(fmt.Sprintf("hisp-%v-%v-ski%v", c, kt, ski), der)
	}
	rng := mrand.New(mrand.NewPCG(5, 6))
	for _, c := range allCiphers {
		der, err := Encrypt(rand.Reader, content, c, []Recipient{{Cert: p.cert, UseSKI: true}})
		if err != nil {
			t.Fatal(err)
		}
		add(fmt.Sprintf("hisp-ber-%v", c), berify(t, der, rng, true, 2))
	}
	for _, c := range allCiphers {
		for kt := range opensslKeyOpts {
			for _, stream := range []bool{false, true} {
				der := opensslEncrypt(t, dir, content, opensslCipherFlag[c], stream, stream, []*party{p}, []KeyTransport{kt})
				add(fmt.Sprintf("openssl-%v-%v-stream%v", c, kt, stream), der)
			}
		}
	}
	cert, _ := writeParty(t, dir, p)
	in := filepath.Join(dir, "content")
	if err := os.WriteFile(in, content, 0o600); err != nil {
		t.Fatal(err)
	}
	add("openssl-des3", openssl(t, nil, "cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, "-des3", "-recip", cert))
	add("openssl-kekri", openssl(t, nil, "cms", "-encrypt", "-binary", "-outform", "DER", "-in", in, "-aes-128-cbc",
		"-secretkey", "000102030405060708090a0b0c0d0e0f", "-secretkeyid", "0102", "-recip", cert))
	add("openssl-pwri", openssl(t, nil, "cms", "-encrypt", "-binary", "-outform", "DER", "-stream", "-in", in, "-aes-256-cbc",
		"-pwri_password", "secret", "-recip", cert))

	// Damaged ones.
	base := seeds["hisp-aes128-gcm-rsa-pkcs1v15-skitrue"]
	stream := seeds["openssl-aes128-cbc-rsa-oaep-sha1-streamtrue"]
	if base == nil || stream == nil {
		t.Fatal("seed names changed")
	}
	add("damaged-truncated-half", base[:len(base)/2])
	add("damaged-truncated-tag", base[:len(base)-3])
	flipped := bytes.Clone(base)
	flipped[len(flipped)-40] ^= 1
	add("damaged-ciphertext", flipped)
	add("damaged-stream-truncated", stream[:len(stream)-5])
	noEOC := bytes.Clone(stream)
	noEOC[len(noEOC)-1] = 1
	add("damaged-stream-eoc", noEOC)

	write := func(target, name string, b []byte) {
		path := filepath.Join("testdata", "fuzz", target, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range seeds {
		write("FuzzDecrypt", name, b)
	}
	// FuzzBER gets the parts of a few messages, where BER variety is.
	for _, name := range []string{"openssl-aes128-gcm-rsa-oaep-sha256-streamtrue", "hisp-ber-aes256-cbc", "hisp-aes256-gcm-rsa-oaep-sha1-skifalse"} {
		if seeds[name] == nil {
			t.Fatalf("no seed %s", name)
		}
		write("FuzzBER", name, seeds[name])
	}
}

// TestFuzzCorpus checks that the committed seeds are what their names say,
// so that the fuzzer starts from messages that decrypt.
func TestFuzzCorpus(t *testing.T) {
	p := fuzzParty(t)
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecrypt", "*"))
	if err != nil || len(files) < 20 {
		t.Fatalf("seed corpus missing: %d files, %v", len(files), err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a corpus file", file)
		}
		data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		name := filepath.Base(file)
		_, err = Decrypt([]byte(data), []KeyPair{p.keyPair()})
		switch {
		case name == "openssl-des3":
			if !errors.Is(err, ErrRefusedAlgorithm) {
				t.Errorf("%s: got %v, want ErrRefusedAlgorithm", name, err)
			}
		case strings.HasPrefix(name, "damaged-"):
			if err == nil {
				t.Errorf("%s: decrypted", name)
			}
		case err != nil:
			t.Errorf("%s: %v", name, err)
		}
	}
}
