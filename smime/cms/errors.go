package cms

import (
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// Errors returned by Encrypt and Decrypt, wrapped with detail. Test for them
// with errors.Is.
var (
	// ErrMalformed means the input is not a well-formed CMS message of the
	// kind expected: truncated, bad BER or DER, wrong content type, a missing
	// or badly sized field.
	ErrMalformed = errors.New("cms: the message is malformed")

	// ErrUnsupportedAlgorithm means an algorithm this package does not know
	// or does not implement. Refused algorithms match ErrRefusedAlgorithm
	// instead.
	ErrUnsupportedAlgorithm = errors.New("cms: the algorithm is not supported")

	// ErrRefusedAlgorithm means a known algorithm that the Direct profile
	// does not allow, such as DES, 3DES or RC2.
	ErrRefusedAlgorithm = errors.New("cms: the algorithm is refused by the Direct profile")

	// ErrNoMatchingRecipient means that none of the local certificates given
	// to Decrypt is named by a recipient of the message.
	ErrNoMatchingRecipient = errors.New("cms: the message is not encrypted to any of our certificates")

	// ErrDecryptionFailed means a recipient matched but the message could
	// not be decrypted: the key transport failed, the GCM authentication
	// tag did not verify, or the CBC padding was invalid. The message was
	// damaged, tampered with, or encrypted to a different key under our
	// certificate's name.
	ErrDecryptionFailed = errors.New("cms: decryption failed")

	// ErrWeakKey means a key the Direct profile refuses (an RSA key
	// shorter than MinRSABits bits, an ECDSA curve or key type it does not
	// accept), of a recipient on Encrypt, of our own certificate on
	// Decrypt, or of a signer.
	ErrWeakKey = errors.New("cms: the key is refused by the Direct profile")
)

// Roles of an algorithm, for UnsupportedAlgorithmError.Role.
const (
	RoleContentEncryption = "content encryption"
	RoleKeyTransport      = "key transport"
	RoleDigest            = "signature digest"
	RoleSignature         = "signature"
)

// UnsupportedAlgorithmError reports an algorithm that is refused by the
// Direct profile or not supported by this package. errors.Is matches it with
// ErrRefusedAlgorithm when Refused reports true, otherwise with
// ErrUnsupportedAlgorithm.
type UnsupportedAlgorithmError struct {
	Role string                // RoleContentEncryption or RoleKeyTransport
	OID  asn1.ObjectIdentifier // the algorithm's identifier, nil if it has none
	Name string                // a readable name, "" if the algorithm is unknown
}

// Refused reports whether the algorithm is known and refused by the Direct
// profile (a Refuse row of package directprofile's tables for its role),
// rather than unknown or unimplemented.
func (e *UnsupportedAlgorithmError) Refused() bool {
	if e.OID == nil {
		return false
	}
	if e.Role == RoleDigest || e.Role == RoleSignature {
		if d, ok := directprofile.DigestByOID(e.OID); ok {
			return d.Verdict == directprofile.Refuse
		}
		s, ok := directprofile.SignatureFor(e.OID, 0)
		return ok && s.Verdict == directprofile.Refuse
	}
	c, ok := directprofile.CipherByOID(e.OID)
	return ok && c.Verdict == directprofile.Refuse
}

func (e *UnsupportedAlgorithmError) Error() string {
	var what string
	switch {
	case e.Name != "" && e.OID != nil:
		what = fmt.Sprintf("%s (%s)", e.Name, e.OID)
	case e.Name != "":
		what = e.Name
	default:
		what = e.OID.String()
	}
	if e.Refused() {
		return fmt.Sprintf("cms: %s algorithm %s is refused by the Direct profile", e.Role, what)
	}
	return fmt.Sprintf("cms: %s algorithm %s is not supported", e.Role, what)
}

// Is makes errors.Is(err, ErrRefusedAlgorithm) and
// errors.Is(err, ErrUnsupportedAlgorithm) work.
func (e *UnsupportedAlgorithmError) Is(target error) bool {
	if e.Refused() {
		return target == ErrRefusedAlgorithm
	}
	return target == ErrUnsupportedAlgorithm
}

// malformedError is ErrMalformed with a detail.
type malformedError struct {
	detail string
}

func (e *malformedError) Error() string { return ErrMalformed.Error() + ": " + e.detail }

func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

// malformed returns an error matching ErrMalformed with a detail.
func malformed(format string, args ...any) error {
	return &malformedError{detail: fmt.Sprintf(format, args...)}
}

// inField puts the name of the field being read in front of the detail of a
// malformed error.
func inField(field string, err error) error {
	var m *malformedError
	if errors.As(err, &m) {
		return &malformedError{detail: field + ": " + m.detail}
	}
	return fmt.Errorf("cms: %s: %w", field, err)
}
