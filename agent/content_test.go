package agent

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/trust"
	"github.com/hisp-project/hisp/xdm"
)

// contentAgent is an agent of the fixture with the content layer on.
func (f *fixture) contentAgent(c ContentOptions) *Agent {
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := New(Options{
		Store:          f.st,
		Discoverer:     certs.NewDiscoverer(certs.DiscoveryOptions{Resolver: f.resolver}),
		Validator:      trust.NewValidator(trust.Options{Logger: logger}),
		Hostname:       "hisp.test",
		Logger:         logger,
		ReloadInterval: -1,
		Content:        &c,
	})
	f.t.Cleanup(func() { a.Close() })
	f.agents = append(f.agents, a)
	return a
}

var timeNow = time.Now

func ccdaFile(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("..", "ccda", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64(data []byte) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

const testContext = "version: 1.0\r\nid: 7f6c1a5e-0b0c-4a39-9a4e-3c2b1d0e9f8a\r\npatient-id: 2.16.840.1.113883.19.999999:123456\r\n" +
	"type: referral/report\r\npurpose: treatment\r\npatient: givenName=Testy; surname=McTestface; dateOfBirth=1970-01-01\r\n"

// clinicalMessage is a message with a text part, the C-CDA documents given
// and optionally a Direct context and a PDF.
func clinicalMessage(t testing.TB, from, to string, withContext, withPDF bool, docs ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: clinical\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <clin-%s@test>\r\n", from, to, strings.Join(docs, "-"))
	if withContext {
		b.WriteString("X-Direct-Context: <ctx-1@a.example>\r\n")
	}
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\nDocuments attached.\r\n")
	for _, d := range docs {
		data := ccdaFile(t, d)
		fmt.Fprintf(&b, "--outer\r\nContent-Type: application/xml; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", d, d, b64(data))
	}
	if withPDF {
		fmt.Fprintf(&b, "--outer\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", b64([]byte("%PDF-1.7 synthetic")))
	}
	if withContext {
		fmt.Fprintf(&b, "--outer\r\nContent-Type: text/plain\r\nContent-ID: <ctx-1@a.example>\r\nContent-Disposition: attachment; filename=\"metadata.txt\"\r\n\r\n%s\r\n", testContext)
	}
	b.WriteString("--outer--\r\n")
	return []byte(b.String())
}

// part is a leaf of a parsed message.
type part struct {
	mediaType, name string
	header          gomessage.Header
	data            []byte
}

// leaves parses msg with go-message, an independent MIME reader.
func leaves(t testing.TB, msg []byte) []part {
	t.Helper()
	e, err := gomessage.Read(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("filed message does not parse: %v", err)
	}
	var out []part
	err = e.Walk(func(_ []int, ent *gomessage.Entity, err error) error {
		if err != nil {
			return err
		}
		mt, params, _ := ent.Header.ContentType()
		if strings.HasPrefix(mt, "multipart/") {
			return nil
		}
		data, err := io.ReadAll(ent.Body)
		if err != nil {
			return err
		}
		name := params["name"]
		if _, dp, err := ent.Header.ContentDisposition(); err == nil && dp["filename"] != "" {
			name = dp["filename"]
		}
		out = append(out, part{mt, name, ent.Header, data})
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	return out
}

func find(parts []part, name string) []part {
	var out []part
	for _, p := range parts {
		if p.name == name {
			out = append(out, p)
		}
	}
	return out
}

// TestContentRoundTrip: a message with a C-CDA and a Direct context goes
// out packaged (policy "ccda") and comes in with the C-CDA, the package
// byte for byte, an HTML view and the context in the verification field.
func TestContentRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.contentAgent(ContentOptions{XDM: "ccda", XDMDocuments: true, CCDAHTML: true})
	msg := clinicalMessage(t, "alice@a.example", "bob@b.example", true, true, "discharge-summary.xml")
	env := Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}
	out, err := a.Outbound(ctx, env, msg)
	if err != nil {
		t.Fatal(err)
	}
	sent := leaves(t, out.Message)
	zips := find(sent, "xdm.zip")
	if len(zips) != 1 || zips[0].mediaType != "application/zip" || len(find(sent, "discharge-summary.xml")) != 1 || len(find(sent, "scan.pdf")) != 1 {
		t.Fatalf("outbound parts: %v", names(sent))
	}
	pkg, err := xdm.Open(zips[0].data, xdm.Limits{})
	if err != nil || len(pkg.Documents) != 1 || !bytes.Equal(pkg.Documents[0].Data, ccdaFile(t, "discharge-summary.xml")) {
		t.Fatalf("package: %v %+v", err, pkg)
	}
	ss := pkg.Metadata.SubmissionSet
	if ss.PatientID != "123456^^^&2.16.840.1.113883.19.999999&ISO" || xdm.TelecomAddress(ss.AuthorTelecom[0]) != "alice@a.example" ||
		xdm.RecipientAddress(ss.IntendedRecipients[0]) != "bob@b.example" {
		t.Errorf("submission set from the context: %+v", ss)
	}
	if evs := f.audited("outbound-content", out.MessageID); len(evs) != 1 || !strings.Contains(evs[0].Reason, "packaged 1 document") {
		t.Errorf("outbound-content audit: %+v", evs)
	}
	// A retry of the same message (a deferred recipient) is not packaged
	// again.
	again, err := a.Outbound(ctx, env, out.Message)
	if err != nil || len(find(leaves(t, again.Message), "xdm.zip")) != 1 {
		t.Fatalf("retry packaged twice: %v", err)
	}

	res, err := a.Inbound(ctx, env, out.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := splitMessage(res.Message)
	for _, w := range []string{"context=pass", "context-detail=\"id 7f6c1a5e", "patient-id 2.16.840.1.113883.19.999999:123456",
		"purpose treatment", "ccda=pass", "ccda-detail=\"discharge-summary.xml: Discharge Summary (18842-5)\"", "xdm=pass",
		"xdm-detail=\"xdm.zip: 1 document(s), 0 added beside the package, 1 already attached"} {
		if !bytes.Contains(unfold(hb), []byte(w)) {
			t.Errorf("verification lacks %q:\n%s", w, hb)
		}
	}
	got := leaves(t, res.Message)
	if d := find(got, "discharge-summary.xml"); len(d) != 1 || !bytes.Equal(d[0].data, ccdaFile(t, "discharge-summary.xml")) {
		t.Errorf("C-CDA not byte for byte: %v", names(got))
	}
	if z := find(got, "xdm.zip"); len(z) != 1 || !bytes.Equal(z[0].data, zips[0].data) {
		t.Errorf("zip changed")
	}
	v := find(got, "discharge-summary.html")
	if len(v) != 1 || v[0].mediaType != "text/html" || !bytes.Contains(v[0].data, []byte("Testy Q McTestface")) {
		t.Fatalf("HTML view: %v", names(got))
	}
	// The parts that came are byte for byte in the filed message.
	_, innerBody := splitMessage(out.Message)
	for _, p := range bytes.Split(innerBody, []byte("--outer")) {
		if len(p) > 10 && !bytes.HasPrefix(p, []byte("--")) && !bytes.Contains(res.Message, p) {
			t.Errorf("part changed: %.100q", p)
		}
	}
	if evs := f.audited("inbound-content", out.MessageID); len(evs) != 1 || evs[0].Verdict != "ok" || !strings.Contains(evs[0].Reason, "xdm pass") {
		t.Errorf("inbound-content audit: %+v", evs)
	}
}

func names(ps []part) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.mediaType+" "+p.name)
	}
	return out
}

