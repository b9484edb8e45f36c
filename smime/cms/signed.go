package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// SignedData verification (RFC 5652 section 5), for the signatures of
// received Direct messages. It reads what smallstep/pkcs7 does not: signers
// identified by subject key identifier (SignerInfo version 3) and RSASSA-PSS
// signatures (RFC 4055), besides issuer and serial number with RSA PKCS #1
// v1.5 and ECDSA; and BER as streaming encoders write it. Which digests and
// signature algorithms are accepted is the Digests and Signatures tables
// of package directprofile. Producing SignedData is not part of this
// package.

// Errors of SignerInfo.Verify besides ErrWeakKey and
// *UnsupportedAlgorithmError (roles RoleDigest and RoleSignature).
var (
	// ErrDigestMismatch means the content does not hash to the signed
	// message-digest attribute: the content was altered.
	ErrDigestMismatch = errors.New("cms: the content does not match the signed message digest")
	// ErrBadSignature means the signature value does not verify with the
	// signer's public key.
	ErrBadSignature = errors.New("cms: the signature does not verify")
)

// SignedData is a parsed CMS SignedData.
type SignedData struct {
	// ContentType is the eContentType, normally id-data.
	ContentType asn1.ObjectIdentifier
	// Content is the encapsulated content; nil when the signature is
	// detached (multipart/signed), where the caller has the content.
	Content []byte
	// Certificates are those the SignedData carries: the signers' and
	// any intermediates.
	Certificates []*x509.Certificate
	Signers      []SignerInfo
}

// SignerInfo is one signature of a SignedData.
type SignerInfo struct {
	Version int
	// The signer: by issuer and serial number (Issuer is the DER of the
	// issuer Name), or by SubjectKeyID.
	Issuer       []byte
	SerialNumber *big.Int
	SubjectKeyID []byte

	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte

	signedAttrs   []byte // DER with the SET OF tag, as signed; nil if absent
	contentType   asn1.ObjectIdentifier
	messageDigest []byte
	// SigningTime is the signing-time attribute; zero when absent.
	SigningTime time.Time
}

// Identifier describes how the SignerInfo names its signer, for messages.
func (si *SignerInfo) Identifier() string {
	if si.Issuer == nil {
		return fmt.Sprintf("subject key identifier %x", si.SubjectKeyID)
	}
	var name pkix.RDNSequence
	issuer := "an unreadable issuer"
	if _, err := asn1.Unmarshal(si.Issuer, &name); err == nil {
		issuer = name.String()
	}
	return fmt.Sprintf("serial %s of %s", si.SerialNumber, issuer)
}

// ParseSignedData reads a BER or DER ContentInfo holding SignedData. It
// does not verify anything; see SignerCertificate and SignerInfo.Verify.
// der is not modified, and the result does not share storage with it.
func ParseSignedData(der []byte) (*SignedData, error) {
	b := bytes.Clone(der) // the content is compacted in place
	contentType, content, err := parseContentInfo(b, true)
	if err != nil {
		return nil, err
	}
	if !contentType.Equal(oidSignedData) {
		return nil, malformed("content type %s is not signed-data", contentType)
	}
	fields, err := berChildren(content, 3)
	if err != nil {
		return nil, err
	}
	next := func(class, tag int) (berElement, bool) { return takeField(&fields, class, tag) }

	if _, ok := next(asn1.ClassUniversal, asn1.TagInteger); !ok {
		return nil, malformed("SignedData version missing")
	}
	if _, ok := next(asn1.ClassUniversal, asn1.TagSet); !ok {
		return nil, malformed("SignedData digestAlgorithms missing")
	}
	eci, ok := next(asn1.ClassUniversal, asn1.TagSequence)
	if !ok || !eci.constructed {
		return nil, malformed("SignedData encapContentInfo missing")
	}
	sd := &SignedData{}
	if err := parseEncapContent(sd, eci); err != nil {
		return nil, err
	}
	if certs, ok := next(asn1.ClassContextSpecific, 0); ok {
		if sd.Certificates, err = parseCertificateSet(certs); err != nil {
			return nil, err
		}
	}
	next(asn1.ClassContextSpecific, 1) // crls: revocation is checked by package trust
	set, ok := next(asn1.ClassUniversal, asn1.TagSet)
	if !ok || !set.constructed {
		return nil, malformed("SignedData signerInfos missing")
	}
	if len(fields) != 0 {
		return nil, malformed("unexpected %s after signerInfos", fields[0].describe())
	}
	infos, err := berChildren(set, 4)
	if err != nil {
		return nil, err
	}
	for i, e := range infos {
		si, err := parseSignerInfo(e)
		if err != nil {
			return nil, inField(fmt.Sprintf("SignerInfo %d", i+1), err)
		}
		sd.Signers = append(sd.Signers, si)
	}
	return sd, nil
}

