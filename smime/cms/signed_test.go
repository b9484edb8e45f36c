package cms

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var writeSignedCorpus = flag.Bool("cms.writesignedcorpus", false, "write the seed corpus of FuzzParseSignedData to testdata/fuzz")

// opensslSign signs content with openssl cms as the fixed fuzz party and
// returns the DER SignedData.
func opensslSign(t *testing.T, content []byte, opts ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	p := fuzzParty(t)
	cert, key := writeParty(t, dir, p)
	in := filepath.Join(dir, "content.bin")
	if err := os.WriteFile(in, content, 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"cms", "-sign", "-binary", "-outform", "DER", "-in", in, "-signer", cert, "-inkey", key}, opts...)
	return openssl(t, nil, args...)
}

// signedVariants are the SignedData openssl makes that ParseSignedData and
// Verify must take: PKCS #1 v1.5 and PSS, issuer-and-serial and SKI,
// detached and encapsulated, DER and streamed BER.
var signedVariants = map[string][]string{
	"pkcs1-sha256-detached":        {"-md", "sha256"},
	"pkcs1-sha512-keyid":           {"-md", "sha512", "-keyid"},
	"pkcs1-sha256-nodetach-stream": {"-md", "sha256", "-nodetach", "-stream"},
	"pss-sha256-detached":          {"-md", "sha256", "-keyopt", "rsa_padding_mode:pss"},
	"pss-sha384-keyid-nodetach":    {"-md", "sha384", "-keyopt", "rsa_padding_mode:pss", "-keyid", "-nodetach"},
	"pss-sha512-saltlen-max":       {"-md", "sha512", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:max"},
	"pkcs1-sha256-noattr":          {"-md", "sha256", "-noattr"},
}

// TestOpenSSLSignedData: every variant parses, names its signer, finds the
// signer's certificate (by issuer and serial or by key identifier) and
// verifies; altered content does not.
func TestOpenSSLSignedData(t *testing.T) {
	opensslPath(t)
	content := interopContent()
	for name, opts := range signedVariants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			der := opensslSign(t, content, opts...)
			sd, err := ParseSignedData(der)
			if err != nil {
				t.Fatal(err)
			}
			detached := !strings.Contains(name, "nodetach")
			if detached != (sd.Content == nil) || (!detached && !bytes.Equal(sd.Content, content)) {
				t.Fatalf("content: %d bytes, detached %v", len(sd.Content), detached)
			}
			if len(sd.Signers) != 1 || len(sd.Certificates) != 1 {
				t.Fatalf("%d signers, %d certificates", len(sd.Signers), len(sd.Certificates))
			}
			si := &sd.Signers[0]
			if strings.Contains(name, "keyid") != (si.Issuer == nil) {
				t.Errorf("signer identified as %s", si.Identifier())
			}
			cert := sd.SignerCertificate(si)
			if cert == nil {
				t.Fatalf("no certificate for %s", si.Identifier())
			}
			alg, err := si.Verify(content, sd.ContentType, cert)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(name, "pss") != strings.HasSuffix(alg, "RSAPSS") {
				t.Errorf("algorithm %s", alg)
			}
			altered := bytes.Clone(content)
			altered[100] ^= 1
			_, err = si.Verify(altered, sd.ContentType, cert)
			if want := ErrDigestMismatch; strings.Contains(name, "noattr") {
				want = ErrBadSignature
				if !errors.Is(err, want) {
					t.Errorf("altered content: %v, want %v", err, want)
				}
			} else if !errors.Is(err, want) {
				t.Errorf("altered content: %v, want %v", err, want)
			}
		})
	}
}

// TestSignedDataRefusals: SHA-1 is refused as a digest, with its name;
// PSS with MGF1-SHA-1 under SHA-256 as a signature algorithm.
func TestSignedDataRefusals(t *testing.T) {
	opensslPath(t)
	content := []byte("hello")
	for _, tc := range []struct {
		opts []string
		role string
	}{
		{[]string{"-md", "sha1"}, RoleDigest},
		{[]string{"-md", "sha256", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_mgf1_md:sha1"}, RoleSignature},
	} {
		sd, err := ParseSignedData(opensslSign(t, content, tc.opts...))
		if err != nil {
			t.Fatal(err)
		}
		si := &sd.Signers[0]
		_, err = si.Verify(content, sd.ContentType, sd.SignerCertificate(si))
		var ua *UnsupportedAlgorithmError
		if !errors.As(err, &ua) || ua.Role != tc.role {
			t.Errorf("%v: %v, want an unsupported %s", tc.opts, err, tc.role)
		}
		if tc.role == RoleDigest && (!errors.Is(err, ErrRefusedAlgorithm) || !strings.Contains(err.Error(), "sha1")) {
			t.Errorf("SHA-1 digest: %v, want refused by name", err)
		}
	}
}

// FuzzParseSignedData parses arbitrary SignedData and verifies each signer
// it can find a certificate for over fixed content: no panics, and
// failures are typed errors.
func FuzzParseSignedData(f *testing.F) {
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := ParseSignedData(der)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped parse error: %v", err)
			}
			return
		}
		content := sd.Content
		if content == nil {
			content = []byte("content")
		}
		for i := range sd.Signers {
			si := &sd.Signers[i]
			_ = si.Identifier()
			if cert := sd.SignerCertificate(si); cert != nil {
				_, _ = si.Verify(content, sd.ContentType, cert)
			}
		}
	})
}

// TestWriteSignedCorpus regenerates the seeds of FuzzParseSignedData with
// -cms.writesignedcorpus: each openssl variant, and damaged ones.
func TestWriteSignedCorpus(t *testing.T) {
	if !*writeSignedCorpus {
		t.Skip("run with -cms.writesignedcorpus to regenerate testdata/fuzz/FuzzParseSignedData")
	}
	seeds := map[string][]byte{}
	for name, opts := range signedVariants {
		seeds[name] = opensslSign(t, []byte("content"), opts...)
	}
	base := seeds["pss-sha384-keyid-nodetach"]
	seeds["damaged-truncated"] = base[:len(base)/2]
	flipped := bytes.Clone(base)
	flipped[len(flipped)-20] ^= 1
	seeds["damaged-signature"] = flipped
	for name, b := range seeds {
		path := filepath.Join("testdata", "fuzz", "FuzzParseSignedData", name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