// unfold joins folded header lines.
func unfold(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n\t"), []byte(" ")), []byte("\r\n "), []byte(" "))
}

// TestXDMPolicy: the policy per recipient domain, and "always".
func TestXDMPolicy(t *testing.T) {
	a := &Agent{content: &ContentOptions{XDM: "never", XDMDomains: map[string]string{"b.example": "ccda", "c.example": "always"}},
		now: timeNow, log: slog.Default()}
	msg := clinicalMessage(t, "alice@a.example", "bob@b.example", false, true, "referral-note.xml")
	to := func(rcpts ...string) []RecipientResult {
		var rr []RecipientResult
		for _, r := range rcpts {
			rr = append(rr, RecipientResult{Recipient: r, Accepted: true})
		}
		return rr
	}
	for _, tc := range []struct {
		rcpts []string
		want  int // documents in the package, 0 for none
	}{
		{[]string{"dave@a.example"}, 0},
		{[]string{"bob@b.example"}, 1},
		{[]string{"cathy@c.example"}, 2},
		{[]string{"dave@a.example", "bob@b.example"}, 1},
		{[]string{"bob@b.example", "cathy@c.example"}, 2},
	} {
		out, _, _ := a.packageOutbound(context.Background(), msg, "alice@a.example", to(tc.rcpts...))
		z := find(leaves(t, out), "xdm.zip")
		switch {
		case tc.want == 0 && (len(z) != 0 || !bytes.Equal(out, msg)):
			t.Errorf("%v: packaged", tc.rcpts)
		case tc.want > 0 && len(z) != 1:
			t.Errorf("%v: not packaged", tc.rcpts)
		case tc.want > 0:
			pkg, err := xdm.Open(z[0].data, xdm.Limits{})
			if err != nil || len(pkg.Documents) != tc.want {
				t.Errorf("%v: %v, %d documents, want %d", tc.rcpts, err, len(pkg.Documents), tc.want)
			}
		}
	}
	// A refused recipient's policy does not count.
	out, _, _ := a.packageOutbound(context.Background(), msg, "alice@a.example", []RecipientResult{{Recipient: "bob@b.example"}})
	if !bytes.Equal(out, msg) {
		t.Error("packaged for a refused recipient")
	}
}

