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
// through package state. What may be chosen, and what is accepted on
// receipt, is the Direct profile of package smime/directprofile.
package smime

import (
	"crypto"
	"encoding/asn1"
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// Digest is a message digest for signing: one of the digests the Direct
// profile lets hisp send (directprofile.Digests: SHA-256 by default,
// SHA-384 and SHA-512 when an outbound profile says so). SHA-1 and MD5
// are deliberately absent: hisp never produces them.
type Digest int

// The digests hisp signs with.
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

// row is the profile's row for d; SHA-256's for the zero Digest.
func (d Digest) row() directprofile.Digest {
	if d == 0 {
		d = SHA256
	}
	r, _ := directprofile.DigestByName(d.String())
	return r
}

// Hash returns the crypto.Hash of d.
func (d Digest) Hash() crypto.Hash { return d.row().Hash }

func (d Digest) oid() asn1.ObjectIdentifier { return d.row().OID }

// ParseDigest parses "sha256", "sha-256", "sha384", "sha512" (any case):
// the digests the profile lets hisp send.
func ParseDigest(s string) (Digest, error) {
	name := strings.ReplaceAll(strings.ToLower(s), "-", "")
	var sendable []string
	for d := SHA256; d <= SHA512; d++ {
		if r := d.row(); r.Verdict == directprofile.Accept && r.Send != directprofile.Never {
			if d.String() == name {
				return d, nil
			}
			sendable = append(sendable, d.String())
		}
	}
	return 0, fmt.Errorf("unknown digest %q: want %s", s, orList(sendable))
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