// parseEncapContent reads EncapsulatedContentInfo (RFC 5652 section 5.2).
func parseEncapContent(sd *SignedData, eci berElement) error {
	fields, err := berChildren(eci, 4)
	if err != nil {
		return err
	}
	if len(fields) < 1 || len(fields) > 2 {
		return malformed("encapContentInfo has %d fields, want 1 or 2", len(fields))
	}
	if err := unmarshalBER(fields[0].full, &sd.ContentType, "eContentType"); err != nil {
		return err
	}
	if len(fields) == 1 {
		return nil // detached
	}
	if !fields[1].is(asn1.ClassContextSpecific, 0) || !fields[1].constructed {
		return malformed("eContent is %s, want [0] EXPLICIT", fields[1].describe())
	}
	octets, err := berChildren(fields[1], 5)
	if err != nil {
		return err
	}
	if len(octets) != 1 {
		return malformed("eContent holds %d elements, want 1", len(octets))
	}
	o := octets[0]
	if !o.is(asn1.ClassUniversal, asn1.TagOctetString) {
		// PKCS #7 v1.5 senders may put the content itself (ANY) here.
		sd.Content = o.full
		return nil
	}
	if sd.Content, err = compactOctets(o, 6); err != nil {
		return inField("eContent", err)
	}
	if sd.Content == nil {
		sd.Content = []byte{}
	}
	return nil
}

// parseCertificateSet reads the certificates field: X.509 certificates;
// other choices (attribute certificates, other formats) are skipped.
func parseCertificateSet(set berElement) ([]*x509.Certificate, error) {
	children, err := berChildren(set, 4)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, c := range children {
		if !c.is(asn1.ClassUniversal, asn1.TagSequence) {
			continue
		}
		cert, err := x509.ParseCertificate(c.full)
		if err != nil {
			d, derr := toDER(c.full)
			if derr != nil {
				return nil, inField("certificate", derr)
			}
			if cert, err = x509.ParseCertificate(d); err != nil {
				return nil, malformed("certificate: %v", err)
			}
		}
		out = append(out, cert)
	}
	return out, nil
}

// attribute is an Attribute of signedAttrs (RFC 5652 section 5.3).
type attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue `asn1:"set"`
}