// TestSinglePartCCDA: a message whose body is a C-CDA becomes a
// multipart/mixed with its view (inbound) or package (outbound); the
// document itself is unchanged.
func TestSinglePartCCDA(t *testing.T) {
	a := &Agent{content: &ContentOptions{XDM: "ccda", CCDAHTML: true, XDMDocuments: true}, now: timeNow, log: slog.Default()}
	doc := ccdaFile(t, "ccd.xml")
	msg := []byte("From: alice@a.example\r\nTo: bob@b.example\r\nSubject: CCD\r\nMIME-Version: 1.0\r\nContent-Type: application/xml\r\n" +
		"Content-Disposition: attachment; filename=ccd.xml\r\n\r\n" + string(doc))
	in, notes := a.inboundContent(msg)
	ps := leaves(t, in)
	if len(ps) != 2 || !bytes.Equal(ps[0].data, doc) || ps[0].name != "ccd.xml" || ps[1].name != "ccd.html" || len(notes) != 1 || notes[0].verdict != "pass" {
		t.Fatalf("inbound: %v %+v\n%s", names(ps), notes, in)
	}
	out, _, _ := a.packageOutbound(context.Background(), msg, "alice@a.example", []RecipientResult{{Recipient: "bob@b.example", Accepted: true}})
	ps = leaves(t, out)
	if len(ps) != 2 || !bytes.Equal(ps[0].data, doc) || ps[1].name != "xdm.zip" {
		t.Fatalf("outbound: %v", names(ps))
	}
}

