package xdm

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"html"
	"io"
	"math/big"
	"mime"
	"path"
	"strings"
	"time"

	"github.com/hisp-project/hisp/ccda"
)

// Document is one document to package.
type Document struct {
	// Name is the attachment's file name, shown in INDEX.HTM and used as
	// the title of a document that is not a C-CDA.
	Name string
	// MimeType is the document's media type; "" is guessed from Name.
	MimeType string
	Data     []byte
}

// Submission is what Write packages.
type Submission struct {
	// Author is the sender's Direct address (authorTelecommunication,
	// XD-08).
	Author string
	// Recipients are the Direct addresses it goes to (intendedRecipient,
	// XD-08).
	Recipients []string
	// PatientID is the patient id in CX form (ext^^^&root&ISO), from a
	// Direct context; "" takes it from the first C-CDA document.
	PatientID string
	// Time is the submission time; zero is now.
	Time time.Time
	// SourceID is the submission set's sourceId (an OID naming the
	// sender); "" makes one under 2.25.
	SourceID  string
	Documents []Document
	// Software names the sender in README.TXT.
	Software string
}

// The metadata codes hisp writes (IHE ITI TF-3 §4.2.3, C-CDA R2.1
// formatCodes in 1.3.6.1.4.1.19376.1.2.3).
const (
	schemeLOINC      = "2.16.840.1.113883.6.1"
	schemeFormat     = "1.3.6.1.4.1.19376.1.2.3"
	schemeConfidence = "2.16.840.1.113883.5.25"
)

// SubsetDir is the folder of the submission set hisp writes.
const SubsetDir = "IHE_XDM/SUBSET01"