// parseSignerInfo reads one SignerInfo (RFC 5652 section 5.3).
func parseSignerInfo(e berElement) (SignerInfo, error) {
	var si SignerInfo
	if !e.is(asn1.ClassUniversal, asn1.TagSequence) || !e.constructed {
		return si, malformed("SignerInfo is %s, want SEQUENCE", e.describe())
	}
	fields, err := berChildren(e, 5)
	if err != nil {
		return si, err
	}
	next := func(class, tag int) (berElement, bool) { return takeField(&fields, class, tag) }
	v, ok := next(asn1.ClassUniversal, asn1.TagInteger)
	if !ok {
		return si, malformed("version missing")
	}
	if err := unmarshalBER(v.full, &si.Version, "version"); err != nil {
		return si, err
	}
	if len(fields) == 0 {
		return si, malformed("sid missing")
	}
	sid := fields[0]
	fields = fields[1:]
	switch {
	case sid.is(asn1.ClassUniversal, asn1.TagSequence):
		var ias issuerAndSerialNumber
		if err := unmarshalBER(sid.full, &ias, "issuerAndSerialNumber"); err != nil {
			return si, err
		}
		if ias.SerialNumber == nil {
			return si, malformed("issuerAndSerialNumber without a serial number")
		}
		si.Issuer, si.SerialNumber = ias.Issuer.FullBytes, ias.SerialNumber
	case sid.is(asn1.ClassContextSpecific, 0):
		si.SubjectKeyID = sid.content
		if sid.constructed {
			if si.SubjectKeyID, err = joinSegments(sid, asn1.TagOctetString, 6); err != nil {
				return si, inField("subjectKeyIdentifier", err)
			}
		}
		if len(si.SubjectKeyID) == 0 {
			return si, malformed("empty subjectKeyIdentifier")
		}
	default:
		return si, malformed("sid is %s", sid.describe())
	}
	d, ok := next(asn1.ClassUniversal, asn1.TagSequence)
	if !ok {
		return si, malformed("digestAlgorithm missing")
	}
	if err := unmarshalBER(d.full, &si.DigestAlgorithm, "digestAlgorithm"); err != nil {
		return si, err
	}
	if attrs, ok := next(asn1.ClassContextSpecific, 0); ok {
		if err := si.parseSignedAttrs(attrs); err != nil {
			return si, err
		}
	}
	sa, ok := next(asn1.ClassUniversal, asn1.TagSequence)
	if !ok {
		return si, malformed("signatureAlgorithm missing")
	}
	if err := unmarshalBER(sa.full, &si.SignatureAlgorithm, "signatureAlgorithm"); err != nil {
		return si, err
	}
	sig, ok := next(asn1.ClassUniversal, asn1.TagOctetString)
	if !ok {
		return si, malformed("signature missing")
	}
	si.Signature = sig.content
	if sig.constructed {
		if si.Signature, err = joinSegments(sig, asn1.TagOctetString, 6); err != nil {
			return si, inField("signature", err)
		}
	}
	next(asn1.ClassContextSpecific, 1) // unsignedAttrs
	if len(fields) != 0 {
		return si, malformed("unexpected %s after the signature", fields[0].describe())
	}
	return si, nil
}

// parseSignedAttrs keeps the DER the signature covers (the SET OF tag in
// place of [0] IMPLICIT, RFC 5652 section 5.4) and reads the content-type
// and message-digest attributes, each of which must appear once with one
// value.
func (si *SignerInfo) parseSignedAttrs(attrs berElement) error {
	if !attrs.constructed {
		return malformed("signedAttrs is primitive")
	}
	d, err := toDER(attrs.full)
	if err != nil {
		return inField("signedAttrs", err)
	}
	d[0] = 0x20 | asn1.TagSet
	var list []attribute
	rest, err := asn1.UnmarshalWithParams(d, &list, "set")
	if err != nil || len(rest) != 0 {
		return malformed("signedAttrs: %v", err)
	}
	si.signedAttrs = d
	seenCT, seenMD := false, false
	for _, a := range list {
		switch {
		case a.Type.Equal(oidAttrContentType):
			if seenCT || len(a.Values) != 1 {
				return malformed("content-type attribute repeated or with %d values", len(a.Values))
			}
			seenCT = true
			if _, err := asn1.Unmarshal(a.Values[0].FullBytes, &si.contentType); err != nil {
				return malformed("content-type attribute: %v", err)
			}
		case a.Type.Equal(oidAttrSigningTime):
			if len(a.Values) == 1 {
				// UTCTime or GeneralizedTime (RFC 5652 section 11.3).
				if _, err := asn1.Unmarshal(a.Values[0].FullBytes, &si.SigningTime); err != nil {
					return malformed("signing-time attribute: %v", err)
				}
			}
		case a.Type.Equal(oidAttrMessageDigest):
			if seenMD || len(a.Values) != 1 {
				return malformed("message-digest attribute repeated or with %d values", len(a.Values))
			}
			seenMD = true
			if _, err := asn1.Unmarshal(a.Values[0].FullBytes, &si.messageDigest); err != nil {
				return malformed("message-digest attribute: %v", err)
			}
		}
	}
	if !seenCT || !seenMD {
		return malformed("signedAttrs lack the content-type or message-digest attribute")
	}
	return nil
}

