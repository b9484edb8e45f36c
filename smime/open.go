package smime

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/hisp-project/hisp/smime/cms"
	"github.com/smallstep/pkcs7"
)

// SignerResult is the verdict on one SignerInfo of a message.
type SignerResult struct {
	Cert      *x509.Certificate // nil when the message lacks it
	Digest    string            // "sha256", or the OID of a refused one
	Algorithm string            // signature algorithm, e.g. "SHA256-RSA"
	Err       error             // nil when the signature is valid
}

// Opened is a Direct message taken apart by Open.
type Opened struct {
	// Message is the inner RFC 5322 message: the wrapped message, or for
	// an unwrapped sender the outer header with the signed content.
	Message []byte
	Wrapped bool
	// Outer is the header of the message as received, for comparing the
	// routing headers with the inner ones.
	Outer []byte
	// Signers holds every SignerInfo's verdict; at least one has Err nil.
	Signers []SignerResult
	// Certificates are all certificates the signature carried: candidates
	// for the trust path of a signer.
	Certificates []*x509.Certificate
	Cipher       cms.ContentCipher
	KeyTransport cms.KeyTransport
	Recipient    *x509.Certificate // our certificate that decrypted it
}

// ValidSigners returns the certificates of the signers whose signature
// verified.
func (o *Opened) ValidSigners() []*x509.Certificate {
	var out []*x509.Certificate
	for _, s := range o.Signers {
		if s.Err == nil && s.Cert != nil {
			out = append(out, s.Cert)
		}
	}
	return out
}

// Open decrypts a Direct message with whichever of keys it was encrypted
// to, verifies its signatures and unwraps the inner message. It fails when
// the message is not encrypted, not signed, uses a refused algorithm or
// key, or when no signature verifies (IN-01, TV-07, TV-08). Trust in the
// signers is not decided here.
//
// Open keeps memory low for large messages: the result's slices may share
// storage with a buffer it decoded, never with message.
func Open(message []byte, keys []cms.KeyPair) (*Opened, error) {
	outer, err := parseEntity(message)
	if err != nil {
		return nil, err
	}
	if !isEnveloped(outer) {
		return nil, fmt.Errorf("%w: Content-Type is %q, want application/pkcs7-mime enveloped-data", ErrNotEncrypted, outer.header.Get("Content-Type"))
	}
	der, err := decodeBody(outer)
	if err != nil {
		return nil, err
	}
	if len(der) > 0 && len(outer.body) > 0 && &der[0] == &outer.body[0] {
		// cms.Decrypt works in place: never in the caller's message.
		der = bytes.Clone(der)
	}
	dec, err := cms.Decrypt(der, keys)
	if err != nil {
		return nil, mapCMSError(err)
	}
	res := &Opened{
		Outer:        outer.rawHeader,
		Cipher:       dec.Cipher,
		KeyTransport: dec.KeyTransport,
		Recipient:    dec.Recipient,
	}
	if err := openSigned(outer, dec.Content, res); err != nil {
		return nil, err
	}
	return res, nil
}

// openSigned verifies the decrypted entity and unwraps the inner message
// into res.
func openSigned(outer *entity, decrypted []byte, res *Opened) error {
	signed, err := parseEntity(decrypted)
	if err != nil {
		return fmt.Errorf("decrypted content: %w", err)
	}
	var content []byte // the signed entity
	switch {
	case signed.mediaType == "multipart/signed":
		content, err = verifyDetached(signed, res)
	case isSMIMEType(signed.mediaType, "pkcs7-mime") && strings.EqualFold(signed.params["smime-type"], "signed-data"):
		content, err = verifyOpaque(signed, res)
	default:
		return fmt.Errorf("%w: decrypted content is %q, want multipart/signed", ErrNotSigned, signed.mediaType)
	}
	if err != nil {
		return err
	}
	return unwrap(outer, content, res)
}

func isSMIMEType(mediaType, sub string) bool {
	return mediaType == "application/"+sub || mediaType == "application/x-"+sub
}

// isEnveloped reports whether e is application/pkcs7-mime (or the legacy
// x-pkcs7-mime, MF-08) holding enveloped data. A missing smime-type with
// name smime.p7m is accepted, as older agents omit it.
func isEnveloped(e *entity) bool {
	if !isSMIMEType(e.mediaType, "pkcs7-mime") {
		return false
	}
	switch strings.ToLower(e.params["smime-type"]) {
	case "enveloped-data", "authenveloped-data":
		return true
	case "":
		return true // the CMS content type decides
	}
	return false
}

