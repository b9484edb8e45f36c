package smime

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	"github.com/emersion/go-message/textproto"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/smime/directprofile"
	"github.com/smallstep/pkcs7"
)

// Signer is a signing certificate with its private key and the
// intermediates to include in the signature.
type Signer struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// SealOptions are the algorithm choices for one message. The zero value is
// the Direct default: SHA-256, AES-128-CBC.
type SealOptions struct {
	Digest Digest            // zero: DefaultProfile's, SHA-256
	Cipher cms.ContentCipher // zero: DefaultProfile's, AES-128-CBC
	Rand   io.Reader         // zero: crypto/rand
	// Subject is the outer, generic Subject (MF-04: no PHI outside).
	// Empty: DefaultSubject.
	Subject string
}

// DefaultSubject is the Subject of the outer, encrypted message.
const DefaultSubject = "Direct Secure Message"

// routingHeaders are copied from the inner message to the outer one
// (MF-04): what transport and MDN correlation need, nothing else.
var routingHeaders = []string{"From", "Sender", "To", "Cc", "Date", "Message-Id"}

// Seal turns a plain RFC 5322 message into a Direct message: wrapped,
// signed by signer, encrypted to every recipient.
func Seal(message []byte, signer Signer, recipients []cms.Recipient, opts SealOptions) ([]byte, error) {
	inner, err := parseEntity(canonicalize(message))
	if err != nil {
		return nil, fmt.Errorf("seal: read message: %w", err)
	}
	if len(recipients) == 0 {
		return nil, fmt.Errorf("seal: no recipient certificates")
	}
	signed, err := Sign(Wrap(inner.rawHeader, inner.body), signer, opts)
	if err != nil {
		return nil, err
	}
	return Encrypt(signed, RoutingHeader(inner.header), recipients, opts)
}

// Wrap returns the message/rfc822 entity holding a whole message (MF-01,
// MF-03). header and body must be canonical (CRLF).
func Wrap(header, body []byte) []byte {
	const ct = "Content-Type: message/rfc822\r\n\r\n"
	out := make([]byte, 0, len(ct)+len(header)+len(body))
	out = append(out, ct...)
	out = append(out, header...)
	return append(out, body...)
}

// Sign returns a multipart/signed entity carrying entity and its detached
// CMS signature (MF-01, MF-02): the signer certificate and chain included,
// micalg matching the digest. entity must be canonical; it is signed as is.
func Sign(entity []byte, signer Signer, opts SealOptions) ([]byte, error) {
	digest := opts.Digest
	if digest == 0 {
		digest = DefaultProfile.Digest
	}
	if err := checkSigningKey(signer); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	sd, err := pkcs7.NewSignedData(entity)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	sd.SetDigestAlgorithm(digest.oid())
	if err := sd.AddSigner(signer.Cert, signer.Key, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign with %s: %w", signer.Cert.Subject, err)
	}
	for _, c := range signer.Chain {
		sd.AddCertificate(c)
	}
	sd.Detach()
	sig, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	boundary, err := newBoundary(opts.Rand, entity)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	var b bytes.Buffer
	b.Grow(len(entity) + len(sig)*4/3 + 512)
	fmt.Fprintf(&b, "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=%s;\r\n boundary=\"%s\"\r\n\r\n", digest.Micalg(), boundary)
	b.WriteString("This is an S/MIME signed message\r\n\r\n")
	fmt.Fprintf(&b, "--%s\r\n", boundary)
	b.Write(entity)
	fmt.Fprintf(&b, "\r\n--%s\r\n", boundary)
	b.WriteString("Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	b.WriteString("Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n")
	writeBase64Lines(&b, sig)
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes(), nil
}

// RoutingHeader returns the header fields of h that belong on the outer
// message (MF-04), as canonical raw lines in their original order.
func RoutingHeader(h textproto.Header) []byte {
	var b []byte
	for f := h.Fields(); f.Next(); {
		if !slices.Contains(routingHeaders, f.Key()) {
			continue
		}
		raw, err := f.Raw()
		if err != nil {
			continue
		}
		b = append(b, canonicalize(raw)...)
	}
	return b
}

// Encrypt returns the outer Direct message: routing (raw header lines, see
// RoutingHeader), a generic Subject, and entity encrypted to recipients as
// application/pkcs7-mime (MF-01).
func Encrypt(entity, routing []byte, recipients []cms.Recipient, opts SealOptions) ([]byte, error) {
	cipher := opts.Cipher
	if cipher == 0 {
		cipher = DefaultProfile.Cipher
	}
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
	der, err := cms.Encrypt(r, entity, cipher, recipients)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	subject := opts.Subject
	if subject == "" {
		subject = DefaultSubject
	}
	var b bytes.Buffer
	// Exactly what writeBase64Lines writes: 78 bytes per 57 input bytes,
	// so the buffer is allocated once.
	b.Grow(len(routing) + 1024 + (len(der)+56)/57*78)
	b.Write(routing)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	b.WriteString("MIME-Version: 1.0\r\n")
	// RFC 8551 §3.2.2 names AuthEnvelopedData (AES-GCM) authEnveloped-data;
	// receivers go by the CMS content type in either case.
	smimeType := "enveloped-data"
	if cipher == cms.AES128GCM || cipher == cms.AES256GCM {
		smimeType = "authEnveloped-data"
	}
	fmt.Fprintf(&b, "Content-Type: application/pkcs7-mime; smime-type=%s; name=\"smime.p7m\"\r\n", smimeType)
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	b.WriteString("Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n")
	writeBase64Lines(&b, der)
	return b.Bytes(), nil
}

// checkSigningKey refuses keys the Direct profile does not allow for
// signing (directprofile.Keys, MinRSABits, Curves).
func checkSigningKey(s Signer) error {
	if s.Cert == nil || s.Key == nil {
		return fmt.Errorf("%w: no signing certificate or key", ErrWeakKey)
	}
	if _, _, err := directprofile.CheckCertKey(s.Cert, directprofile.Signing); err != nil {
		return fmt.Errorf("%w: signing certificate has %v", ErrWeakKey, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := s.Key.Public().(equaler); !ok || !pub.Equal(s.Cert.PublicKey) {
		return fmt.Errorf("%w: private key does not match the signing certificate", ErrWeakKey)
	}
	return nil
}

// newBoundary returns a random boundary that does not occur in content.
func newBoundary(r io.Reader, content []byte) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var buf [12]byte
	for {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", err
		}
		b := "----hisp-" + hex.EncodeToString(buf[:])
		if !bytes.Contains(content, []byte(b)) {
			return b, nil
		}
	}
}

// writeBase64Lines writes data as base64 in 76-character CRLF lines.
func writeBase64Lines(b *bytes.Buffer, data []byte) {
	const line = 57 // 57 bytes encode to 76 characters
	enc := base64.StdEncoding
	var out [76]byte
	for len(data) > 0 {
		n := min(len(data), line)
		enc.Encode(out[:], data[:n])
		b.Write(out[:enc.EncodedLen(n)])
		b.WriteString("\r\n")
		data = data[n:]
	}
}
