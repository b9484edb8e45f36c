// Package directprofile is the Direct algorithm profile: every digest,
// content cipher, key transport, signature algorithm, key type and curve
// hisp meets, whether hisp accepts or refuses it on receipt, whether hisp
// sends it, and the requirement it comes from (the ids are defined in
// docs/requirements.md, section Algorithms).
//
// This file is the answer to "which algorithms does hisp refuse": the
// tables below. Every check in hisp asks them, through the functions of
// check.go: decryption and encryption (smime/cms), signature verification
// (smime/cms, smime), sealing (smime), outbound profiles (smime), trust
// paths, CRLs, OCSP responses and trust bundles (trust), and certificate
// import (cmd/hisp). An algorithm in no table is refused as unknown.
//
// The tables are read-only: nothing may change them at run time; a change
// of the profile is a change of this file, with its proof in
// profile_test.go.
//
// Three verdicts: Accept (allowed and implemented), Refuse (known and
// forbidden by the profile: errors say "refused by the Direct profile"),
// Unsupported (known by name so that errors say what was found, but not
// implemented; refused as "not supported").
package directprofile

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
)

// MinRSABits is the smallest RSA modulus accepted anywhere: signers,
// recipients, our own keys, every certificate of a trust path (AL-10).
const MinRSABits = 2048

// Digests of signatures: a SignerInfo's digestAlgorithm, the micalg of
// multipart/signed, a trust bundle's signature.
var Digests = []Digest{
	// {name, verdict, send, rule, hash, OID}
	{"sha256", Accept, Default, "AL-01", crypto.SHA256, oid(2, 16, 840, 1, 101, 3, 4, 2, 1)},
	{"sha384", Accept, Optional, "AL-01", crypto.SHA384, oid(2, 16, 840, 1, 101, 3, 4, 2, 2)},
	{"sha512", Accept, Optional, "AL-01", crypto.SHA512, oid(2, 16, 840, 1, 101, 3, 4, 2, 3)},
	{"sha1", Refuse, Never, "AL-02", crypto.SHA1, oid(1, 3, 14, 3, 2, 26)},
	{"md5", Refuse, Never, "AL-03", crypto.MD5, oid(1, 2, 840, 113549, 2, 5)},
	{"sha224", Refuse, Never, "AL-03", crypto.SHA224, oid(2, 16, 840, 1, 101, 3, 4, 2, 4)},
}

// Ciphers of the content (EnvelopedData, AuthEnvelopedData).
var Ciphers = []Cipher{
	// {name, verdict, send, rule, key bytes, OID}
	{"aes128-cbc", Accept, Default, "AL-05", 16, oid(2, 16, 840, 1, 101, 3, 4, 1, 2)},
	{"aes256-cbc", Accept, Optional, "AL-05", 32, oid(2, 16, 840, 1, 101, 3, 4, 1, 42)},
	{"aes192-cbc", Accept, Never, "AL-05", 24, oid(2, 16, 840, 1, 101, 3, 4, 1, 22)},
	{"aes128-gcm", Accept, Optional, "AL-06", 16, oid(2, 16, 840, 1, 101, 3, 4, 1, 6)},
	{"aes256-gcm", Accept, Optional, "AL-06", 32, oid(2, 16, 840, 1, 101, 3, 4, 1, 46)},
	{"aes192-gcm", Accept, Never, "AL-06", 24, oid(2, 16, 840, 1, 101, 3, 4, 1, 26)},
	{"3DES-CBC", Refuse, Never, "AL-07", 0, oid(1, 2, 840, 113549, 3, 7)},
	{"DES-CBC", Refuse, Never, "AL-07", 0, oid(1, 3, 14, 3, 2, 7)},
	{"DES-ECB", Refuse, Never, "AL-07", 0, oid(1, 3, 14, 3, 2, 6)},
	{"DES-EDE", Refuse, Never, "AL-07", 0, oid(1, 3, 14, 3, 2, 17)},
	{"RC2-CBC", Refuse, Never, "AL-07", 0, oid(1, 2, 840, 113549, 3, 2)},
	{"RC4", Refuse, Never, "AL-07", 0, oid(1, 2, 840, 113549, 3, 4)},
	{"RC5-CBC", Refuse, Never, "AL-07", 0, oid(1, 2, 840, 113549, 3, 9)},
	{"3DES key wrap", Refuse, Never, "AL-07", 0, oid(1, 2, 840, 113549, 1, 9, 16, 3, 6)},
	{"RC2 key wrap", Refuse, Never, "AL-07", 0, oid(1, 2, 840, 113549, 1, 9, 16, 3, 7)},
	{"AES-128-CCM", Unsupported, Never, "AL-05", 0, oid(2, 16, 840, 1, 101, 3, 4, 1, 7)},
	{"AES-192-CCM", Unsupported, Never, "AL-05", 0, oid(2, 16, 840, 1, 101, 3, 4, 1, 27)},
	{"AES-256-CCM", Unsupported, Never, "AL-05", 0, oid(2, 16, 840, 1, 101, 3, 4, 1, 47)},
	{"ChaCha20-Poly1305", Unsupported, Never, "AL-05", 0, oid(1, 2, 840, 113549, 1, 9, 16, 3, 18)},
	{"SEED-CBC", Unsupported, Never, "AL-05", 0, oid(1, 2, 410, 200004, 1, 4)},
	{"Camellia-128-CBC", Unsupported, Never, "AL-05", 0, oid(1, 2, 392, 200011, 61, 1, 1, 1, 2)},
	{"Camellia-256-CBC", Unsupported, Never, "AL-05", 0, oid(1, 2, 392, 200011, 61, 1, 1, 1, 4)},
}

