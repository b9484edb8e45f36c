// Package cms encrypts and decrypts CMS EnvelopedData (RFC 5652 section 6) and
// AuthEnvelopedData (RFC 5083, with AES-GCM as in RFC 5084), the encryption layer
// of S/MIME messages exchanged between Direct HISPs, and verifies SignedData
// (RFC 5652 section 5; signed.go): signers by issuer and serial number or by
// subject key identifier, RSA PKCS #1 v1.5, RSASSA-PSS and ECDSA.
//
// What the Direct profile accepts and refuses is not decided here: every
// algorithm and key is looked up in the tables of package
// smime/directprofile (content ciphers, key transports with the OAEP
// variants, digests, signature algorithms, key types and sizes, curves).
//
// Only what the profile sends is produced: AES-128/256 in CBC mode
// (EnvelopedData) or GCM mode (AuthEnvelopedData; AES-192 on request), with
// the content-encryption key transported to each recipient with RSAES-OAEP
// (SHA-256 by default, or SHA-1) or RSA PKCS #1 v1.5. Decryption accepts
// every Accept row of the profile, which adds AES-192 and RSAES-OAEP with
// SHA-384 and SHA-512 and with MGF1-SHA-1 as Java senders produce it.
//
// Decrypt reads BER as well as DER: indefinite lengths and constructed
// (chunked) OCTET STRINGs, as written by streaming encoders such as
// "openssl cms -stream" and Java or .NET senders. To keep memory low for large
// messages, Decrypt works in place in the buffer it is given.
//
// The package uses only encoding/asn1, the crypto packages of the standard
// library and the profile's tables. Producing SignedData is not part of it
// (package smime signs).
package cms

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// ContentCipher is a content-encryption algorithm.
type ContentCipher int

// Content-encryption algorithms. The zero value is not a valid cipher;
// Encrypt callers choose AES128CBC unless configured otherwise.
const (
	AES128CBC ContentCipher = iota + 1 // default, EnvelopedData
	AES256CBC                          // EnvelopedData
	AES128GCM                          // AuthEnvelopedData
	AES256GCM                          // AuthEnvelopedData
)

// AES-192 is accepted by the Direct profile (AL-05) but never sent by hisp:
// Decrypt accepts it, and Encrypt can produce it for tests and tools, but no
// outbound profile chooses it.
const (
	AES192CBC ContentCipher = 5 // EnvelopedData
	AES192GCM ContentCipher = 6 // AuthEnvelopedData
)

// String returns the name of the cipher as used in configuration files and
// on the command line, for example "aes128-cbc".
func (c ContentCipher) String() string {
	switch c {
	case AES128CBC:
		return "aes128-cbc"
	case AES256CBC:
		return "aes256-cbc"
	case AES128GCM:
		return "aes128-gcm"
	case AES256GCM:
		return "aes256-gcm"
	case AES192CBC:
		return "aes192-cbc"
	case AES192GCM:
		return "aes192-gcm"
	}
	return fmt.Sprintf("ContentCipher(%d)", int(c))
}