// SignerCertificate returns the certificate of sd that si names: by issuer
// (compared as encoded) and serial number, or by subject key identifier (the
// certificate's extension, or the SHA-1 of its public key when it has
// none). It returns nil when the SignedData does not carry it.
func (sd *SignedData) SignerCertificate(si *SignerInfo) *x509.Certificate {
	for _, c := range sd.Certificates {
		if si.Issuer != nil {
			if c.SerialNumber != nil && c.SerialNumber.Cmp(si.SerialNumber) == 0 && bytes.Equal(c.RawIssuer, si.Issuer) {
				return c
			}
			continue
		}
		if bytes.Equal(subjectKeyID(c), si.SubjectKeyID) {
			return c
		}
	}
	return nil
}

// Digest returns the hash of si's digestAlgorithm and its name ("sha256")
// when the Direct profile accepts it, else an *UnsupportedAlgorithmError of
// RoleDigest: refused (with the digest's name) for a Refuse row of
// directprofile.Digests such as SHA-1 and MD5, unsupported for a digest in
// no row.
func (si *SignerInfo) Digest() (crypto.Hash, string, error) {
	d, ok := directprofile.DigestByOID(si.DigestAlgorithm.Algorithm)
	if !ok {
		return 0, "", unsupported(RoleDigest, si.DigestAlgorithm.Algorithm)
	}
	if d.Verdict != directprofile.Accept {
		return 0, d.Name, &UnsupportedAlgorithmError{Role: RoleDigest, OID: d.OID, Name: d.Name}
	}
	return d.Hash, d.Name, nil
}

// pssParameters is RSASSA-PSS-params (RFC 4055 section 3.1).
type pssParameters struct {
	Hash         pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:0"`
	MaskGen      pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:1"`
	SaltLength   int                      `asn1:"optional,explicit,tag:2,default:20"`
	TrailerField int                      `asn1:"optional,explicit,tag:3,default:1"`
}

// Verify checks si's signature of content (the encapsulated content, or
// for a detached signature the signed entity) with cert's public key:
// digest and signature algorithm accepted by the Direct profile, key size,
// the content-type and message-digest attributes, and the signature value
// (RFC 5652 section 5.6). eContentType is the SignedData's. It returns the
// signature algorithm's name ("SHA256-RSA", "SHA256-RSAPSS",
// "ECDSA-SHA256"). Errors: *UnsupportedAlgorithmError (RoleDigest,
// RoleSignature), ErrWeakKey, ErrDigestMismatch, ErrBadSignature,
// ErrMalformed.
func (si *SignerInfo) Verify(content []byte, eContentType asn1.ObjectIdentifier, cert *x509.Certificate) (string, error) {
	h, hname, err := si.Digest()
	if err != nil {
		return "", err
	}
	oid := si.SignatureAlgorithm.Algorithm
	alg, known := directprofile.SignatureFor(oid, h)
	switch {
	case !known:
		return "", unsupported(RoleSignature, oid)
	case alg.Verdict != directprofile.Accept:
		return "", &UnsupportedAlgorithmError{Role: RoleSignature, OID: oid, Name: alg.Name}
	case alg.Hash != 0 && alg.Hash != h:
		return "", &UnsupportedAlgorithmError{Role: RoleSignature, OID: oid,
			Name: fmt.Sprintf("%s with digest algorithm %s", alg.Name, hname)}
	}
	kind := alg.Scheme
	var pss *rsa.PSSOptions
	if kind == directprofile.PSS {
		if pss, err = si.pssOptions(h, hname); err != nil {
			return "", err
		}
	}
	// The name of the scheme with the digest: "RSA" with SHA-256 is
	// "SHA256-RSA".
	name := alg.Name
	if named, ok := directprofile.SignatureByScheme(kind, h); ok {
		name = named.Name
	}
	if err := checkSignerKey(cert, kind); err != nil {
		return name, err
	}
	if t := si.SigningTime; !t.IsZero() && (t.Before(cert.NotBefore) || t.After(cert.NotAfter)) {
		return name, fmt.Errorf("%w: signing time %s is outside the signer certificate's validity (%s to %s)", ErrBadSignature,
			t.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}

	// RFC 5652 section 5.4: with signed attributes, the content's digest
	// is the message-digest attribute and the signature covers the
	// attributes; without them, the content must be id-data and the
	// signature covers its digest.
	hh := h.New()
	hh.Write(content)
	digest := hh.Sum(nil)
	if si.signedAttrs != nil {
		if !si.contentType.Equal(eContentType) {
			return name, malformed("content-type attribute %s differs from eContentType %s", si.contentType, eContentType)
		}
		if !bytes.Equal(si.messageDigest, digest) {
			return name, ErrDigestMismatch
		}
		hh.Reset()
		hh.Write(si.signedAttrs)
		digest = hh.Sum(nil)
	} else if !eContentType.Equal(oidData) {
		return name, malformed("signed content of type %s without signed attributes", eContentType)
	}

	switch kind {
	case directprofile.PKCS1v15:
		err = rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), h, digest, si.Signature)
	case directprofile.PSS:
		err = rsa.VerifyPSS(cert.PublicKey.(*rsa.PublicKey), h, digest, si.Signature, pss)
	case directprofile.ECDSA:
		if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), digest, si.Signature) {
			err = errors.New("ECDSA verification failed")
		}
	}
	if err != nil {
		return name, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return name, nil
}

