package smime

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/smime/cms"
)

// oaepKeyopts are openssl's -keyopt flags for RSA-OAEP with a hash and an
// MGF1 hash.
func oaepKeyopts(hash, mgf string) []string {
	return []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:" + hash, "-keyopt", "rsa_mgf1_md:" + mgf}
}

// TestOpenOAEPSHA384And512: messages openssl signs and encrypts with
// RSA-OAEP over SHA-384 and SHA-512 (MGF1 with the same hash, or SHA-1 as
// Java senders default to) open in hisp, with every cipher, and Open says
// which key transport it was.
func TestOpenOAEPSHA384And512(t *testing.T) {
	p := getPKI(t)
	signed := opensslSigned(t)
	for _, c := range allCiphers {
		for _, tc := range []struct {
			hash, mgf string
			want      cms.KeyTransport
		}{
			{"sha384", "sha384", cms.RSAOAEPSHA384},
			{"sha512", "sha512", cms.RSAOAEPSHA512},
			{"sha384", "sha1", cms.RSAOAEPSHA384MGF1SHA1},
			{"sha512", "sha1", cms.RSAOAEPSHA512MGF1SHA1},
		} {
			t.Run(fmt.Sprintf("%s/%s-mgf1-%s", c, tc.hash, tc.mgf), func(t *testing.T) {
				t.Parallel()
				args := append([]string{"cms", "-encrypt", opensslCipher(c), "-recip", p.files("r1").cert}, oaepKeyopts(tc.hash, tc.mgf)...)
				sealed := openssl(t, signed, args...)
				o, err := Open(sealed, p.keys(p.r1))
				if err != nil {
					t.Fatal(err)
				}
				if o.KeyTransport != tc.want || o.Cipher != c || len(o.ValidSigners()) != 1 {
					t.Errorf("opened with %s, %s, %d valid signers", o.KeyTransport, o.Cipher, len(o.ValidSigners()))
				}
			})
		}
	}
}

// TestRefusedAlgorithmNamed: a refusal says whether the key transport or
// the content encryption was refused, and what it was.
func TestRefusedAlgorithmNamed(t *testing.T) {
	p := getPKI(t)
	signed := opensslSigned(t)
	for _, tc := range []struct {
		name  string
		args  []string
		want  error
		words []string
	}{
		{"OAEP SHA-512 with MGF1-SHA-256", append([]string{"-aes-128-cbc", "-recip", p.files("r1").cert}, oaepKeyopts("sha512", "sha256")...),
			ErrWeakKeyTransport, []string{"key transport", "SHA-512", "MGF1-SHA-256"}},
		{"3DES", []string{"-des3", "-recip", p.files("r1").cert},
			ErrWeakCipher, []string{"content encryption", "3DES"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed := openssl(t, signed, append([]string{"cms", "-encrypt"}, tc.args...)...)
			_, err := Open(sealed, p.keys(p.r1))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not name %q", err, w)
				}
			}
			t.Logf("refused: %v", err)
			if tc.want == ErrWeakKeyTransport && strings.Contains(err.Error(), "content encryption") {
				t.Errorf("%q blames the content encryption", err)
			}
		})
	}
}

// opensslSigned is the sample message wrapped and signed by openssl.
func opensslSigned(t *testing.T) []byte {
	t.Helper()
	p := getPKI(t)
	sf := p.files("rsa")
	return openssl(t, Wrap(nil, canonicalize(sampleMessage(t))), "cms", "-sign", "-signer", sf.cert, "-inkey", sf.key, "-md", "sha256")
}
