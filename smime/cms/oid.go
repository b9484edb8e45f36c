package cms

import (
	"crypto"
	"encoding/asn1"
)

// Content types (RFC 5652 section 4 and 6, RFC 5083 section 1).
var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
)

// Key transport (RFC 8017 appendix A, RFC 4055 section 4) and the hashes of
// RSAES-OAEP-params (RFC 4055 section 2.1).
var (
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidSHA1          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

// Content encryption: AES-CBC (RFC 3565 section 4.1) and AES-GCM (RFC 5084
// section 3.2).
var (
	oidAES128CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128GCM = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES192GCM = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}
	oidAES256GCM = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
)

// cipherOID returns the algorithm identifier of c.
func (c ContentCipher) oid() asn1.ObjectIdentifier {
	switch c {
	case AES128CBC:
		return oidAES128CBC
	case AES192CBC:
		return oidAES192CBC
	case AES256CBC:
		return oidAES256CBC
	case AES128GCM:
		return oidAES128GCM
	case AES192GCM:
		return oidAES192GCM
	case AES256GCM:
		return oidAES256GCM
	}
	return nil
}

// cipherByOID returns the supported content cipher with the given OID, or 0.
func cipherByOID(oid asn1.ObjectIdentifier) ContentCipher {
	for c := AES128CBC; c <= AES192GCM; c++ {
		if oid.Equal(c.oid()) {
			return c
		}
	}
	return 0
}

// algorithmName is one entry of the table of algorithms we can name in errors.
type algorithmName struct {
	oid     asn1.ObjectIdentifier
	name    string
	refused bool
}

// knownAlgorithms names algorithms we do not implement, so that errors say
// what was found. The refused ones are those the Direct profile forbids
// (Algorithms table: 3DES-CBC MUST NOT send, reject by default; DES and RC2
// are weaker still).
func knownAlgorithms() []algorithmName {
	return []algorithmName{
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}, "3DES-CBC", true},
		{asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}, "DES-CBC", true},
		{asn1.ObjectIdentifier{1, 3, 14, 3, 2, 6}, "DES-ECB", true},
		{asn1.ObjectIdentifier{1, 3, 14, 3, 2, 17}, "DES-EDE", true},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}, "RC2-CBC", true},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 4}, "RC4", true},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 9}, "RC5-CBC", true},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 6}, "3DES key wrap", true},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 7}, "RC2 key wrap", true},
		{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 7}, "AES-128-CCM", false},
		{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 27}, "AES-192-CCM", false},
		{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 47}, "AES-256-CCM", false},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 18}, "ChaCha20-Poly1305", false},
		{asn1.ObjectIdentifier{1, 2, 410, 200004, 1, 4}, "SEED-CBC", false},
		{asn1.ObjectIdentifier{1, 2, 392, 200011, 61, 1, 1, 1, 2}, "Camellia-128-CBC", false},
		{asn1.ObjectIdentifier{1, 2, 392, 200011, 61, 1, 1, 1, 4}, "Camellia-256-CBC", false},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}, "RSASSA-PSS", false},
		{asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}, "EC public key", false},
		{asn1.ObjectIdentifier{1, 3, 101, 110}, "X25519", false},
		{asn1.ObjectIdentifier{1, 3, 101, 111}, "X448", false},
	}
}

// lookupAlgorithm returns the table entry for oid.
func lookupAlgorithm(oid asn1.ObjectIdentifier) (algorithmName, bool) {
	for _, a := range knownAlgorithms() {
		if a.oid.Equal(oid) {
			return a, true
		}
	}
	return algorithmName{}, false
}

func isRefusedOID(oid asn1.ObjectIdentifier) bool {
	a, ok := lookupAlgorithm(oid)
	return ok && a.refused
}

// unsupported returns the error for an algorithm in role that we do not
// implement.
func unsupported(role string, oid asn1.ObjectIdentifier) *UnsupportedAlgorithmError {
	a, _ := lookupAlgorithm(oid)
	return &UnsupportedAlgorithmError{Role: role, OID: oid, Name: a.name}
}

// oaepProfile is the Direct algorithm profile for RSAES-OAEP key transport
// (Algorithms table): each hash and MGF1 hash pair hisp accepts on
// decryption, and whether Encrypt may produce it. A pair not listed is
// refused with an UnsupportedAlgorithmError of RoleKeyTransport. hisp sends
// OAEP with SHA-1 or SHA-256 only; it accepts SHA-384 and SHA-512 too, which
// the Direct Project's Java reference implementation can be set to send,
// each also with MGF1-SHA-1, the default MGF of Java's OAEP padding.
var oaepProfile = []struct {
	kt        KeyTransport
	hash, mgf crypto.Hash
	send      bool
}{
	{RSAOAEPSHA1, crypto.SHA1, crypto.SHA1, true},
	{RSAOAEPSHA256, crypto.SHA256, crypto.SHA256, true},
	{RSAOAEPSHA256MGF1SHA1, crypto.SHA256, crypto.SHA1, false},
	{RSAOAEPSHA384, crypto.SHA384, crypto.SHA384, false},
	{RSAOAEPSHA512, crypto.SHA512, crypto.SHA512, false},
	{RSAOAEPSHA384MGF1SHA1, crypto.SHA384, crypto.SHA1, false},
	{RSAOAEPSHA512MGF1SHA1, crypto.SHA512, crypto.SHA1, false},
}