// pssOptions reads RSASSA-PSS-params: the hash must be the SignerInfo's
// digest, the mask generation MGF1 with the same hash (what crypto/rsa
// implements, and what RFC 4055 recommends), the trailer field 1.
func (si *SignerInfo) pssOptions(h crypto.Hash, hname string) (*rsa.PSSOptions, error) {
	var p pssParameters
	p.SaltLength, p.TrailerField = 20, 1
	if raw := si.SignatureAlgorithm.Parameters.FullBytes; len(raw) > 0 && !bytes.Equal(raw, asn1.NullBytes) {
		if err := unmarshalBER(raw, &p, "RSASSA-PSS parameters"); err != nil {
			return nil, err
		}
	}
	refuse := func(format string, args ...any) error {
		return &UnsupportedAlgorithmError{Role: RoleSignature, OID: oidRSASSAPSS, Name: "RSASSA-PSS " + fmt.Sprintf(format, args...)}
	}
	hashOID := p.Hash.Algorithm
	if hashOID == nil {
		hashOID = oidSHA1 // the default, refused below unless the digest is SHA-1, itself refused
	}
	if ph, ok := hashByOID(hashOID); !ok || ph != h {
		return nil, refuse("with hash %s and digest algorithm %s", hashOID, hname)
	}
	mgfHash := oidSHA1
	if p.MaskGen.Algorithm != nil {
		if !p.MaskGen.Algorithm.Equal(oidMGF1) {
			return nil, refuse("with mask generation %s", p.MaskGen.Algorithm)
		}
		var mh pkix.AlgorithmIdentifier
		if err := unmarshalBER(p.MaskGen.Parameters.FullBytes, &mh, "MGF1 hash"); err != nil {
			return nil, err
		}
		mgfHash = mh.Algorithm
	}
	if mh, ok := hashByOID(mgfHash); !ok || mh != h {
		return nil, refuse("with MGF1 hash %s and hash %s", mgfHash, hname)
	}
	if p.TrailerField != 1 {
		return nil, refuse("with trailer field %d", p.TrailerField)
	}
	if p.SaltLength < 0 || p.SaltLength > 1024 {
		return nil, malformed("RSASSA-PSS salt length %d", p.SaltLength)
	}
	// A salt length of 0 is rsa.PSSSaltLengthAuto, which accepts the
	// empty salt too.
	return &rsa.PSSOptions{SaltLength: p.SaltLength, Hash: h}, nil
}

// checkSignerKey checks that the signer's key fits the signature scheme,
// and that the Direct profile accepts it for signing (key type, RSA size,
// ECDSA curve).
func checkSignerKey(cert *x509.Certificate, kind directprofile.Scheme) error {
	switch cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if kind == directprofile.ECDSA {
			return fmt.Errorf("%w: an ECDSA signature by an RSA key", ErrBadSignature)
		}
	case *ecdsa.PublicKey:
		if kind != directprofile.ECDSA {
			return fmt.Errorf("%w: an RSA signature by an ECDSA key", ErrBadSignature)
		}
	}
	if _, _, err := directprofile.CheckCertKey(cert, directprofile.Signing); err != nil {
		return fmt.Errorf("%w: signer has %v", ErrWeakKey, err)
	}
	return nil
}
