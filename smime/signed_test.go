package smime

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestOpenSKIAndPSSSigners: messages openssl signs with the signer named by
// subject key identifier (-keyid) and with RSASSA-PSS padding, each digest,
// detached and opaque (streamed BER), open in hisp with the signature
// valid; smallstep/pkcs7 read neither.
func TestOpenSKIAndPSSSigners(t *testing.T) {
	p := getPKI(t)
	sf := p.files("rsa")
	wrapped := Wrap(nil, canonicalize(sampleMessage(t)))
	for _, d := range allDigests {
		for _, pad := range []struct {
			name string
			opts []string
			alg  string
		}{
			{"pkcs1", nil, fmt.Sprintf("SHA%s-RSA", d.String()[3:])},
			{"pss", []string{"-keyopt", "rsa_padding_mode:pss"}, fmt.Sprintf("SHA%s-RSAPSS", d.String()[3:])},
			{"pss-saltlen-max", []string{"-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:max"}, fmt.Sprintf("SHA%s-RSAPSS", d.String()[3:])},
		} {
			for _, keyid := range []bool{false, true} {
				for _, opaque := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/keyid=%v/opaque=%v", d, pad.name, keyid, opaque)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						args := []string{"cms", "-sign", "-signer", sf.cert, "-inkey", sf.key, "-md", d.String()}
						args = append(args, pad.opts...)
						if keyid {
							args = append(args, "-keyid")
						}
						if opaque {
							args = append(args, "-nodetach")
						}
						if opaque && pad.opts == nil {
							// Streamed BER (indefinite lengths, chunked
							// content); OpenSSL 3.0 cannot stream PSS.
							args = append(args, "-stream")
						}
						signed := openssl(t, wrapped, args...)
						sealed := openssl(t, signed, "cms", "-encrypt", "-aes-128-cbc", "-recip", p.files("r1").cert)
						o, err := Open(sealed, p.keys(p.r1))
						if err != nil {
							t.Fatal(err)
						}
						if len(o.Signers) != 1 || o.Signers[0].Err != nil || !o.Signers[0].Cert.Equal(p.rsaSigner.Cert) {
							t.Fatalf("signers %+v", o.Signers)
						}
						if s := o.Signers[0]; s.Digest != d.String() || s.Algorithm != pad.alg {
							t.Errorf("signer digest %s algorithm %s, want %s %s", s.Digest, s.Algorithm, d, pad.alg)
						}
						if !o.Wrapped || !strings.Contains(string(o.Message), "Acetaminophen") {
							t.Errorf("inner message:\n%.300s", o.Message)
						}
					})
				}
			}
		}
	}
}

// TestOpenRefusesBadSKIAndPSS: the new signatures are checked as strictly
// as the old: a PSS signature whose MGF1 hash differs from its hash is
// refused naming the signature algorithm, a tampered PSS message does not
// verify, and a -keyid signature without the signer's certificate names
// the key identifier it looked for.
func TestOpenRefusesBadSKIAndPSS(t *testing.T) {
	p := getPKI(t)
	sf := p.files("rsa")
	for _, tc := range []struct {
		name  string
		sign  []string
		alter func([]byte) []byte
		want  error
		words string
	}{
		{"PSS with MGF1-SHA-1", []string{"-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_mgf1_md:sha1"}, nil, ErrWeakSignature, "MGF1"},
		{"PSS tampered", []string{"-keyopt", "rsa_padding_mode:pss"}, func(s []byte) []byte {
			return []byte(strings.Replace(string(s), "Acetaminophen 500 mg", "Acetaminophen 900 mg", 1))
		}, ErrDigestMismatch, ""},
		{"PSS bad signature value", []string{"-keyopt", "rsa_padding_mode:pss"}, func(s []byte) []byte { return alterSignature(t, s) }, ErrBadSignature, ""},
		{"keyid without certificate", []string{"-keyid", "-nocerts"}, nil, ErrSignerCertMissing, "subject key identifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"cms", "-sign", "-signer", sf.cert, "-inkey", sf.key}, tc.sign...)
			signed := openssl(t, Wrap(nil, canonicalize(sampleMessage(t))), args...)
			if tc.alter != nil {
				signed = tc.alter(signed)
			}
			sealed := openssl(t, signed, "cms", "-encrypt", "-aes-128-cbc", "-recip", p.files("r1").cert)
			_, err := Open(sealed, p.keys(p.r1))
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.words) {
				t.Fatalf("got %v, want %v naming %q", err, tc.want, tc.words)
			}
		})
	}
}
