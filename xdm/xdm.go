// Package xdm writes and opens IHE XDM packages as "XDR and XDM for Direct
// Messaging" uses them (XD-01..XD-03, XD-08), and reads and writes the
// DirectTrust Direct context part (metadata.txt). It knows no transport: the
// agent calls it with attachment bytes.
//
// A package is a zip with INDEX.HTM and README.TXT at its root and
// IHE_XDM/SUBSET01/METADATA.XML, an ebRIM 3.0 SubmitObjectsRequest with one
// SubmissionSet and a DocumentEntry per document, beside the documents
// (DOC0001.XML, DOC0002.PDF...). Write makes one; Open reads one made by any
// implementation: names are matched case-insensitively, extra files are
// ignored, each DocumentEntry's hash (SHA-1) and size are checked against its
// document.
//
// Packages from strangers are opened in memory only (nothing is written to
// disk) and within Limits: entry count, total uncompressed size, compression
// ratio, path depth (nested archives are never opened); names with "..",
// absolute paths, backslashes, NUL or other control characters refuse the
// whole package. Each refusal is an error wrapping one of the Err values
// below, and Reason names it in one word for a header or an audit record.
package xdm

import (
	"errors"
	"strings"
)

// The reasons a package is refused or a document set aside; test with
// errors.Is, name with Reason.
var (
	ErrNotZip          = errors.New("not a zip archive")
	ErrNotXDM          = errors.New("not an XDM package (no IHE_XDM/<subset>/METADATA.XML)")
	ErrTooManyEntries  = errors.New("too many entries")
	ErrTooLarge        = errors.New("uncompressed size over the limit")
	ErrRatio           = errors.New("compression ratio over the limit (zip bomb)")
	ErrNesting         = errors.New("paths nested too deep")
	ErrUnsafeName      = errors.New("unsafe entry name")
	ErrMetadata        = errors.New("unusable METADATA.XML")
	ErrHashMismatch    = errors.New("document hash does not match its metadata")
	ErrSizeMismatch    = errors.New("document size does not match its metadata")
	ErrMissingDocument = errors.New("document named in the metadata is not in the package")
	// ErrUnreadable: the entry does not decompress to what its header
	// says (its CRC, its size), or is encrypted or of an unknown method.
	ErrUnreadable = errors.New("document entry unreadable")
	ErrContext    = errors.New("invalid Direct context")
)

var reasons = []struct {
	err  error
	word string
}{
	{ErrNotZip, "not-zip"}, {ErrNotXDM, "not-xdm"}, {ErrTooManyEntries, "too-many-entries"},
	{ErrTooLarge, "too-large"}, {ErrRatio, "compression-ratio"}, {ErrNesting, "nesting"},
	{ErrUnsafeName, "unsafe-name"}, {ErrMetadata, "bad-metadata"}, {ErrHashMismatch, "hash-mismatch"},
	{ErrSizeMismatch, "size-mismatch"}, {ErrMissingDocument, "missing-document"}, {ErrUnreadable, "unreadable"}, {ErrContext, "invalid-context"},
}

// Reason returns one word for err: "compression-ratio", "unsafe-name",
// "hash-mismatch"... or "error" for an error of none of the kinds above.
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.word
		}
	}
	return "error"
}

// Coded is a code of the XDS metadata: a Classification's
// nodeRepresentation, its codingScheme slot and its display name.
type Coded struct {
	Code, Scheme, Display string
}

// DocumentEntry is the metadata of one document (an ExtrinsicObject).
type DocumentEntry struct {
	ID       string // the ExtrinsicObject id (symbolic or urn:uuid)
	URI      string // the document's file name, relative to its subset
	MimeType string
	UniqueID string // OID^extension or OID
	Hash     string // SHA-1, lower-case hex
	Size     int64  // -1 when the metadata has none
	// CreationTime is an HL7 DTM in UTC (YYYYMMDD[HHMM[SS]]).
	CreationTime string
	// PatientID is the XDSDocumentEntry.patientId (CX:
	// ext^^^&root&ISO); SourcePatientID the sourcePatientId slot.
	PatientID, SourcePatientID string
	// SourcePatientInfo are the PID-3/5/7/8 values ("PID-5|Family^Given").
	SourcePatientInfo []string
	Title             string
	LanguageCode      string
	ClassCode         Coded
	TypeCode          Coded
	FormatCode        Coded
	Confidentiality   Coded
	AuthorPerson      string
	AuthorInstitution string
	// AuthorTelecom are authorTelecommunication values
	// (^^Internet^address, XD-08).
	AuthorTelecom []string
	// Limited is set for a DocumentEntry of limited ("minimal") metadata
	// (XD-03).
	Limited bool
}

// SubmissionSet is the metadata of the submission (a RegistryPackage).
type SubmissionSet struct {
	ID             string
	UniqueID       string
	SourceID       string
	PatientID      string
	SubmissionTime string // HL7 DTM, UTC
	Title          string
	ContentType    Coded
	AuthorTelecom  []string
	// IntendedRecipients are intendedRecipient values
	// (||^^Internet^address, XD-08).
	IntendedRecipients []string
	Limited            bool
}

// Metadata is a METADATA.XML.
type Metadata struct {
	SubmissionSet SubmissionSet
	Documents     []DocumentEntry
}

// TelecomAddress returns the e-mail address of an XTN value
// (^^Internet^bob@example.org), or "" when it holds none.
func TelecomAddress(xtn string) string {
	parts := strings.Split(xtn, "^")
	if len(parts) >= 4 && strings.EqualFold(parts[2], "Internet") {
		return parts[3]
	}
	if !strings.Contains(xtn, "^") && strings.Contains(xtn, "@") {
		return strings.TrimPrefix(xtn, "mailto:")
	}
	return ""
}

// RecipientAddress returns the e-mail address of an intendedRecipient value
// (XON|XCN|XTN), or "" when it holds none.
func RecipientAddress(v string) string {
	parts := strings.Split(v, "|")
	return TelecomAddress(parts[len(parts)-1])
}
