// Package smime turns a plain RFC 5322 message into a Direct message and
// back, following the Direct profile of S/MIME (RFC 5751; Applicability
// Statement for Secure Health Transport §2).
//
// Outbound (Seal): the whole message is wrapped as message/rfc822 (MF-01,
// MF-03), canonicalized to CRLF (MF-07), signed as a detached CMS SignedData
// in multipart/signed (MF-02), and the signed entity is encrypted as CMS
// EnvelopedData (or AuthEnvelopedData for AES-GCM) in
// application/pkcs7-mime. Outside, only routing headers remain (MF-04).
//
// Inbound (Open): the reverse. Open returns the inner message, every signer
// with its own verdict and every certificate the message carried. It checks
// signatures and the Direct algorithm profile only; whether a signer is
// trusted is the job of package trust, which takes the certificates Open
// returns.
//
// All algorithm choices are per call (SealOptions); nothing is configured
// through package state.
package smime

import (
	"crypto"
	"fmt"
	"strings"

	"github.com/smallstep/pkcs7"
)

// Digest is a message digest for signing (Algorithms table: SHA-256 is the
// default; SHA-384 and SHA-512 are accepted). SHA-1 and MD5 are
// deliberately absent: hisp never produces them.
type Digest int

// The digests hisp signs with and accepts.
const (
	SHA256 Digest = iota + 1
	SHA384
	SHA512
)

// String returns the name used on the command line: "sha256".
func (d Digest) String() string {
	switch d {
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("Digest(%d)", int(d))
}

// Micalg returns the multipart/signed micalg parameter (RFC 5751 §3.4.3.2).
func (d Digest) Micalg() string {
	switch d {
	case SHA384:
		return "sha-384"
	case SHA512:
		return "sha-512"
	}
	return "sha-256"
}

// Hash returns the crypto.Hash of d.
func (d Digest) Hash() crypto.Hash {
	switch d {
	case SHA384:
		return crypto.SHA384
	case SHA512:
		return crypto.SHA512
	}
	return crypto.SHA256
}

func (d Digest) oid() []int {
	switch d {
	case SHA384:
		return pkcs7.OIDDigestAlgorithmSHA384
	case SHA512:
		return pkcs7.OIDDigestAlgorithmSHA512
	}
	return pkcs7.OIDDigestAlgorithmSHA256
}

// ParseDigest parses "sha256", "sha-256", "sha384", "sha512" (any case).
func ParseDigest(s string) (Digest, error) {
	switch strings.ReplaceAll(strings.ToLower(s), "-", "") {
	case "sha256":
		return SHA256, nil
	case "sha384":
		return SHA384, nil
	case "sha512":
		return SHA512, nil
	}
	return 0, fmt.Errorf("unknown digest %q: want sha256, sha384 or sha512", s)
}
