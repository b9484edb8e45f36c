package cms

import (
	"crypto"
	"encoding/asn1"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// Content types (RFC 5652 section 4 and 6, RFC 5083 section 1).
var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}
)

// Structure of RSAES-OAEP-params and RSASSA-PSS-params (RFC 4055 sections
// 2.1 and 4.1). The algorithms themselves, with their identifiers and
// whether the Direct profile accepts them, are in package directprofile.
var (
	oidMGF1       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
)

// Algorithm identifiers cms writes or names in its errors, taken from the
// tables of the Direct profile (package directprofile), where each is
// defined once.
var (
	oidRSAEncryption = keyTransportOID("rsa-pkcs1v15")
	oidRSAESOAEP     = keyTransportOID("rsa-oaep-sha256")
	oidSHA1          = digestOID("sha1")
	oidSHA256        = digestOID("sha256")
	oidSHA384        = digestOID("sha384")
	oidSHA512        = digestOID("sha512")
	oidAES128CBC     = AES128CBC.oid()
	oidRSASSAPSS     = signatureOID("SHA256-RSAPSS")
)

func signatureOID(name string) asn1.ObjectIdentifier {
	for _, s := range directprofile.Signatures {
		if s.Name == name {
			return s.OID
		}
	}
	return nil
}

func keyTransportOID(name string) asn1.ObjectIdentifier {
	k, _ := directprofile.KeyTransportByName(name)
	return k.OID
}

func digestOID(name string) asn1.ObjectIdentifier {
	d, _ := directprofile.DigestByName(name)
	return d.OID
}

// oid returns the algorithm identifier of c, from the profile's row of the
// same name.
func (c ContentCipher) oid() asn1.ObjectIdentifier {
	row, ok := directprofile.CipherByName(c.String())
	if !ok {
		return nil
	}
	return row.OID
}

// cipherByOID returns the content cipher with the given OID when the
// profile accepts it, or 0.
func cipherByOID(oid asn1.ObjectIdentifier) ContentCipher {
	row, ok := directprofile.CipherByOID(oid)
	if !ok || row.Verdict != directprofile.Accept {
		return 0
	}
	for c := AES128CBC; c <= AES192GCM; c++ {
		if c.String() == row.Name {
			return c
		}
	}
	return 0
}

// keyTransportRow returns the profile's row for kt.
func keyTransportRow(kt KeyTransport) (directprofile.KeyTransport, bool) {
	return directprofile.KeyTransportByName(kt.String())
}

// keyTransportByRow returns the KeyTransport named by a profile row.
func keyTransportByRow(row directprofile.KeyTransport) KeyTransport {
	for k := RSAPKCS1v15; k <= RSAOAEPSHA512MGF1SHA1; k++ {
		if k.String() == row.Name {
			return k
		}
	}
	return 0
}

// hashByOID maps the hash algorithms that RSAES-OAEP-params and
// RSASSA-PSS-params may name to crypto.Hash; whether the profile accepts
// the result is decided by its caller's table (KeyTransports, Signatures).
func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	d, ok := directprofile.DigestByOID(oid)
	return d.Hash, ok
}

// SignedData (RFC 5652 section 5): the signed attributes it needs.
var (
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
)

// unsupported returns the error for an algorithm in role that the profile
// does not accept, named from the profile's tables.
func unsupported(role string, oid asn1.ObjectIdentifier) *UnsupportedAlgorithmError {
	return &UnsupportedAlgorithmError{Role: role, OID: oid, Name: directprofile.Name(oid)}
}