// TestInboundHostileContent: a bad payload is noted with its own reason;
// the message is not refused and, where nothing could be added, is
// unchanged byte for byte.
func TestInboundHostileContent(t *testing.T) {
	a := &Agent{content: &ContentOptions{XDMDocuments: true, CCDAHTML: true}, now: timeNow, log: slog.Default()}
	doc := ccdaFile(t, "discharge-summary.xml")
	bomb := func() []byte {
		var b bytes.Buffer
		zw := zip.NewWriter(&b)
		w, _ := zw.Create("IHE_XDM/SUBSET01/METADATA.XML")
		w.Write([]byte("<SubmitObjectsRequest/>"))
		w, _ = zw.Create("IHE_XDM/SUBSET01/DOC0001.XML")
		w.Write(make([]byte, 32<<20))
		zw.Close()
		return b.Bytes()
	}()
	traversal := func() []byte {
		var b bytes.Buffer
		zw := zip.NewWriter(&b)
		w, _ := zw.Create("IHE_XDM/SUBSET01/METADATA.XML")
		w.Write([]byte("<SubmitObjectsRequest/>"))
		w, _ = zw.Create("../../etc/passwd")
		w.Write([]byte("x"))
		zw.Close()
		return b.Bytes()
	}()
	attach := func(mt, name string, data []byte, extraHeader string) []byte {
		return []byte("From: alice@a.example\r\nTo: bob@b.example\r\n" + extraHeader + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
			"--b\r\nContent-Type: " + mt + "; name=" + name + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(data) + "\r\n--b--\r\n")
	}
	for _, tc := range []struct {
		name, key, verdict, detail string
		msg                        []byte
	}{
		{"zip bomb", "xdm", "compression-ratio", "expands", attach("application/zip", "x.zip", bomb, "")},
		{"traversal", "xdm", "unsafe-name", "parent folder", attach("application/octet-stream", "x.zip", traversal, "")},
		{"not well-formed", "ccda", "fail", "not well-formed", attach("application/xml", "c.xml", doc[:len(doc)/2], "")},
		{"DTD", "ccda", "fail", "DTD", attach("text/xml", "c.xml", []byte(`<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>`+string(doc[bytes.Index(doc, []byte("<ClinicalDocument")):])), "")},
		{"context without its part", "context", "invalid", "no part", attach("text/plain", "a.txt", []byte("x"), "X-Direct-Context: <missing@x>\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, notes := a.inboundContent(tc.msg)
			if !bytes.Equal(out, tc.msg) {
				t.Error("message changed")
			}
			if len(notes) != 1 || notes[0].key != tc.key || notes[0].verdict != tc.verdict || !strings.Contains(notes[0].detail, tc.detail) || !notes[0].problem {
				t.Fatalf("notes %+v", notes)
			}
		})
	}
}

// TestInboundHostileDelivered: a message with a zip bomb inside goes
// through Inbound, delivered and noted.
func TestInboundHostileDelivered(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.contentAgent(ContentOptions{XDMDocuments: true, CCDAHTML: true})
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, _ := zw.Create("IHE_XDM/SUBSET01/METADATA.XML")
	w.Write([]byte("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><SubmitObjectsRequest>&e;</SubmitObjectsRequest>"))
	zw.Close()
	msg := []byte("From: alice@a.example\r\nTo: bob@b.example\r\nSubject: x\r\nMessage-ID: <hostile@test>\r\nMIME-Version: 1.0\r\nContent-Type: application/zip; name=p.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(zb.Bytes()) + "\r\n")
	sealed := seal(t, msg, f.p.alice, f.p.bob)
	res, err := a.Inbound(ctx, Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unfold(res.Message), []byte("xdm=bad-metadata; xdm-detail=\"p.zip: IHE_XDM/SUBSET01/METADATA.XML: unusable METADATA.XML: document type declaration (DTD) refused\"")) {
		t.Fatalf("no note:\n%.1500s", res.Message)
	}
	if evs := f.audited("inbound-content", "hostile@test"); len(evs) != 1 || evs[0].Verdict != "noted" {
		t.Fatalf("audit %+v", evs)
	}
}

// FuzzInboundContent: the content layer on any received message: never a
// panic, and the parts that came are kept (the output holds the input's
// bytes in order). Seeds in testdata/fuzz/FuzzInboundContent.
func FuzzInboundContent(f *testing.F) {
	f.Add(clinicalMessage(f, "alice@a.example", "bob@b.example", true, true, "ccd.xml"))
	a := &Agent{content: &ContentOptions{XDM: "always", XDMDocuments: true, CCDAHTML: true}, now: timeNow, log: slog.Default()}
	packaged, _, _ := a.packageOutbound(context.Background(), clinicalMessage(f, "alice@a.example", "bob@b.example", false, false, "referral-note.xml"),
		"alice@a.example", []RecipientResult{{Recipient: "bob@b.example", Accepted: true}})
	f.Add(packaged)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, _ := a.inboundContent(msg)
		if len(out) < len(msg) {
			t.Fatalf("message shrank from %d to %d bytes", len(msg), len(out))
		}
	})
}