// oaepAccepted returns the key transport of an accepted OAEP hash pair.
func oaepAccepted(hash, mgf crypto.Hash) (KeyTransport, bool) {
	for _, e := range oaepProfile {
		if e.hash == hash && e.mgf == mgf {
			return e.kt, true
		}
	}
	return 0, false
}

// oaepSendable reports whether kt is an OAEP variant of the profile
// (oaep) and whether Encrypt may produce it (send).
func oaepSendable(kt KeyTransport) (send, oaep bool) {
	for _, e := range oaepProfile {
		if e.kt == kt {
			return e.send, true
		}
	}
	return false, false
}

// hashByOID maps the hash algorithms allowed in RSAES-OAEP-params.
func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	switch {
	case oid.Equal(oidSHA1):
		return crypto.SHA1, true
	case oid.Equal(oidSHA256):
		return crypto.SHA256, true
	case oid.Equal(oidSHA384):
		return crypto.SHA384, true
	case oid.Equal(oidSHA512):
		return crypto.SHA512, true
	}
	return 0, false
}

// SignedData (RFC 5652 section 5): the signed attributes it needs, and the
// digest and signature algorithms (RFC 5754, RFC 4055, RFC 5753).
var (
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidMD5               = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	oidRSASSAPSS         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidSHA1WithRSA       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidMD5WithRSA        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}
	oidSHA256WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECPublicKey       = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidECDSAWithSHA1     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSAWithSHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidDSAWithSHA1       = asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 3}
	oidSHA224            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}
	oidSHA224WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 14}
	oidECDSAWithSHA224   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 1}
)

// signatureDigests is the Direct profile for the digest of a signature
// (Algorithms table): SHA-256 (sent), SHA-384 and SHA-512 accepted; SHA-1,
// MD5 and SHA-224 refused. A digest not listed is unsupported.
var signatureDigests = []struct {
	oid     asn1.ObjectIdentifier
	hash    crypto.Hash
	name    string
	refused bool
}{
	{oidSHA256, crypto.SHA256, "sha256", false},
	{oidSHA384, crypto.SHA384, "sha384", false},
	{oidSHA512, crypto.SHA512, "sha512", false},
	{oidSHA1, crypto.SHA1, "sha1", true},
	{oidMD5, crypto.MD5, "md5", true},
	{oidSHA224, crypto.SHA224, "sha224", true},
}

// isRefusedSignatureOID reports whether oid is a digest or signature
// algorithm the profile refuses (rather than one it does not know).
func isRefusedSignatureOID(oid asn1.ObjectIdentifier) bool {
	for _, d := range signatureDigests {
		if d.refused && d.oid.Equal(oid) {
			return true
		}
	}
	for _, a := range signatureAlgorithms {
		if a.refused && a.oid.Equal(oid) {
			return true
		}
	}
	return false
}

// signatureKind is how a signature value is checked.
type signatureKind int

const (
	sigPKCS1v15 signatureKind = iota + 1 // RSASSA-PKCS1-v1_5
	sigPSS                               // RSASSA-PSS, parameters in the AlgorithmIdentifier
	sigECDSA
)

// signatureAlgorithms is the Direct profile for signature algorithms: RSA
// with PKCS #1 v1.5 or PSS padding, and ECDSA, each with an accepted
// digest. hash is the digest the algorithm names, 0 when it takes the
// SignerInfo's digestAlgorithm (rsaEncryption, id-ecPublicKey as some
// senders write it) or its parameters (PSS). A refused entry names a weak
// hash; an algorithm not listed is unsupported.
var signatureAlgorithms = []struct {
	oid     asn1.ObjectIdentifier
	kind    signatureKind
	hash    crypto.Hash
	name    string
	refused bool
}{
	{oidRSAEncryption, sigPKCS1v15, 0, "RSA", false},
	{oidSHA256WithRSA, sigPKCS1v15, crypto.SHA256, "SHA256-RSA", false},
	{oidSHA384WithRSA, sigPKCS1v15, crypto.SHA384, "SHA384-RSA", false},
	{oidSHA512WithRSA, sigPKCS1v15, crypto.SHA512, "SHA512-RSA", false},
	{oidRSASSAPSS, sigPSS, 0, "RSASSA-PSS", false},
	{oidECPublicKey, sigECDSA, 0, "ECDSA", false},
	{oidECDSAWithSHA256, sigECDSA, crypto.SHA256, "ECDSA-SHA256", false},
	{oidECDSAWithSHA384, sigECDSA, crypto.SHA384, "ECDSA-SHA384", false},
	{oidECDSAWithSHA512, sigECDSA, crypto.SHA512, "ECDSA-SHA512", false},
	{oidSHA1WithRSA, sigPKCS1v15, crypto.SHA1, "SHA1-RSA", true},
	{oidMD5WithRSA, sigPKCS1v15, crypto.MD5, "MD5-RSA", true},
	{oidSHA224WithRSA, sigPKCS1v15, crypto.SHA224, "SHA224-RSA", true},
	{oidECDSAWithSHA1, sigECDSA, crypto.SHA1, "ECDSA-SHA1", true},
	{oidECDSAWithSHA224, sigECDSA, crypto.SHA224, "ECDSA-SHA224", true},
	{oidDSAWithSHA1, 0, crypto.SHA1, "DSA-SHA1", true},
}
