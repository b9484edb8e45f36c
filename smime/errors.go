package smime

import "errors"

// Errors Open returns, one per reason a Direct message is refused. They are
// wrapped with detail; test them with errors.Is. Algorithm and key refusals
// from package cms are wrapped in ErrWeakCipher, ErrWeakKeyTransport, ErrWeakKey,
// ErrNoRecipient and ErrDecryption so callers need only this package.
var (
	// ErrNotEncrypted: the message is not application/pkcs7-mime
	// enveloped-data (IN-01: unencrypted mail is refused).
	ErrNotEncrypted = errors.New("message is not encrypted")
	// ErrNotSigned: the decrypted entity carries no signature (IN-01).
	ErrNotSigned = errors.New("message is not signed")
	// ErrMalformed: the MIME structure or CMS encoding is broken.
	ErrMalformed = errors.New("malformed message")
	// ErrNoRecipient: none of our keys is a recipient of the message.
	ErrNoRecipient = errors.New("message is not encrypted to any of our certificates")
	// ErrDecryption: a recipient matched but the content did not decrypt
	// (wrong key, tampered ciphertext, failed authentication).
	ErrDecryption = errors.New("message does not decrypt")
	// ErrWeakCipher: content encryption with 3DES, DES, RC2 or an unknown
	// algorithm (Algorithms table).
	ErrWeakCipher = errors.New("content encryption algorithm refused")
	// ErrWeakKeyTransport: the content key was sent to us with a key
	// transport the Direct profile does not accept (RSAES-OAEP with an
	// unlisted hash pair, an unknown algorithm).
	ErrWeakKeyTransport = errors.New("key transport algorithm refused")
	// ErrWeakDigest: a signature made with SHA-1, MD5 or an unknown digest.
	ErrWeakDigest = errors.New("signature digest algorithm refused")
	// ErrWeakSignature: a signature algorithm the Direct profile refuses or
	// hisp does not know (SHA-1 with RSA, DSA, RSASSA-PSS with an MGF1 hash
	// other than its hash).
	ErrWeakSignature = errors.New("signature algorithm refused")
	// ErrWeakKey: a key the Direct profile refuses: an RSA key under
	// directprofile.MinRSABits, an ECDSA curve or a key type it does not
	// accept.
	ErrWeakKey = errors.New("key refused")
	// ErrDigestMismatch: the signed content does not match the signature's
	// message digest: the content was altered (TV-08).
	ErrDigestMismatch = errors.New("signed content was altered (digest mismatch)")
	// ErrBadSignature: the signature value does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrSignerCertMissing: a SignerInfo names a certificate the message
	// does not carry (MF-02).
	ErrSignerCertMissing = errors.New("signer certificate is not in the message")
)