// decodeBody returns the decoded body of e: base64 or binary.
func decodeBody(e *entity) ([]byte, error) {
	switch cte := strings.ToLower(strings.TrimSpace(e.header.Get("Content-Transfer-Encoding"))); cte {
	case "base64":
		out := make([]byte, base64.StdEncoding.DecodedLen(len(e.body)))
		n, err := base64.StdEncoding.Decode(out, trimBase64(e.body))
		if err != nil {
			return nil, fmt.Errorf("%w: base64 body: %v", ErrMalformed, err)
		}
		return out[:n], nil
	case "", "binary", "7bit", "8bit":
		return e.body, nil
	case "quoted-printable":
		b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(e.body)))
		if err != nil {
			return nil, fmt.Errorf("%w: quoted-printable body: %v", ErrMalformed, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%w: unknown Content-Transfer-Encoding %q", ErrMalformed, cte)
	}
}

// trimBase64 drops trailing white space and anything after the padding,
// which Go's decoder refuses but mail agents add.
func trimBase64(b []byte) []byte {
	b = bytes.TrimRight(b, " \t\r\n")
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// mapCMSError translates package cms errors into this package's.
func mapCMSError(err error) error {
	var ua *cms.UnsupportedAlgorithmError
	switch {
	case errors.As(err, &ua) && ua.Role == cms.RoleKeyTransport:
		return fmt.Errorf("%w: %v", ErrWeakKeyTransport, err)
	case errors.Is(err, cms.ErrRefusedAlgorithm), errors.Is(err, cms.ErrUnsupportedAlgorithm):
		return fmt.Errorf("%w: %v", ErrWeakCipher, err)
	case errors.Is(err, cms.ErrWeakKey):
		return fmt.Errorf("%w: %v", ErrWeakKey, err)
	case errors.Is(err, cms.ErrNoMatchingRecipient):
		return fmt.Errorf("%w: %v", ErrNoRecipient, err)
	case errors.Is(err, cms.ErrDecryptionFailed):
		return fmt.Errorf("%w: %v", ErrDecryption, err)
	default:
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
}

// verifyDetached checks a multipart/signed entity (RFC 1847, RFC 5751
// §3.5.3) and returns its first part, the signed content.
func verifyDetached(e *entity, res *Opened) ([]byte, error) {
	proto := strings.ToLower(e.params["protocol"])
	if proto != "application/pkcs7-signature" && proto != "application/x-pkcs7-signature" {
		return nil, fmt.Errorf("%w: multipart/signed protocol %q is not S/MIME", ErrNotSigned, proto)
	}
	parts, err := splitMultipart(e.body, e.params["boundary"])
	if err != nil {
		return nil, err
	}
	if len(parts) != 2 { // MF-02: exactly content and signature
		return nil, fmt.Errorf("%w: multipart/signed has %d parts, want 2", ErrMalformed, len(parts))
	}
	sigPart, err := parseEntity(parts[1])
	if err != nil {
		return nil, fmt.Errorf("signature part: %w", err)
	}
	if !isSMIMEType(sigPart.mediaType, "pkcs7-signature") {
		return nil, fmt.Errorf("%w: second part is %q, want application/pkcs7-signature", ErrNotSigned, sigPart.mediaType)
	}
	sig, err := decodeBody(sigPart)
	if err != nil {
		return nil, fmt.Errorf("signature part: %w", err)
	}
	p7, err := parseSignedData(sig)
	if err != nil {
		return nil, err
	}
	if len(p7.Content) != 0 {
		return nil, fmt.Errorf("%w: detached signature carries content", ErrMalformed)
	}
	p7.Content = parts[0]
	if err := verifySigners(p7, res); err != nil {
		return nil, err
	}
	// MF-02 wants micalg to match the SignerInfo digest. Senders get it
	// wrong often enough that a mismatch is not fatal when the signature
	// itself verifies with the SignerInfo's digest.
	return parts[0], nil
}

// verifyOpaque checks application/pkcs7-mime; smime-type=signed-data and
// returns the encapsulated content.
func verifyOpaque(e *entity, res *Opened) ([]byte, error) {
	der, err := decodeBody(e)
	if err != nil {
		return nil, err
	}
	p7, err := parseSignedData(der)
	if err != nil {
		return nil, err
	}
	if len(p7.Content) == 0 {
		return nil, fmt.Errorf("%w: signed-data carries no content", ErrMalformed)
	}
	if err := verifySigners(p7, res); err != nil {
		return nil, err
	}
	return p7.Content, nil
}

func parseSignedData(der []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		// The parser is third-party code fed by untrusted input: a panic
		// in it must not take the process down.
		if r := recover(); r != nil {
			p7, err = nil, fmt.Errorf("%w: signature: unparsable CMS (%v)", ErrMalformed, r)
		}
	}()
	p7, err = pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	if len(p7.Signers) == 0 {
		return nil, fmt.Errorf("%w: SignedData has no SignerInfo", ErrNotSigned)
	}
	return p7, nil
}

var (
	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidMD5    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	digestOID = map[string]asn1.ObjectIdentifier{
		"sha256": pkcs7.OIDDigestAlgorithmSHA256,
		"sha384": pkcs7.OIDDigestAlgorithmSHA384,
		"sha512": pkcs7.OIDDigestAlgorithmSHA512,
	}
)

// verifySigners checks every SignerInfo on its own and records its
// verdict; it fails only when none verifies (TV-07).
func verifySigners(p7 *pkcs7.PKCS7, res *Opened) error {
	res.Certificates = p7.Certificates
	var firstErr error
	valid := 0
	for i := range p7.Signers {
		sr := verifySigner(p7, i)
		res.Signers = append(res.Signers, sr)
		if sr.Err == nil {
			valid++
		} else if firstErr == nil {
			firstErr = sr.Err
		}
	}
	if valid == 0 {
		return firstErr
	}
	return nil
}

func verifySigner(p7 *pkcs7.PKCS7, i int) (sr SignerResult) {
	si := p7.Signers[i]
	sr.Digest = si.DigestAlgorithm.Algorithm.String()
	for name, oid := range digestOID {
		if si.DigestAlgorithm.Algorithm.Equal(oid) {
			sr.Digest = name
		}
	}
	for _, c := range p7.Certificates {
		if c.SerialNumber.Cmp(si.IssuerAndSerialNumber.SerialNumber) == 0 &&
			bytes.Equal(c.RawIssuer, si.IssuerAndSerialNumber.IssuerName.FullBytes) {
			sr.Cert = c
			break
		}
	}
	switch {
	case si.DigestAlgorithm.Algorithm.Equal(oidSHA1):
		sr.Err = fmt.Errorf("%w: SHA-1 (Direct refuses SHA-1 signatures)", ErrWeakDigest)
		return sr
	case si.DigestAlgorithm.Algorithm.Equal(oidMD5):
		sr.Err = fmt.Errorf("%w: MD5", ErrWeakDigest)
		return sr
	case len(sr.Digest) > 6: // not one of ours: a dotted OID
		sr.Err = fmt.Errorf("%w: unknown digest %s", ErrWeakDigest, sr.Digest)
		return sr
	}
	if sr.Cert == nil {
		sr.Err = fmt.Errorf("%w: SignerInfo %d names issuer+serial %s", ErrSignerCertMissing, i+1, si.IssuerAndSerialNumber.SerialNumber)
		return sr
	}
	switch pub := sr.Cert.PublicKey.(type) {
	case *rsa.PublicKey:
		sr.Algorithm = strings.ToUpper(sr.Digest) + "-RSA"
		if pub.N.BitLen() < 2048 {
			sr.Err = fmt.Errorf("%w: signer RSA key has %d bits, under 2048", ErrWeakKey, pub.N.BitLen())
			return sr
		}
	case *ecdsa.PublicKey:
		sr.Algorithm = "ECDSA-" + strings.ToUpper(sr.Digest)
		if n := pub.Curve.Params().Name; n != "P-256" && n != "P-384" {
			sr.Err = fmt.Errorf("%w: signer ECDSA curve %s", ErrWeakKey, n)
			return sr
		}
	default:
		sr.Err = fmt.Errorf("%w: signer key type %T", ErrWeakKey, pub)
		return sr
	}
	one := *p7
	one.Signers = p7.Signers[i : i+1]
	if err := one.Verify(); err != nil {
		var mismatch *pkcs7.MessageDigestMismatchError
		if errors.As(err, &mismatch) {
			sr.Err = fmt.Errorf("%w", ErrDigestMismatch)
		} else {
			sr.Err = fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
	}
	return sr
}

// unwrap sets res.Message from the signed content: the wrapped message when
// content is message/rfc822 (MF-03), else the outer header with content.
func unwrap(outer *entity, content []byte, res *Opened) error {
	part, err := parseEntity(content)
	if err != nil {
		return fmt.Errorf("signed content: %w", err)
	}
	if part.mediaType == "message/rfc822" {
		msg, err := decodeBody(part)
		if err != nil {
			return fmt.Errorf("wrapped message: %w", err)
		}
		res.Message, res.Wrapped = msg, true
		return nil
	}
	// Unwrapped sender: the message is the outer header without its MIME
	// fields, then the signed entity's own MIME header and body.
	var b bytes.Buffer
	b.Grow(len(outer.rawHeader) + len(content))
	for f := outer.header.Fields(); f.Next(); {
		k := strings.ToLower(f.Key())
		if strings.HasPrefix(k, "content-") || k == "mime-version" {
			continue
		}
		raw, err := f.Raw()
		if err == nil {
			b.Write(raw)
		}
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	b.Write(content)
	res.Message = b.Bytes()
	return nil
}