// TestOutboundContextChecked: an EHR's invalid Direct context is kept as
// it came and noted; a valid one gives the package its patient.
func TestOutboundContextChecked(t *testing.T) {
	a := &Agent{content: &ContentOptions{XDM: "ccda"}, now: timeNow, log: slog.Default()}
	rr := []RecipientResult{{Recipient: "bob@b.example", Accepted: true}}
	bad := bytes.Replace(clinicalMessage(t, "alice@a.example", "bob@b.example", true, false, "ccd.xml"),
		[]byte("purpose: treatment"), []byte("purpose: marketing"), 1)
	out, notes, problem := a.packageOutbound(context.Background(), bad, "alice@a.example", rr)
	if !problem || !strings.Contains(strings.Join(notes, ";"), `purpose "marketing"`) || !bytes.Contains(out, []byte("purpose: marketing")) {
		t.Fatalf("problem %v notes %q", problem, notes)
	}
	pkg, err := xdm.Open(find(leaves(t, out), "xdm.zip")[0].data, xdm.Limits{})
	if err != nil || pkg.Metadata.SubmissionSet.PatientID != "ABC-555^^^&2.16.840.1.113883.19.5.99999.3&ISO" {
		t.Fatalf("patient from the C-CDA when the context is invalid: %v %+v", err, pkg.Metadata.SubmissionSet)
	}
}

// TestInboundNoDuplicates: documents of a package that also came as plain
// attachments (policy "always": a C-CDA and a PDF) are not added again;
// with the plain ones gone, they are.
func TestInboundNoDuplicates(t *testing.T) {
	a := &Agent{content: &ContentOptions{XDM: "always", XDMDocuments: true, CCDAHTML: true}, now: timeNow, log: slog.Default()}
	msg, _, _ := a.packageOutbound(context.Background(), clinicalMessage(t, "alice@a.example", "bob@b.example", false, true, "ccd.xml"),
		"alice@a.example", []RecipientResult{{Recipient: "bob@b.example", Accepted: true}})
	out, notes := a.inboundContent(msg)
	ps := leaves(t, out)
	if len(ps) != 5 || len(find(ps, "ccd.html")) != 1 || !strings.Contains(notes[len(notes)-1].detail, "0 added beside the package, 2 already attached") {
		t.Fatalf("%v %+v", names(ps), notes)
	}
	// Only the package: its two documents and a view are added.
	zipped := find(ps, "xdm.zip")[0].data
	only := []byte("From: alice@a.example\r\nTo: bob@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" +
		"Content-Type: text/plain\r\n\r\nsee attached\r\n--x\r\nContent-Type: application/zip; name=xdm.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(zipped) + "\r\n--x--\r\n")
	out, _ = a.inboundContent(only)
	ps = leaves(t, out)
	if len(ps) != 5 || len(find(ps, "DOC0001.XML")) != 1 || len(find(ps, "DOC0002.PDF")) != 1 || len(find(ps, "DOC0001.html")) != 1 ||
		find(ps, "DOC0002.PDF")[0].mediaType != "application/pdf" {
		t.Fatalf("%v", names(ps))
	}
}