// KeyTransports carry the content-encryption key to an RSA recipient.
// RSAES-OAEP rows share one OID and differ in their parameters (hash and
// MGF1 hash); a pair not listed is not supported. hisp accepts SHA-384 and
// SHA-512 too, which the Direct Project's Java reference implementation can
// be set to send, each also with MGF1-SHA-1, the default MGF of Java's
// OAEP padding.
var KeyTransports = []KeyTransport{
	// {name, verdict, send, rule, OAEP hash, MGF1 hash, OID}
	{"rsa-oaep-sha256", Accept, Default, "AL-09", crypto.SHA256, crypto.SHA256, oidRSAESOAEP},
	{"rsa-oaep-sha1", Accept, Optional, "AL-09", crypto.SHA1, crypto.SHA1, oidRSAESOAEP},
	{"rsa-pkcs1v15", Accept, Optional, "AL-08", 0, 0, oidRSAEncryption},
	{"rsa-oaep-sha256-mgf1-sha1", Accept, Never, "AL-09", crypto.SHA256, crypto.SHA1, oidRSAESOAEP},
	{"rsa-oaep-sha384", Accept, Never, "AL-09", crypto.SHA384, crypto.SHA384, oidRSAESOAEP},
	{"rsa-oaep-sha512", Accept, Never, "AL-09", crypto.SHA512, crypto.SHA512, oidRSAESOAEP},
	{"rsa-oaep-sha384-mgf1-sha1", Accept, Never, "AL-09", crypto.SHA384, crypto.SHA1, oidRSAESOAEP},
	{"rsa-oaep-sha512-mgf1-sha1", Accept, Never, "AL-09", crypto.SHA512, crypto.SHA1, oidRSAESOAEP},
}