// Write packages s as an XDM zip (XD-01) and returns the metadata it wrote.
// C-CDA documents get full metadata from their header (patient, type,
// class, format, confidentiality, author); other documents limited
// metadata (XD-03).
func Write(w io.Writer, s Submission) (*Metadata, error) {
	if len(s.Documents) == 0 {
		return nil, errNoDocuments
	}
	now := s.Time
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC()
	dtm := now.Format("20060102150405")
	sourceID := s.SourceID
	if sourceID == "" {
		sourceID = newOID()
	}
	m := &Metadata{SubmissionSet: SubmissionSet{
		ID:             "SubmissionSet01",
		UniqueID:       newOID(),
		SourceID:       sourceID,
		SubmissionTime: dtm,
		PatientID:      s.PatientID,
	}}
	if s.Author != "" {
		m.SubmissionSet.AuthorTelecom = []string{"^^Internet^" + s.Author}
	}
	for _, r := range s.Recipients {
		m.SubmissionSet.IntendedRecipients = append(m.SubmissionSet.IntendedRecipients, "||^^Internet^"+r)
	}
	names := make([]string, len(s.Documents))
	for i, doc := range s.Documents {
		d := entryFor(doc, i, dtm)
		if s.Author != "" {
			d.AuthorTelecom = append(d.AuthorTelecom, "^^Internet^"+s.Author)
		}
		if s.PatientID != "" {
			d.PatientID = s.PatientID
		}
		if m.SubmissionSet.PatientID == "" && d.PatientID != "" {
			m.SubmissionSet.PatientID = d.PatientID
		}
		if d.Limited {
			m.SubmissionSet.Limited = true
		}
		if m.SubmissionSet.ContentType.Code == "" && d.TypeCode.Code != "" {
			m.SubmissionSet.ContentType = d.TypeCode
			m.SubmissionSet.Title = d.Title
		}
		m.Documents = append(m.Documents, d)
		names[i] = doc.Name
	}
	for i := range m.Documents {
		// Entries without a patient of their own carry the
		// submission's, so an importing EHR files them together.
		if m.Documents[i].PatientID == "" {
			m.Documents[i].PatientID = m.SubmissionSet.PatientID
		}
	}
	meta := MarshalMetadata(m)

	zw := zip.NewWriter(w)
	put := func(name string, data []byte, store bool) error {
		if store {
			// Stored with its sizes and CRC up front: no data
			// descriptor, which every unzip reads.
			fh := &zip.FileHeader{Name: name, Method: zip.Store, Modified: now,
				CRC32: crc32.ChecksumIEEE(data), CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data))}
			fw, err := zw.CreateRaw(fh)
			if err != nil {
				return err
			}
			_, err = fw.Write(data)
			return err
		}
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: now})
		if err != nil {
			return err
		}
		_, err = fw.Write(data)
		return err
	}
	if err := put("INDEX.HTM", indexHTM(m, names, s.Author, now), false); err != nil {
		return nil, fmt.Errorf("xdm: write INDEX.HTM: %w", err)
	}
	if err := put("README.TXT", readme(s, now), false); err != nil {
		return nil, fmt.Errorf("xdm: write README.TXT: %w", err)
	}
	if err := put(SubsetDir+"/METADATA.XML", meta, false); err != nil {
		return nil, fmt.Errorf("xdm: write METADATA.XML: %w", err)
	}
	for i, doc := range s.Documents {
		if err := put(SubsetDir+"/"+m.Documents[i].URI, doc.Data, incompressible(m.Documents[i].MimeType)); err != nil {
			return nil, fmt.Errorf("xdm: write %s: %w", m.Documents[i].URI, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("xdm: finish zip: %w", err)
	}
	return m, nil
}

// Build is Write to memory, into a buffer sized for the documents, so that
// packaging costs about one copy of them.
func Build(s Submission) ([]byte, *Metadata, error) {
	n := 16 << 10
	for _, d := range s.Documents {
		n += len(d.Data) + 256
	}
	b := bytes.NewBuffer(make([]byte, 0, n))
	m, err := Write(b, s)
	if err != nil {
		return nil, nil, err
	}
	return b.Bytes(), m, nil
}

// entryFor makes the DocumentEntry of the i-th document.
func entryFor(doc Document, i int, dtm string) DocumentEntry {
	sum := sha1.Sum(doc.Data)
	mt := doc.MimeType
	if mt == "" {
		mt = mime.TypeByExtension(strings.ToLower(path.Ext(doc.Name)))
		if j := strings.IndexByte(mt, ';'); j >= 0 {
			mt = mt[:j]
		}
	}
	if mt == "" {
		mt = "application/octet-stream"
	}
	d := DocumentEntry{
		ID:           fmt.Sprintf("Document%02d", i+1),
		MimeType:     mt,
		Hash:         hex.EncodeToString(sum[:]),
		Size:         int64(len(doc.Data)),
		CreationTime: dtm,
		Title:        doc.Name,
		UniqueID:     newOID(),
	}
	ext := strings.ToUpper(strings.TrimPrefix(path.Ext(doc.Name), "."))
	if h, err := ccda.ReadHeader(doc.Data, ccda.Limits{}); err == nil && ccda.Is(doc.Data) {
		d.MimeType = "text/xml"
		ext = "XML"
		fillFromCCDA(&d, h)
	} else {
		d.Limited = true
		d.FormatCode = Coded{Code: "urn:ihe:iti:xds:2017:mimeTypeSufficient", Scheme: schemeFormat, Display: "mimeType Sufficient"}
	}
	if ext == "" || len(ext) > 4 || strings.ContainsFunc(ext, func(r rune) bool { return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') }) {
		ext = "BIN"
		if exts, _ := mime.ExtensionsByType(d.MimeType); len(exts) > 0 {
			ext = strings.ToUpper(strings.TrimPrefix(exts[0], "."))
		}
	}
	d.URI = fmt.Sprintf("DOC%04d.%s", i+1, ext)
	return d
}

// fillFromCCDA takes a DocumentEntry's codes and patient from a C-CDA
// header.
func fillFromCCDA(d *DocumentEntry, h *ccda.Header) {
	if h.ID.Root != "" && isOID(h.ID.Root) {
		d.UniqueID = h.ID.Root
		if h.ID.Extension != "" {
			d.UniqueID += "^" + h.ID.Extension
		}
		if len(d.UniqueID) > 128 {
			d.UniqueID = newOID()
		}
	}
	if h.Title != "" {
		d.Title = h.Title
	}
	if h.EffectiveTime != "" {
		if t := utcDTM(h.EffectiveTime); t != "" {
			d.CreationTime = t
		}
	}
	d.LanguageCode = h.Language
	scheme := h.Code.System
	if scheme == "" {
		scheme = schemeLOINC
	}
	if h.Code.Code != "" {
		d.TypeCode = Coded{Code: h.Code.Code, Scheme: scheme, Display: firstNonEmpty(h.Code.DisplayName, h.Title)}
		d.ClassCode = d.TypeCode
	}
	if h.Confidentiality.Code != "" {
		d.Confidentiality = Coded{Code: h.Confidentiality.Code, Scheme: firstNonEmpty(h.Confidentiality.System, schemeConfidence),
			Display: confidentialityDisplay(h.Confidentiality.Code)}
	}
	d.FormatCode = formatCode(h)
	if len(h.Patient.IDs) > 0 {
		id := h.Patient.IDs[0]
		d.PatientID = CX(id.Root, id.Extension)
		d.SourcePatientID = d.PatientID
		d.SourcePatientInfo = append(d.SourcePatientInfo, "PID-3|"+d.PatientID)
	}
	if h.Patient.Family != "" || len(h.Patient.Given) > 0 {
		pid5 := "PID-5|" + hl7Escape(h.Patient.Family)
		for i, g := range h.Patient.Given {
			if i < 2 {
				pid5 += "^" + hl7Escape(g)
			}
		}
		d.SourcePatientInfo = append(d.SourcePatientInfo, pid5)
	}
	if h.Patient.BirthTime != "" {
		d.SourcePatientInfo = append(d.SourcePatientInfo, "PID-7|"+hl7Escape(h.Patient.BirthTime))
	}
	if h.Patient.Gender.Code != "" {
		d.SourcePatientInfo = append(d.SourcePatientInfo, "PID-8|"+hl7Escape(h.Patient.Gender.Code))
	}
	if len(h.Authors) > 0 {
		a := h.Authors[0]
		if a.Name != "" {
			d.AuthorPerson = "^" + hl7Escape(a.Name)
		}
		d.AuthorInstitution = hl7Escape(a.Organization)
	}
}

// formatCode is the C-CDA formatCode of a header: structured or unstructured
// body, R1.1 or R2.1 by its templateIds.
func formatCode(h *ccda.Header) Coded {
	version := "1.1"
	for _, t := range h.TemplateIDs {
		if t.Root == "2.16.840.1.113883.10.20.22.1.1" && t.Extension != "" {
			version = "2.1"
		}
	}
	kind := "structuredBody"
	for _, t := range h.TemplateIDs {
		if t.Root == "2.16.840.1.113883.10.20.22.1.10" { // Unstructured Document
			kind = "nonXMLBody"
		}
	}
	code := "urn:hl7-org:sdwg:ccda-" + kind + ":" + version
	return Coded{Code: code, Scheme: schemeFormat, Display: "C-CDA " + kind + " " + version}
}

// CX returns a patient id in XDS form: ext^^^&root&ISO.
func CX(root, ext string) string {
	if ext == "" {
		return "^^^&" + root + "&ISO"
	}
	return hl7Escape(ext) + "^^^&" + root + "&ISO"
}

// hl7Escape escapes the HL7 v2 delimiters of a component.
func hl7Escape(s string) string {
	if !strings.ContainsAny(s, `|^&~\`) {
		return s
	}
	r := strings.NewReplacer(`\`, `\E\`, `|`, `\F\`, `^`, `\S\`, `&`, `\T\`, `~`, `\R\`)
	return r.Replace(s)
}

func isOID(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for _, c := range s {
		if c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// newOID returns a unique OID under 2.25 (a UUID as a decimal number, ITU-T
// X.667).
func newOID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return "2.25." + new(big.Int).SetBytes(b[:]).String()
}

// utcDTM converts an HL7 TS with a zone to a UTC DTM as XDS wants it;
// without a zone, the digits as they are.
func utcDTM(ts string) string {
	digits, zone := ts, ""
	if i := strings.IndexAny(ts, "+-"); i >= 0 {
		digits, zone = ts[:i], ts[i:]
	}
	if i := strings.IndexByte(digits, '.'); i >= 0 {
		digits = digits[:i]
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return ""
		}
	}
	if len(digits) < 4 {
		return ""
	}
	if zone == "" || len(digits) < 12 {
		return digits
	}
	layout := "20060102150405"[:len(digits)] + "-0700"
	t, err := time.Parse(layout, digits+zone)
	if err != nil {
		return digits
	}
	return t.UTC().Format("20060102150405"[:len(digits)])
}

func confidentialityDisplay(code string) string {
	switch code {
	case "N":
		return "Normal"
	case "R":
		return "Restricted"
	case "V":
		return "Very Restricted"
	}
	return code
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// incompressible reports whether a media type is usually compressed
// already; such documents are stored, not deflated again.
func incompressible(mt string) bool {
	switch {
	case mt == "application/pdf", mt == "application/zip", mt == "application/gzip",
		strings.HasPrefix(mt, "image/"), strings.HasPrefix(mt, "video/"), strings.HasPrefix(mt, "audio/"):
		return true
	}
	return false
}

// indexHTM is the package's INDEX.HTM, well-formed XHTML (IHE ITI XDM):
// what the package holds, for a person who opens the zip. No script, no
// remote reference.
func indexHTM(m *Metadata, names []string, author string, now time.Time) []byte {
	var b strings.Builder
	e := html.EscapeString
	b.WriteString("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>XDM package</title></head><body>\r\n")
	b.WriteString("<h1>Health documents (IHE XDM)</h1>\r\n<p>Sent by " + e(author) + " on " + now.Format("2006-01-02 15:04 UTC") + ".</p>\r\n<ul>\r\n")
	for i, d := range m.Documents {
		b.WriteString("<li><a href=\"" + SubsetDir + "/" + e(d.URI) + "\">" + e(d.Title) + "</a> (" + e(names[i]) + ", " + e(d.MimeType) + ")</li>\r\n")
	}
	b.WriteString("</ul>\r\n<p>The metadata of these documents is in <a href=\"" + SubsetDir + "/METADATA.XML\">METADATA.XML</a>.</p>\r\n</body></html>\r\n")
	return []byte(b.String())
}

// readme is README.TXT: who made the package.
func readme(s Submission, now time.Time) []byte {
	sw := s.Software
	if sw == "" {
		sw = "hisp"
	}
	return []byte("This is an IHE XDM package (IHE ITI Technical Framework, Cross-Enterprise Document Media\r\n" +
		"Interchange), made for Direct secure messaging.\r\n\r\n" +
		"Made by: " + sw + "\r\n" +
		"Sender: " + s.Author + "\r\n" +
		"Date: " + now.Format(time.RFC1123Z) + "\r\n\r\n" +
		"INDEX.HTM lists the documents; IHE_XDM/SUBSET01/METADATA.XML describes them.\r\n")
}
