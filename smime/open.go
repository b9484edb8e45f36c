package smime

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/hisp-project/hisp/smime/cms"
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
	sd, err := parseSignedData(sig)
	if err != nil {
		return nil, err
	}
	if len(sd.Content) != 0 {
		return nil, fmt.Errorf("%w: detached signature carries content", ErrMalformed)
	}
	if err := verifySigners(sd, parts[0], res); err != nil {
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
	sd, err := parseSignedData(der)
	if err != nil {
		return nil, err
	}
	if len(sd.Content) == 0 {
		return nil, fmt.Errorf("%w: signed-data carries no content", ErrMalformed)
	}
	if err := verifySigners(sd, sd.Content, res); err != nil {
		return nil, err
	}
	return sd.Content, nil
}

// parseSignedData reads a SignedData with the project's own CMS layer,
// which knows signers identified by subject key identifier and RSASSA-PSS
// (smallstep/pkcs7 knows neither).
func parseSignedData(der []byte) (*cms.SignedData, error) {
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	if len(sd.Signers) == 0 {
		return nil, fmt.Errorf("%w: SignedData has no SignerInfo", ErrNotSigned)
	}
	return sd, nil
}

// verifySigners checks every SignerInfo on its own over content and
// records its verdict; it fails only when none verifies (TV-07).
func verifySigners(sd *cms.SignedData, content []byte, res *Opened) error {
	res.Certificates = sd.Certificates
	var firstErr error
	valid := 0
	for i := range sd.Signers {
		sr := verifySigner(sd, i, content)
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

// verifySigner checks one SignerInfo: its digest and signature algorithm
// against the Direct profile (package directprofile), its
// certificate in the message (MF-02), the key and the signature (TV-08).
func verifySigner(sd *cms.SignedData, i int, content []byte) (sr SignerResult) {
	si := &sd.Signers[i]
	sr.Cert = sd.SignerCertificate(si)
	_, name, err := si.Digest()
	sr.Digest = name
	if sr.Digest == "" {
		sr.Digest = si.DigestAlgorithm.Algorithm.String()
	}
	if err != nil {
		// Refused (a Refuse row of directprofile.Digests: SHA-1, MD5) or
		// in no row at all: the error says which, by name or OID.
		sr.Err = fmt.Errorf("%w: %v", ErrWeakDigest, err)
		return sr
	}
	if sr.Cert == nil {
		sr.Err = fmt.Errorf("%w: SignerInfo %d names %s", ErrSignerCertMissing, i+1, si.Identifier())
		return sr
	}
	sr.Algorithm, err = si.Verify(content, sd.ContentType, sr.Cert)
	var ua *cms.UnsupportedAlgorithmError
	switch {
	case err == nil:
	case errors.As(err, &ua) && ua.Role == cms.RoleDigest:
		sr.Err = fmt.Errorf("%w: %v", ErrWeakDigest, err)
	case errors.As(err, &ua):
		sr.Err = fmt.Errorf("%w: %v", ErrWeakSignature, err)
	case errors.Is(err, cms.ErrWeakKey):
		sr.Err = fmt.Errorf("%w: %v", ErrWeakKey, err)
	case errors.Is(err, cms.ErrDigestMismatch):
		sr.Err = fmt.Errorf("%w", ErrDigestMismatch)
	case errors.Is(err, cms.ErrBadSignature):
		sr.Err = fmt.Errorf("%w: %v", ErrBadSignature, err)
	default:
		sr.Err = fmt.Errorf("%w: signature: %v", ErrMalformed, err)
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