// ParseContentCipher parses the names returned by String. It also accepts
// OpenSSL's spelling ("aes-128-cbc") and ignores case.
func ParseContentCipher(s string) (ContentCipher, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	name = strings.Replace(name, "aes-", "aes", 1)
	for c := AES128CBC; c <= AES192GCM; c++ {
		if c.String() == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("cms: unknown content cipher %q (want aes128-cbc, aes256-cbc, aes128-gcm or aes256-gcm)", s)
}

// keySize is the AES key length in bytes.
func (c ContentCipher) keySize() int {
	switch c {
	case AES128CBC, AES128GCM:
		return 16
	case AES192CBC, AES192GCM:
		return 24
	case AES256CBC, AES256GCM:
		return 32
	}
	return 0
}

// authenticated reports whether c is an AEAD cipher, carried in AuthEnvelopedData.
func (c ContentCipher) authenticated() bool {
	return c == AES128GCM || c == AES192GCM || c == AES256GCM
}

// KeyTransport is a key-transport algorithm: how the content-encryption key is
// encrypted to a recipient's RSA key.
type KeyTransport int

// Key-transport algorithms. The zero value in a Recipient means the package
// default, RSAOAEPSHA256.
const (
	RSAPKCS1v15           KeyTransport = iota + 1
	RSAOAEPSHA1                        // OAEP, SHA-1, MGF1-SHA1 (default OAEP params: parameters absent/empty)
	RSAOAEPSHA256                      // OAEP, SHA-256, MGF1-SHA256 (explicit RSAES-OAEP-params)
	RSAOAEPSHA256MGF1SHA1              // decrypt only: what Java senders produce; Encrypt refuses it
	RSAOAEPSHA384                      // decrypt only: OAEP, SHA-384, MGF1-SHA-384
	RSAOAEPSHA512                      // decrypt only: OAEP, SHA-512, MGF1-SHA-512
	RSAOAEPSHA384MGF1SHA1              // decrypt only: OAEP, SHA-384, MGF1-SHA-1 (Java's default MGF)
	RSAOAEPSHA512MGF1SHA1              // decrypt only: OAEP, SHA-512, MGF1-SHA-1 (Java's default MGF)
)

// DefaultKeyTransport is used for a Recipient whose KeyTransport is zero:
// the Default row of the profile's KeyTransports (RSA-OAEP with SHA-256).
var DefaultKeyTransport = defaultKeyTransport()

func defaultKeyTransport() KeyTransport {
	for _, r := range directprofile.KeyTransports {
		if r.Send == directprofile.Default {
			return keyTransportByRow(r)
		}
	}
	return 0
}

// String returns the name of the key transport, for example "rsa-oaep-sha256".
func (k KeyTransport) String() string {
	switch k {
	case RSAPKCS1v15:
		return "rsa-pkcs1v15"
	case RSAOAEPSHA1:
		return "rsa-oaep-sha1"
	case RSAOAEPSHA256:
		return "rsa-oaep-sha256"
	case RSAOAEPSHA256MGF1SHA1:
		return "rsa-oaep-sha256-mgf1-sha1"
	case RSAOAEPSHA384:
		return "rsa-oaep-sha384"
	case RSAOAEPSHA512:
		return "rsa-oaep-sha512"
	case RSAOAEPSHA384MGF1SHA1:
		return "rsa-oaep-sha384-mgf1-sha1"
	case RSAOAEPSHA512MGF1SHA1:
		return "rsa-oaep-sha512-mgf1-sha1"
	}
	return fmt.Sprintf("KeyTransport(%d)", int(k))
}

// ParseKeyTransport parses the names returned by String, ignoring case.
func ParseKeyTransport(s string) (KeyTransport, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for k := RSAPKCS1v15; k <= RSAOAEPSHA512MGF1SHA1; k++ {
		if k.String() == name {
			return k, nil
		}
	}
	return 0, fmt.Errorf("cms: unknown key transport %q (want rsa-pkcs1v15, rsa-oaep-sha1 or rsa-oaep-sha256)", s)
}

// MinRSABits is the smallest RSA modulus accepted, for recipients on
// Encrypt, our own keys on Decrypt and signers: the profile's (AL-10).
const MinRSABits = directprofile.MinRSABits

// Recipient is one certificate to encrypt the content-encryption key to.
type Recipient struct {
	Cert *x509.Certificate
	// KeyTransport is the key-transport algorithm for this recipient; zero
	// means the package default, RSAOAEPSHA256. RSAOAEPSHA256MGF1SHA1 is
	// refused.
	KeyTransport KeyTransport
	// UseSKI identifies the recipient by SubjectKeyIdentifier
	// (RecipientIdentifier [0]) instead of issuerAndSerialNumber. The
	// certificate must then carry a subject key identifier.
	UseSKI bool
}