// Signatures of messages (a SignerInfo's signatureAlgorithm) and of
// certificates, CRLs and OCSP responses (X509). RSASSA-PSS rows share one
// OID: the hash is in its parameters, and must be the digest's, with MGF1
// of the same hash. The rows "RSA" and "ECDSA" are the key's algorithm
// written where the signature algorithm goes, as many senders do: the hash
// is then the SignerInfo's digest (Hash 0). hisp signs with SHA256-RSA, or
// ECDSA-SHA256 when its key is ECDSA; SHA-384 and SHA-512 when an outbound
// profile says so.
var Signatures = []Signature{
	// {name, verdict, send, rule, scheme, hash, X.509 name (certificates, CRLs, OCSP), OID}
	{"SHA256-RSA", Accept, Default, "AL-04", PKCS1v15, crypto.SHA256, x509.SHA256WithRSA, oid(1, 2, 840, 113549, 1, 1, 11)},
	{"SHA384-RSA", Accept, Optional, "AL-04", PKCS1v15, crypto.SHA384, x509.SHA384WithRSA, oid(1, 2, 840, 113549, 1, 1, 12)},
	{"SHA512-RSA", Accept, Optional, "AL-04", PKCS1v15, crypto.SHA512, x509.SHA512WithRSA, oid(1, 2, 840, 113549, 1, 1, 13)},
	{"RSA", Accept, Never, "AL-04", PKCS1v15, 0, x509.UnknownSignatureAlgorithm, oidRSAEncryption},
	{"SHA256-RSAPSS", Accept, Never, "AL-04", PSS, crypto.SHA256, x509.SHA256WithRSAPSS, oidRSASSAPSS},
	{"SHA384-RSAPSS", Accept, Never, "AL-04", PSS, crypto.SHA384, x509.SHA384WithRSAPSS, oidRSASSAPSS},
	{"SHA512-RSAPSS", Accept, Never, "AL-04", PSS, crypto.SHA512, x509.SHA512WithRSAPSS, oidRSASSAPSS},
	{"ECDSA-SHA256", Accept, Default, "AL-04", ECDSA, crypto.SHA256, x509.ECDSAWithSHA256, oid(1, 2, 840, 10045, 4, 3, 2)},
	{"ECDSA-SHA384", Accept, Optional, "AL-04", ECDSA, crypto.SHA384, x509.ECDSAWithSHA384, oid(1, 2, 840, 10045, 4, 3, 3)},
	{"ECDSA-SHA512", Accept, Optional, "AL-04", ECDSA, crypto.SHA512, x509.ECDSAWithSHA512, oid(1, 2, 840, 10045, 4, 3, 4)},
	{"ECDSA", Accept, Never, "AL-04", ECDSA, 0, x509.UnknownSignatureAlgorithm, oidECPublicKey},
	{"SHA1-RSA", Refuse, Never, "AL-02", PKCS1v15, crypto.SHA1, x509.SHA1WithRSA, oid(1, 2, 840, 113549, 1, 1, 5)},
	{"MD5-RSA", Refuse, Never, "AL-03", PKCS1v15, crypto.MD5, x509.MD5WithRSA, oid(1, 2, 840, 113549, 1, 1, 4)},
	{"MD2-RSA", Refuse, Never, "AL-03", PKCS1v15, 0, x509.MD2WithRSA, oid(1, 2, 840, 113549, 1, 1, 2)},
	{"SHA224-RSA", Refuse, Never, "AL-03", PKCS1v15, crypto.SHA224, x509.UnknownSignatureAlgorithm, oid(1, 2, 840, 113549, 1, 1, 14)},
	{"ECDSA-SHA1", Refuse, Never, "AL-02", ECDSA, crypto.SHA1, x509.ECDSAWithSHA1, oid(1, 2, 840, 10045, 4, 1)},
	{"ECDSA-SHA224", Refuse, Never, "AL-03", ECDSA, crypto.SHA224, x509.UnknownSignatureAlgorithm, oid(1, 2, 840, 10045, 4, 3, 1)},
	{"DSA-SHA1", Refuse, Never, "AL-02", DSA, crypto.SHA1, x509.DSAWithSHA1, oid(1, 2, 840, 10040, 4, 3)},
	{"DSA-SHA256", Refuse, Never, "AL-12", DSA, crypto.SHA256, x509.DSAWithSHA256, oid(2, 16, 840, 1, 101, 3, 4, 3, 2)},
	{"Ed25519", Unsupported, Never, "AL-12", 0, 0, x509.PureEd25519, oid(1, 3, 101, 112)},
}

// Keys are the public key types of certificates. Sign: usable for a
// signature; Encrypt: usable as a key-transport recipient. hisp's own keys
// (hisp cert issue, the development CA) are RSA of MinRSABits bits.
var Keys = []Key{
	// {name, verdict, send, rule, signs, encrypts, minimum bits (ECDSA: see Curves), SPKI OID}
	{"RSA", Accept, Default, "AL-10", true, true, MinRSABits, oidRSAEncryption},
	{"ECDSA", Accept, Optional, "AL-11", true, false, 0, oidECPublicKey},
	{"RSASSA-PSS", Unsupported, Never, "AL-12", false, false, 0, oidRSASSAPSS},
	{"Ed25519", Unsupported, Never, "AL-12", false, false, 0, oid(1, 3, 101, 112)},
	{"X25519", Unsupported, Never, "AL-12", false, false, 0, oid(1, 3, 101, 110)},
	{"X448", Unsupported, Never, "AL-12", false, false, 0, oid(1, 3, 101, 111)},
	{"DSA", Refuse, Never, "AL-12", false, false, 0, oid(1, 2, 840, 10040, 4, 1)},
}

// Curves of ECDSA keys. Send: hisp's own ECDSA key, when an operator
// imports one, may be on either accepted curve.
var Curves = []Curve{
	// {name, verdict, send, rule, curve}
	{"P-256", Accept, Optional, "AL-11", elliptic.P256()},
	{"P-384", Accept, Optional, "AL-11", elliptic.P384()},
	{"P-224", Refuse, Never, "AL-11", elliptic.P224()},
	{"P-521", Refuse, Never, "AL-11", elliptic.P521()},
}

// Object identifiers that several rows share.
var (
	oidRSAEncryption = oid(1, 2, 840, 113549, 1, 1, 1)  // RFC 8017 appendix A
	oidRSAESOAEP     = oid(1, 2, 840, 113549, 1, 1, 7)  // RFC 4055 section 4
	oidRSASSAPSS     = oid(1, 2, 840, 113549, 1, 1, 10) // RFC 4055 section 3
	oidECPublicKey   = oid(1, 2, 840, 10045, 2, 1)      // RFC 5480 section 2.1.1
)

func oid(arcs ...int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier(arcs) }
