package xdm

import (
	"archive/zip"
	"testing"
)

// FuzzOpen: any bytes open as a package or fail with an error of a known
// kind; never a panic, and never more memory than the limits allow. The
// seed corpus in testdata/fuzz/FuzzOpen holds packages of several layouts.
func FuzzOpen(f *testing.F) {
	zipped, _, err := Build(Submission{Author: "a@b.example", Documents: []Document{{Name: "c.xml", Data: testdoc(f, "referral-note.xml")}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(zipped)
	doc := testdoc(f, "ccd.xml")
	f.Add(handMade(f, [][2]string{{"ihe_xdm/subset01/metadata.xml", otherMetadata(doc, "DOC0001.XML")}, {"ihe_xdm/subset01/doc0001.xml", string(doc)}}, zip.Store))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkg, err := Open(data, Limits{MaxSize: 4 << 20, MaxEntries: 100})
		if err != nil {
			if Reason(err) == "error" {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		for _, d := range pkg.Documents {
			if (d.Err == nil) == (d.Data == nil) && d.Entry.Size != 0 {
				t.Fatalf("document %s: data %d bytes, err %v", d.Name, len(d.Data), d.Err)
			}
		}
	})
}

// FuzzParseMetadata: the METADATA.XML reader. Seeds in
// testdata/fuzz/FuzzParseMetadata.
func FuzzParseMetadata(f *testing.F) {
	_, m, err := Build(sampleSubmission(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(MarshalMetadata(m))
	f.Add([]byte(otherMetadata([]byte("x"), "DOC0001.XML")))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetadata(data)
		if err != nil {
			if Reason(err) != "bad-metadata" {
				t.Fatalf("error of another kind: %v", err)
			}
			return
		}
		if len(m.Documents) == 0 {
			t.Fatal("metadata without documents accepted")
		}
		// What was read writes out and reads back.
		if _, err := ParseMetadata(MarshalMetadata(m)); err != nil {
			t.Fatalf("written metadata does not read back: %v", err)
		}
	})
}

// FuzzParseContext: the metadata.txt reader.
func FuzzParseContext(f *testing.F) {
	f.Add([]byte("version: 1.0\r\nid: x\r\npatient-id: 1.2.3:4\r\ntype: general/report\r\npurpose: treatment\r\npatient: givenName=A; surname=B\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseContext(data)
		if err == nil {
			if _, err := ParseContext(c.Bytes()); err != nil {
				t.Fatalf("valid context does not round-trip: %v", err)
			}
		}
	})
}
