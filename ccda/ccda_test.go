package ccda

import (
	"bytes"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testccda"
)

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadHeaders(t *testing.T) {
	for _, tc := range []struct {
		file, code, title, patient, birth, gender, time, conf, author, custodian string
		ids                                                                      []ID
	}{
		{"discharge-summary.xml", "18842-5", "Discharge Summary", "Testy Q McTestface", "19700101", "F", "20261125100000+0000", "N",
			"Dr. Alice Hospitalist", "Synthetic General Hospital", []ID{{"2.16.840.1.113883.19.5.99999.2", "12345"}}},
		{"referral-note.xml", "57133-1", "Referral Note", "Synthia Example", "19851231", "M", "20261201093000-0500", "R",
			"Bob Primarycare", "Synthetic Family Practice", []ID{{"2.16.840.1.113883.19.5.99999.2", "67890"}, {"2.16.840.1.113883.4.1", "999-00-0000"}}},
		{"ccd.xml", "34133-9", "Continuity of Care Document", "Pat Placeholder Jr.", "20000229", "UN", "20261115", "N",
			"", "Synthetic Clinic", []ID{{"2.16.840.1.113883.19.5.99999.3", "ABC-555"}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data := load(t, tc.file)
			if !Is(data) {
				t.Fatal("Is = false")
			}
			h, err := ReadHeader(data, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if h.Code.Code != tc.code || h.Code.System != "2.16.840.1.113883.6.1" || h.Code.DisplayName == "" {
				t.Errorf("code %+v, want %s", h.Code, tc.code)
			}
			if h.Title != tc.title || h.EffectiveTime != tc.time || h.Confidentiality.Code != tc.conf {
				t.Errorf("title %q time %q conf %q", h.Title, h.EffectiveTime, h.Confidentiality.Code)
			}
			if len(h.TemplateIDs) != 2 || h.TemplateIDs[0].Root != "2.16.840.1.113883.10.20.22.1.1" {
				t.Errorf("templateIds %v", h.TemplateIDs)
			}
			if !equalIDs(h.Patient.IDs, tc.ids) || h.Patient.BirthTime != tc.birth || h.Patient.Gender.Code != tc.gender || h.Patient.Name != tc.patient {
				t.Errorf("patient %+v", h.Patient)
			}
			if len(h.Authors) != 1 || h.Authors[0].Name != tc.author || h.Authors[0].Time == "" {
				t.Errorf("authors %+v", h.Authors)
			}
			if h.Custodian.Name != tc.custodian || len(h.Custodian.IDs) != 1 {
				t.Errorf("custodian %+v", h.Custodian)
			}
		})
	}
	h, _ := ReadHeader(load(t, "discharge-summary.xml"), Limits{})
	if h.Patient.Name != "Testy Q McTestface" || h.Authors[0].Organization != "Synthetic General Hospital" || h.Language != "en-US" ||
		h.SetID.Extension != "TEST-DS-SET" || h.Version != "1" || h.ID.Extension != "TEST-DS-0001" {
		t.Errorf("header %+v", h)
	}
	h, _ = ReadHeader(load(t, "ccd.xml"), Limits{})
	if h.Authors[0].Device != "Synthetic EHR 1.0" || h.Patient.Name != "Pat Placeholder Jr." {
		t.Errorf("ccd author %+v patient %q", h.Authors[0], h.Patient.Name)
	}
}

func equalIDs(a, b []ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadSections(t *testing.T) {
	doc, err := Read(load(t, "ccd.xml"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Sections) != 2 || doc.Sections[0].Title != "Problems" || doc.Sections[1].Title != "Results" {
		t.Fatalf("sections %+v", doc.Sections)
	}
	if s := doc.Sections[0]; len(s.Sections) != 1 || s.Sections[0].Title != "Resolved problems" || s.Code.Code != "11450-4" {
		t.Fatalf("nested %+v", s)
	}
	doc, err = Read(load(t, "discharge-summary.xml"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Sections) != 3 || doc.Sections[1].Text == nil {
		t.Fatalf("sections %+v", doc.Sections)
	}
}

func TestHTML(t *testing.T) {
	doc, err := Read(load(t, "discharge-summary.xml"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	out := string(HTML(doc))
	for _, want := range []string{
		"<h1>Discharge Summary</h1>", "Testy Q McTestface", "1970-01-01", "Female", "Discharge Summary (18842-5)",
		"2026-11-25 10:00 +0000", "Dr. Alice Hospitalist, Synthetic General Hospital", "<h2>Discharge Medications</h2>",
		"<td>Acetaminophen 500 mg tablet</td>", "Test &amp; placebo &lt;script&gt;alert(1)&lt;/script&gt;",
		"<td><b>Once daily</b></td>", "<ol><li>Admitted for observation.</li>", "the full report [https://example.invalid/report]",
		"[multimedia not shown]", "résumé", "default-src 'none'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "<a ", "href=", "src=", "url(", "<img", "style=", "@import", "CDA.xsl", "ID=", "med1"} {
		if strings.Contains(out, bad) {
			t.Errorf("HTML holds %q", bad)
		}
	}
	// Well-formed enough for an XML parser: every element closed.
	d := xml.NewDecoder(strings.NewReader(strings.Replace(strings.Replace(out, "<!DOCTYPE html>", "", 1), "<br>", "<br/>", -1)))
	d.Strict = false
	d.AutoClose = []string{"meta"}
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("HTML does not parse: %v", err)
			}
			break
		}
	}
}

// TestHTMLHostileNarrative: markup-like content of every kind stays text.
func TestHTMLHostileNarrative(t *testing.T) {
	doc := []byte(`<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:h="http://www.w3.org/1999/xhtml"><title>&lt;img src=x onerror=alert(1)&gt;</title>
<recordTarget><patientRole><patient><name><given>"&gt;&lt;script&gt;</given></name></patient></patientRole></recordTarget>
<component><structuredBody><component><section><title>T</title><text>
<h:script>alert(1)</h:script><paragraph styleCode="x;background:url(http://evil/)" onclick="x">p</paragraph>
<linkHtml href="javascript:alert(1)">click</linkHtml><td colspan="2&quot; onmouseover=&quot;x">c</td>
<content ID="a" style="background:url(http://evil/)">s</content></text></section></component></structuredBody></component></ClinicalDocument>`)
	d, err := Read(doc, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	out := string(HTML(d))
	for _, bad := range []string{"<img", "<script", "onclick", "onmouseover", "url(", "evil", "href=", "alert(1)</"} {
		if strings.Contains(out, bad) {
			t.Errorf("HTML holds %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, "&lt;img src=x onerror=alert(1)&gt;") || !strings.Contains(out, "click [javascript:alert(1)]") {
		t.Errorf("escaped text missing:\n%s", out)
	}
}

func TestRefusals(t *testing.T) {
	deep := "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">" + strings.Repeat("<a>", 300) + strings.Repeat("</a>", 300) + "</ClinicalDocument>"
	for _, tc := range []struct {
		name string
		doc  string
		lim  Limits
		want error
	}{
		{"external entity", `<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>`, Limits{}, ErrDTD},
		{"billion laughs", `<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol2;</title></ClinicalDocument>`, Limits{}, ErrDTD},
		{"doctype only", `<!DOCTYPE ClinicalDocument SYSTEM "http://evil.example/cda.dtd"><ClinicalDocument xmlns="urn:hl7-org:v3"/>`, Limits{}, ErrDTD},
		{"undeclared entity", `<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>`, Limits{}, ErrMalformed},
		{"not well-formed", `<ClinicalDocument xmlns="urn:hl7-org:v3"><title>x</titel></ClinicalDocument>`, Limits{}, ErrMalformed},
		{"truncated", `<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody>`, Limits{}, ErrMalformed},
		{"not CDA", `<html xmlns="http://www.w3.org/1999/xhtml"/>`, Limits{}, ErrNotCCDA},
		{"wrong namespace", `<ClinicalDocument xmlns="urn:hl7-org:v2"/>`, Limits{}, ErrNotCCDA},
		{"too deep", deep, Limits{}, ErrTooDeep},
		{"too large", `<ClinicalDocument xmlns="urn:hl7-org:v3"/>`, Limits{MaxSize: 10}, ErrTooLarge},
		{"unknown charset", `<?xml version="1.0" encoding="EBCDIC"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>`, Limits{}, ErrMalformed},
		{"trailing element", `<ClinicalDocument xmlns="urn:hl7-org:v3"/><x/>`, Limits{}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read([]byte(tc.doc), tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if Is([]byte(`<!DOCTYPE x><ClinicalDocument xmlns="urn:hl7-org:v3"/>`)) {
		t.Error("Is accepts a DTD")
	}
}

func TestLatin1(t *testing.T) {
	doc := []byte("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>R\xe9sum\xe9</title></ClinicalDocument>")
	h, err := ReadHeader(doc, Limits{})
	if err != nil || h.Title != "Résumé" {
		t.Fatalf("%q %v", h, err)
	}
}

func TestPrefixedRoot(t *testing.T) {
	doc := []byte(`<v3:ClinicalDocument xmlns:v3="urn:hl7-org:v3"><v3:title>T</v3:title></v3:ClinicalDocument>`)
	if !Is(doc) {
		t.Fatal("Is = false for a prefixed root")
	}
	if h, err := ReadHeader(doc, Limits{}); err != nil || h.Title != "T" {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestFormatTime(t *testing.T) {
	for in, want := range map[string]string{
		"20261125100000+0000": "2026-11-25 10:00 +0000", "19700101": "1970-01-01", "202611": "2026-11", "2026": "2026",
		"garbage": "garbage", "": "", "20261125100000.123-0500": "2026-11-25 10:00 -0500",
	} {
		if got := FormatTime(in); got != want {
			t.Errorf("FormatTime(%q) = %q, want %q", in, got, want)
		}
	}
}

// A large document reads in memory proportional to its narrative, not
// its entries.
func BenchmarkRead5MB(b *testing.B) {
	doc := testccda.Big(5 << 20)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Read(doc, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBigDocument(t *testing.T) {
	doc := testccda.Big(1 << 20)
	if len(doc) < 1<<20 || !bytes.HasPrefix(doc, []byte("<?xml")) {
		t.Fatal(len(doc))
	}
	d, err := Read(doc, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Sections) == 0 || d.Title == "" {
		t.Fatal("no sections")
	}
}

// TestByteOrderMark: documents saved with a UTF-8 byte order mark, as
// Windows tools write them, read.
func TestByteOrderMark(t *testing.T) {
	doc := append([]byte("\xef\xbb\xbf"), load(t, "referral-note.xml")...)
	if !Is(doc) {
		t.Fatal("Is = false with a BOM")
	}
	if d, err := Read(doc, Limits{}); err != nil || d.Title != "Referral Note" {
		t.Fatalf("%v", err)
	}
}
