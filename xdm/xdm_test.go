package xdm

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/ccda"
)

func testdoc(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "ccda", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakePDF is a document that is not a C-CDA.
func fakePDF(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	copy(b, "%PDF-1.7\n")
	return b
}

func sampleSubmission(t testing.TB) Submission {
	return Submission{
		Author:     "alice@hospital.example",
		Recipients: []string{"bob@clinic.example", "carol@clinic.example"},
		Time:       time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		Documents: []Document{
			{Name: "discharge-summary.xml", MimeType: "application/xml", Data: testdoc(t, "discharge-summary.xml")},
			{Name: "referral-note.xml", Data: testdoc(t, "referral-note.xml")},
			{Name: "ccd.xml", MimeType: "text/xml", Data: testdoc(t, "ccd.xml")},
			{Name: "scan.pdf", MimeType: "application/pdf", Data: fakePDF(3000)},
		},
	}
}

// TestWriteReadBack: a package written holds the documents byte for byte
// and metadata equal to their C-CDA headers.
func TestWriteReadBack(t *testing.T) {
	s := sampleSubmission(t)
	zipped, wrote, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := Open(zipped, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !pkg.Valid() || len(pkg.Documents) != 4 {
		t.Fatalf("package: %+v", pkg.Documents)
	}
	ss := pkg.Metadata.SubmissionSet
	if ss.SubmissionTime != "20261125120000" || ss.UniqueID == "" || ss.SourceID == "" || ss.UniqueID != wrote.SubmissionSet.UniqueID {
		t.Errorf("submission set %+v", ss)
	}
	if len(ss.AuthorTelecom) != 1 || TelecomAddress(ss.AuthorTelecom[0]) != "alice@hospital.example" {
		t.Errorf("author telecom %v", ss.AuthorTelecom)
	}
	if len(ss.IntendedRecipients) != 2 || RecipientAddress(ss.IntendedRecipients[1]) != "carol@clinic.example" {
		t.Errorf("intended recipients %v", ss.IntendedRecipients)
	}
	if ss.PatientID != "12345^^^&2.16.840.1.113883.19.5.99999.2&ISO" || !ss.Limited {
		t.Errorf("submission patient %q limited %v", ss.PatientID, ss.Limited)
	}
	for i, od := range pkg.Documents[:3] {
		src := s.Documents[i].Data
		if !bytes.Equal(od.Data, src) {
			t.Fatalf("%s differs", od.Name)
		}
		h, err := ccda.ReadHeader(src, ccda.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		e := od.Entry
		sum := sha1.Sum(src)
		pid := h.Patient.IDs[0]
		want := DocumentEntry{
			ID: fmt.Sprintf("Document%02d", i+1), URI: fmt.Sprintf("DOC%04d.XML", i+1), MimeType: "text/xml",
			UniqueID: h.ID.Root + "^" + h.ID.Extension, Hash: hex.EncodeToString(sum[:]), Size: int64(len(src)),
			PatientID: pid.Extension + "^^^&" + pid.Root + "&ISO", Title: h.Title, LanguageCode: h.Language,
			TypeCode:   Coded{h.Code.Code, "2.16.840.1.113883.6.1", h.Code.DisplayName},
			ClassCode:  Coded{h.Code.Code, "2.16.840.1.113883.6.1", h.Code.DisplayName},
			FormatCode: Coded{"urn:hl7-org:sdwg:ccda-structuredBody:2.1", "1.3.6.1.4.1.19376.1.2.3", "C-CDA structuredBody 2.1"},
		}
		if e.ID != want.ID || e.URI != want.URI || e.MimeType != want.MimeType || e.UniqueID != want.UniqueID || e.Hash != want.Hash ||
			e.Size != want.Size || e.PatientID != want.PatientID || e.Title != want.Title || e.TypeCode != want.TypeCode ||
			e.ClassCode != want.ClassCode || e.FormatCode != want.FormatCode || e.LanguageCode != want.LanguageCode || e.Limited {
			t.Errorf("%s entry\n got %+v\nwant %+v", od.Name, e, want)
		}
		if e.Confidentiality.Code != h.Confidentiality.Code || e.SourcePatientID != e.PatientID {
			t.Errorf("%s confidentiality %+v source patient %q", od.Name, e.Confidentiality, e.SourcePatientID)
		}
		if len(e.AuthorTelecom) != 1 || e.AuthorTelecom[0] != "^^Internet^alice@hospital.example" {
			t.Errorf("%s author telecom %v", od.Name, e.AuthorTelecom)
		}
		wantInfo := []string{"PID-3|" + want.PatientID, "PID-5|" + h.Patient.Family, "PID-7|" + h.Patient.BirthTime, "PID-8|" + h.Patient.Gender.Code}
		if len(e.SourcePatientInfo) != 4 || e.SourcePatientInfo[0] != wantInfo[0] || !strings.HasPrefix(e.SourcePatientInfo[1], wantInfo[1]+"^") ||
			e.SourcePatientInfo[2] != wantInfo[2] || e.SourcePatientInfo[3] != wantInfo[3] {
			t.Errorf("%s sourcePatientInfo %q", od.Name, e.SourcePatientInfo)
		}
	}
	// The discharge summary's time was +0000; the referral note's -0500
	// becomes UTC.
	if ct := pkg.Documents[1].Entry.CreationTime; ct != "20261201143000" {
		t.Errorf("creation time %q", ct)
	}
	pdf := pkg.Documents[3]
	if pdf.Entry.URI != "DOC0004.PDF" || pdf.Entry.MimeType != "application/pdf" || !pdf.Entry.Limited || pdf.Entry.Title != "scan.pdf" ||
		!bytes.Equal(pdf.Data, s.Documents[3].Data) || pdf.Entry.PatientID != ss.PatientID {
		t.Errorf("pdf entry %+v", pdf.Entry)
	}
}

// TestPatientIDFromContext: a Direct context's patient id wins over the
// C-CDA's.
func TestPatientIDFromContext(t *testing.T) {
	s := sampleSubmission(t)
	s.PatientID = CX("2.16.840.1.113883.19.999999", "777")
	zipped, _, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := Open(zipped, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range pkg.Documents {
		if d.Entry.PatientID != "777^^^&2.16.840.1.113883.19.999999&ISO" {
			t.Errorf("%s patient %q", d.Name, d.Entry.PatientID)
		}
	}
	if pkg.Metadata.SubmissionSet.PatientID != s.PatientID {
		t.Errorf("submission set patient %q", pkg.Metadata.SubmissionSet.PatientID)
	}
}

// TestUnzipAndWellFormed: Info-ZIP's unzip tests the package, lists the
// XDM layout, and Python's XML parser reads METADATA.XML, whose hashes and
// sizes match the files unzip extracts.
func TestUnzipAndWellFormed(t *testing.T) {
	if _, err := exec.LookPath("unzip"); err != nil {
		t.Fatal("unzip is not installed: make test-deps")
	}
	zipped, _, err := Build(sampleSubmission(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "xdm.zip")
	if err := os.WriteFile(file, zipped, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unzip", "-t", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Fatalf("unzip -t: %v\n%s", err, out)
	}
	out, err = exec.Command("unzip", "-Z1", file).CombinedOutput()
	if err != nil {
		t.Fatalf("unzip -Z1: %v\n%s", err, out)
	}
	names := strings.Fields(string(out))
	want := []string{"INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML",
		"IHE_XDM/SUBSET01/DOC0002.XML", "IHE_XDM/SUBSET01/DOC0003.XML", "IHE_XDM/SUBSET01/DOC0004.PDF"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("names %v, want %v", names, want)
	}
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("unzip", "-q", file, "-d", x).CombinedOutput(); err != nil {
		t.Fatalf("unzip: %v\n%s", err, out)
	}
	script := `
import hashlib, os, sys, xml.dom.minidom
d = sys.argv[1]
doc = xml.dom.minidom.parse(os.path.join(d, 'IHE_XDM/SUBSET01/METADATA.XML'))
root = doc.documentElement
assert root.localName == 'SubmitObjectsRequest', root.localName
n = 0
for eo in root.getElementsByTagNameNS('urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0', 'ExtrinsicObject'):
    slots = {}
    for s in eo.getElementsByTagNameNS('urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0', 'Slot'):
        slots[s.getAttribute('name')] = [v.firstChild.data for v in s.getElementsByTagNameNS('urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0', 'Value')]
    data = open(os.path.join(d, 'IHE_XDM/SUBSET01', slots['URI'][0]), 'rb').read()
    assert slots['hash'][0] == hashlib.sha1(data).hexdigest(), slots['URI']
    assert int(slots['size'][0]) == len(data), slots['URI']
    n += 1
assert n == 4, n
index = xml.dom.minidom.parse(os.path.join(d, 'INDEX.HTM'))
assert index.documentElement.namespaceURI == 'http://www.w3.org/1999/xhtml'
assert len(index.getElementsByTagName('li')) == 4
print('OK')
`
	out, err = exec.Command("python3", "-c", script, x).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("python3 METADATA.XML check: %v\n%s", err, out)
	}
}

// handMade builds a zip entry by entry, as other implementations lay
// packages out.
func handMade(t testing.TB, entries [][2]string, method uint16) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e[0], Method: method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(e[1]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// otherMetadata is a METADATA.XML as other implementations write it:
// other prefixes, the submission set classified outside the package,
// upper-case hash, URI in lower case.
func otherMetadata(doc []byte, uri string) string {
	sum := sha1.Sum(doc)
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<ns4:SubmitObjectsRequest xmlns:ns4="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
<RegistryObjectList>
<ExtrinsicObject id="urn:uuid:0b4a8a1e-4c3b-4f0e-9a51-1c1e1f1a1b1c" mimeType="text/xml" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
<Slot name="hash"><ValueList><Value>%s</Value></ValueList></Slot>
<Slot name="size"><ValueList><Value>%d</Value></ValueList></Slot>
<Slot name="URI"><ValueList><Value>%s</Value></ValueList></Slot>
<Slot name="creationTime"><ValueList><Value>20261125</Value></ValueList></Slot>
<ExternalIdentifier identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="1.2.3.4^doc1" registryObject="urn:uuid:0b4a8a1e-4c3b-4f0e-9a51-1c1e1f1a1b1c" id="e1"/>
</ExtrinsicObject>
<RegistryPackage id="urn:uuid:11111111-2222-4333-8444-555555555555">
<Slot name="intendedRecipient"><ValueList><Value>Clinic|Bob^Doctor|^^Internet^bob@clinic.example</Value></ValueList></Slot>
<Classification classificationScheme="urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d" classifiedObject="urn:uuid:11111111-2222-4333-8444-555555555555" nodeRepresentation="" id="c1">
<Slot name="authorTelecommunication"><ValueList><Value>^^Internet^sender@other.example</Value></ValueList></Slot>
</Classification>
</RegistryPackage>
<Classification classifiedObject="urn:uuid:11111111-2222-4333-8444-555555555555" classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd" id="c2"/>
<Association associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember" sourceObject="urn:uuid:11111111-2222-4333-8444-555555555555" targetObject="urn:uuid:0b4a8a1e-4c3b-4f0e-9a51-1c1e1f1a1b1c" id="a1"/>
</RegistryObjectList>
</ns4:SubmitObjectsRequest>
`, strings.ToUpper(hex.EncodeToString(sum[:])), len(doc), uri)
}

// TestOpenHandMade: packages laid out as other implementations do open.
func TestOpenHandMade(t *testing.T) {
	doc := testdoc(t, "referral-note.xml")
	readme := "This is an XDM package.\r\nMade by another HISP.\r\n"
	for _, tc := range []struct {
		name    string
		entries [][2]string
		method  uint16
	}{
		{"upper case, bad XHTML", [][2]string{{"INDEX.HTM", "<html><body><p>unclosed<br><a href=x>&nbsp;</body>"}, {"README.TXT", readme}, {"IHE_XDM/", ""}, {"IHE_XDM/SUBSET01/", ""},
			{"IHE_XDM/SUBSET01/METADATA.XML", otherMetadata(doc, "doc0001.xml")}, {"IHE_XDM/SUBSET01/DOC0001.XML", string(doc)}}, zip.Deflate},
		{"lower case, extra files, stored", [][2]string{{"index.htm", "<html></html>"}, {"readme.txt", readme}, {"extra/notes.txt", "x"},
			{"ihe_xdm/subset01/metadata.xml", otherMetadata(doc, "DOC0001.XML")}, {"ihe_xdm/subset01/doc0001.xml", string(doc)},
			{"ihe_xdm/subset01/STYLE.XSL", "<xsl/>"}}, zip.Store},
		{"other subset name", [][2]string{{"IHE_XDM/Subset_A/METADATA.XML", otherMetadata(doc, "Document1.xml")}, {"IHE_XDM/Subset_A/Document1.xml", string(doc)}}, zip.Deflate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkg, err := Open(handMade(t, tc.entries, tc.method), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !pkg.Valid() || len(pkg.Documents) != 1 || !bytes.Equal(pkg.Documents[0].Data, doc) {
				t.Fatalf("documents %+v", pkg.Documents)
			}
			ss := pkg.Metadata.SubmissionSet
			if len(ss.IntendedRecipients) != 1 || RecipientAddress(ss.IntendedRecipients[0]) != "bob@clinic.example" ||
				len(ss.AuthorTelecom) != 1 || TelecomAddress(ss.AuthorTelecom[0]) != "sender@other.example" {
				t.Fatalf("submission set %+v", ss)
			}
			if pkg.Documents[0].Entry.UniqueID != "1.2.3.4^doc1" {
				t.Fatalf("entry %+v", pkg.Documents[0].Entry)
			}
		})
	}
}

// TestOpenInfoZip: a package zipped by Info-ZIP's zip from a folder.
func TestOpenInfoZip(t *testing.T) {
	if _, err := exec.LookPath("zip"); err != nil {
		t.Fatal("zip is not installed: make test-deps")
	}
	doc := testdoc(t, "ccd.xml")
	dir := t.TempDir()
	sub := filepath.Join(dir, "pkg", "IHE_XDM", "SUBSET01")
	os.MkdirAll(sub, 0o755)
	os.WriteFile(filepath.Join(dir, "pkg", "README.TXT"), []byte("readme\r\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pkg", "INDEX.HTM"), []byte("<html/>"), 0o644)
	os.WriteFile(filepath.Join(sub, "METADATA.XML"), []byte(otherMetadata(doc, "DOC0001.XML")), 0o644)
	os.WriteFile(filepath.Join(sub, "DOC0001.XML"), doc, 0o644)
	cmd := exec.Command("zip", "-q", "-r", filepath.Join(dir, "p.zip"), ".")
	cmd.Dir = filepath.Join(dir, "pkg")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("zip: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "p.zip"))
	pkg, err := Open(data, Limits{})
	if err != nil || !pkg.Valid() || !bytes.Equal(pkg.Documents[0].Data, doc) {
		t.Fatalf("%v %+v", err, pkg)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHostile: each hostile package is refused with its own reason, in
// memory, with nothing written to disk.
func TestHostile(t *testing.T) {
	doc := testdoc(t, "discharge-summary.xml")
	meta := otherMetadata(doc, "DOC0001.XML")
	good := func(extra ...[2]string) [][2]string {
		return append([][2]string{{"IHE_XDM/SUBSET01/METADATA.XML", meta}, {"IHE_XDM/SUBSET01/DOC0001.XML", string(doc)}}, extra...)
	}
	// A real zip bomb: 64 MiB of zeros deflated to some 64 KiB.
	var bombZip bytes.Buffer
	{
		zw := zip.NewWriter(&bombZip)
		for _, e := range good() {
			w, _ := zw.Create(e[0])
			w.Write([]byte(e[1]))
		}
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: "IHE_XDM/SUBSET01/BOMB.BIN", Method: zip.Deflate})
		io.CopyN(w, zeros{}, 64<<20)
		zw.Close()
	}
	// 10,000 entries.
	var many [][2]string
	for i := range 10000 {
		many = append(many, [2]string{fmt.Sprintf("IHE_XDM/SUBSET01/F%05d.TXT", i), ""})
	}
	many = append(many, good()...)
	deep := strings.Repeat("d/", 20) + "x.txt"
	tooDeepDTD := `<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><SubmitObjectsRequest>&e;</SubmitObjectsRequest>`

	wd, _ := os.Getwd()
	empty := t.TempDir()
	if err := os.Chdir(empty); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	for _, tc := range []struct {
		name   string
		data   []byte
		lim    Limits
		want   error
		reason string
	}{
		{"zip bomb", bombZip.Bytes(), Limits{}, ErrRatio, "compression-ratio"},
		{"too large", bombZip.Bytes(), Limits{MaxSize: 1 << 20}, ErrTooLarge, "too-large"},
		{"10,000 entries", handMade(t, many, zip.Store), Limits{}, ErrTooManyEntries, "too-many-entries"},
		{"dot dot", handMade(t, good([2]string{"../../etc/cron.d/x", "x"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"dot dot inside", handMade(t, good([2]string{"IHE_XDM/../../x", "x"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"absolute", handMade(t, good([2]string{"/etc/passwd", "x"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"backslash", handMade(t, good([2]string{`..\..\windows\x.dll`, "x"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"NUL", handMade(t, good([2]string{"IHE_XDM/SUBSET01/a\x00.xml", "x"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"drive", handMade(t, good([2]string{"C:/x", "x"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"case duplicate", handMade(t, good([2]string{"ihe_xdm/subset01/doc0001.xml", "other"}), zip.Deflate), Limits{}, ErrUnsafeName, "unsafe-name"},
		{"nesting", handMade(t, good([2]string{deep, "x"}), zip.Deflate), Limits{}, ErrNesting, "nesting"},
		{"DTD in metadata", handMade(t, [][2]string{{"IHE_XDM/SUBSET01/METADATA.XML", tooDeepDTD}}, zip.Deflate), Limits{}, ErrMetadata, "bad-metadata"},
		{"no metadata", handMade(t, [][2]string{{"a.txt", "x"}}, zip.Deflate), Limits{}, ErrNotXDM, "not-xdm"},
		{"not a zip", []byte("%PDF-1.7"), Limits{}, ErrNotZip, "not-zip"},
		{"truncated zip", handMade(t, good(), zip.Deflate)[:200], Limits{}, ErrNotZip, "not-zip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.data, tc.lim)
			if !errors.Is(err, tc.want) || Reason(err) != tc.reason {
				t.Fatalf("got %v (%s), want %v (%s)", err, Reason(err), tc.want, tc.reason)
			}
		})
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("Open wrote %d files", len(ents))
	}
}

// TestMismatches: a document whose hash or size differs from its metadata,
// or that is missing, is set aside with its reason; the others open.
func TestMismatches(t *testing.T) {
	doc := testdoc(t, "discharge-summary.xml")
	other := testdoc(t, "ccd.xml")
	meta := strings.Replace(otherMetadata(doc, "DOC0001.XML"), "</RegistryObjectList>", `<ExtrinsicObject id="d2" mimeType="text/xml">
<Slot name="URI"><ValueList><Value>DOC0002.XML</Value></ValueList></Slot>
<Slot name="hash"><ValueList><Value>0000000000000000000000000000000000000000</Value></ValueList></Slot>
</ExtrinsicObject>
<ExtrinsicObject id="d3" mimeType="text/xml"><Slot name="URI"><ValueList><Value>DOC0003.XML</Value></ValueList></Slot>
<Slot name="size"><ValueList><Value>5</Value></ValueList></Slot></ExtrinsicObject>
<ExtrinsicObject id="d4" mimeType="text/xml"><Slot name="URI"><ValueList><Value>GONE.XML</Value></ValueList></Slot></ExtrinsicObject>
</RegistryObjectList>`, 1)
	pkg, err := Open(handMade(t, [][2]string{{"IHE_XDM/SUBSET01/METADATA.XML", meta}, {"IHE_XDM/SUBSET01/DOC0001.XML", string(doc)},
		{"IHE_XDM/SUBSET01/DOC0002.XML", string(other)}, {"IHE_XDM/SUBSET01/DOC0003.XML", string(other)}}, zip.Deflate), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if pkg.Valid() || len(pkg.Documents) != 4 {
		t.Fatalf("%+v", pkg.Documents)
	}
	if d := pkg.Documents[0]; d.Err != nil || !bytes.Equal(d.Data, doc) {
		t.Errorf("first document: %v", d.Err)
	}
	for i, want := range []string{"", "hash-mismatch", "size-mismatch", "missing-document"} {
		if d := pkg.Documents[i]; i > 0 && (Reason(d.Err) != want || d.Data != nil) {
			t.Errorf("document %d: %v, want %s", i, d.Err, want)
		}
	}
}

// TestLyingSizes: an entry that holds more than its header says is not
// read past what it declared.
func TestLyingSizes(t *testing.T) {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create("IHE_XDM/SUBSET01/METADATA.XML")
	w.Write([]byte(strings.Replace(otherMetadata([]byte("x"), "DOC0001.XML"), `<Slot name="size"><ValueList><Value>1</Value></ValueList></Slot>`, "", 1)))
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	io.CopyN(fw, zeros{}, 8<<20)
	fw.Close()
	raw, _ := zw.CreateRaw(&zip.FileHeader{Name: "IHE_XDM/SUBSET01/DOC0001.XML", Method: zip.Deflate,
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: 1})
	raw.Write(comp.Bytes())
	zw.Close()
	pkg, err := Open(b.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if d := pkg.Documents[0]; Reason(d.Err) != "unreadable" || d.Data != nil {
		t.Fatalf("lying entry read: %v", d.Err)
	}
}

func TestMetadataWellFormedGo(t *testing.T) {
	_, m, err := Build(sampleSubmission(t))
	if err != nil {
		t.Fatal(err)
	}
	raw := MarshalMetadata(m)
	d := xml.NewDecoder(bytes.NewReader(raw))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	back, err := ParseMetadata(raw)
	if err != nil || len(back.Documents) != 4 {
		t.Fatal(err)
	}
}
