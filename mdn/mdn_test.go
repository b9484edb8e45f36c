package mdn

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleMDN(d Disposition) MDN {
	return MDN{
		From:              "bob@clinic.example",
		To:                "alice@hospital.example",
		OriginalSubject:   "Discharge summary",
		Date:              time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		ReportingUA:       "hisp.clinic.example; hisp",
		FinalRecipient:    "bob@clinic.example",
		OriginalMessageID: "<ds-1@hospital.example>",
		Disposition:       d,
	}
}

func TestBuildParseMDN(t *testing.T) {
	failed := sampleMDN(DispositionFailed)
	failed.Failure = "mailbox full:\r\n over quota"
	dispatched := sampleMDN(DispositionDispatched)
	dispatched.FinalDestination = true
	for _, tc := range []struct {
		name    string
		m       MDN
		want    []string
		wantNot []string
	}{
		{"processed", sampleMDN(DispositionProcessed),
			[]string{"Disposition: automatic-action/MDN-sent-automatically; processed\r\n", "Subject: Processed: Discharge summary\r\n"},
			[]string{FinalDestinationDelivery, "Failure:"}},
		{"dispatched", dispatched,
			[]string{"Disposition: automatic-action/MDN-sent-automatically; dispatched\r\n", "\r\nX-DIRECT-FINAL-DESTINATION-DELIVERY:\r\n",
				"Subject: Dispatched: Discharge summary\r\n"},
			[]string{"Failure:"}},
		{"failed", failed,
			[]string{"Disposition: automatic-action/MDN-sent-automatically; failed\r\n", "\r\nFailure: mailbox full: over quota\r\n",
				"Subject: Failed: Discharge summary\r\n"},
			[]string{FinalDestinationDelivery}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := BuildMDN(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			common := []string{"From: <bob@clinic.example>\r\n", "To: <alice@hospital.example>\r\n", "MIME-Version: 1.0\r\n",
				"Content-Type: multipart/report; report-type=disposition-notification;", "Message-ID: <",
				"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n", "In-Reply-To: <ds-1@hospital.example>\r\n",
				"Content-Type: message/disposition-notification\r\n", "Reporting-UA: hisp.clinic.example; hisp\r\n",
				"Final-Recipient: rfc822; bob@clinic.example\r\n", "Original-Message-ID: <ds-1@hospital.example>\r\n"}
			for _, w := range append(common, tc.want...) {
				if !bytes.Contains(msg, []byte(w)) {
					t.Errorf("lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range append(tc.wantNot, "Disposition-Notification-To", "Disposition-Notification-Options") {
				if bytes.Contains(msg, []byte(w)) {
					t.Errorf("has %q:\n%s", w, msg)
				}
			}
			if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
				t.Error("bare LF line ends")
			}
			p, err := ParseMDN(msg)
			if err != nil {
				t.Fatal(err)
			}
			if p.Disposition != tc.m.Disposition || p.OriginalMessageID != "<ds-1@hospital.example>" ||
				p.FinalRecipient != "bob@clinic.example" || p.FinalDestination != tc.m.FinalDestination ||
				p.Failure != oneLine(tc.m.Failure) || p.From != "bob@clinic.example" || p.To != "alice@hospital.example" ||
				p.ReportingUA != "hisp.clinic.example; hisp" || p.ActionMode != AutomaticAction || p.SendingMode != MDNSentAutomatically ||
				!p.Date.Equal(tc.m.Date) || !strings.HasPrefix(p.Subject, subjectPrefix(tc.m.Disposition)+": ") {
				t.Fatalf("parsed %+v", p)
			}
			if !strings.Contains(p.Text, "ds-1@hospital.example") {
				t.Errorf("human-readable part: %q", p.Text)
			}
		})
	}
}

func TestBuildMDNDefaults(t *testing.T) {
	m := MDN{From: "bob@clinic.example", To: "alice@hospital.example", Disposition: DispositionProcessed,
		OriginalSubject: "Überweisung " + strings.Repeat("x", 400)}
	msg, err := BuildMDN(m)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseMDN(msg)
	if err != nil {
		t.Fatal(err)
	}
	if p.FinalRecipient != "bob@clinic.example" || p.ReportingUA != "clinic.example; hisp" || p.MessageID == "" ||
		!strings.HasSuffix(p.MessageID, "@clinic.example>") || p.Date.IsZero() || p.OriginalMessageID != "" {
		t.Fatalf("defaults: %+v", p)
	}
	if !strings.HasPrefix(p.Subject, "Processed: Überweisung xxx") || len(p.Subject) > 250 {
		t.Fatalf("subject %q", p.Subject)
	}
	for _, line := range strings.Split(string(msg), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line of %d bytes", len(line))
		}
	}
	if _, err := BuildMDN(MDN{From: "bob@clinic.example", To: "alice@hospital.example", Disposition: DispositionFailed}); err == nil {
		t.Error("failed MDN without a Failure text built")
	}
}

func TestBuildMDNRefusesHeaderInjection(t *testing.T) {
	for _, mut := range []func(*MDN){
		func(m *MDN) { m.From = "bob@clinic.example\r\nBcc: eve@evil.example" },
		func(m *MDN) { m.To = "alice@hospital.example\nDisposition-Notification-To: eve@evil.example" },
		func(m *MDN) { m.OriginalMessageID = "<x@y>\r\nX-Injected: 1" },
		func(m *MDN) {
			m.FinalRecipient = "bob@clinic.example\r\nDisposition: manual-action/MDN-sent-manually; deleted"
		},
		func(m *MDN) { m.ReportingUA = "x\r\n\r\nbody" },
		func(m *MDN) { m.MessageID = "<a@b>\rX: y" },
		func(m *MDN) { m.Disposition = "processed\r\nX-DIRECT-FINAL-DESTINATION-DELIVERY:" },
		func(m *MDN) { m.Modifiers = []string{"error\r\nFailure: x"} },
	} {
		m := sampleMDN(DispositionProcessed)
		mut(&m)
		if msg, err := BuildMDN(m); err == nil {
			t.Errorf("built with injected header:\n%s", msg)
		}
	}
	// Human text is folded onto one line, not refused.
	m := sampleMDN(DispositionFailed)
	m.Failure = "full\r\nBcc: eve@evil.example"
	m.OriginalSubject = "hi\r\nBcc: eve@evil.example"
	msg, err := BuildMDN(m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msg, []byte("\r\nBcc:")) {
		t.Fatalf("injected field:\n%s", msg)
	}
}

// TestMDNReadByPython: an independent MIME parser (Python's email package)
// sees the report structure and the notification fields.
func TestMDNReadByPython(t *testing.T) {
	m := sampleMDN(DispositionDispatched)
	m.FinalDestination = true
	m.OriginalSubject = "Entlassbrief für Herrn Müller"
	msg, err := BuildMDN(m)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", "-c", `
import sys, email
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
assert not m.defects, m.defects
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "disposition-notification"
assert m["Disposition-Notification-To"] is None
parts = m.get_payload()
print(" ".join(p.get_content_type() for p in parts))
print(m["Subject"])
print(parts[0].get_content().strip().splitlines()[0])
dn = parts[1].get_payload()[0]
for f in ("Reporting-UA", "Final-Recipient", "Original-Message-ID", "Disposition"):
    print(f + "=" + str(dn[f]))
print("ext", "X-DIRECT-FINAL-DESTINATION-DELIVERY" in dn)
`)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s\n%s", err, out, msg)
	}
	for _, want := range []string{"text/plain message/disposition-notification\n", "Dispatched: Entlassbrief für Herrn Müller\n",
		"Your message <ds-1@hospital.example> with subject \"Entlassbrief für Herrn Müller\" was delivered",
		"Reporting-UA=hisp.clinic.example; hisp\n", "Final-Recipient=rfc822; bob@clinic.example\n",
		"Original-Message-ID=<ds-1@hospital.example>\n", "Disposition=automatic-action/MDN-sent-automatically; dispatched\n", "ext True\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("python output lacks %q:\n%s", want, out)
		}
	}
}

// TestParseSamples: notices in the shapes other Direct implementations
// write (the Java reference implementation's test notices, the Edge
// Testing Tool's generator, Python and Node HISPs, a mail client's read
// receipt) parse.
func TestParseSamples(t *testing.T) {
	const omid = "<20231114221320.5512@hospital.example>"
	for _, tc := range []struct {
		file      string
		disp      Disposition
		final     string // FinalRecipient
		recipient string // Recipient()
		ext       bool
		failure   string
		mods      []string
	}{
		{"ri-processed.txt", DispositionProcessed, "dr.jones@clinic.example", "dr.jones@clinic.example", false, "", nil},
		{"ri-dispatched-timely.txt", DispositionDispatched, "dr.jones@clinic.example", "dr.jones@clinic.example", true, "", nil},
		{"ri-dispatched-lowercase-option.txt", DispositionDispatched, "dr.jones@clinic.example", "dr.jones@clinic.example", true, "", nil},
		{"ri-friendly-final-recipient.txt", DispositionProcessed, "dr.jones@clinic.example", "dr.jones@clinic.example", false, "", nil},
		{"ri-no-final-recipient.txt", DispositionProcessed, "", "dr.jones@clinic.example", false, "", nil},
		{"ett-dispatched.txt", DispositionDispatched, "processeddispatched6@ttpedge.example", "processeddispatched6@ttpedge.example", true, "", nil},
		{"ett-wrapped-processed.txt", DispositionProcessed, "processeddispatched6@ttpedge.example", "processeddispatched6@ttpedge.example", false, "", nil},
		{"python-processed.txt", DispositionProcessed, "dr.jones@clinic.example", "dr.jones@clinic.example", false, "", nil},
		{"node-dispatched-qp.txt", DispositionDispatched, "dr.jones@clinic.example", "dr.jones@clinic.example", true, "", nil},
		{"failed-rfc3798.txt", DispositionFailed, "dr.jones@clinic.example", "dr.jones@clinic.example", false,
			"552 5.2.2 mailbox full: the recipient's mailbox is over its quota", nil},
		{"rfc8098-error-base64.txt", DispositionProcessed, "dr.jones@clinic.example", "dr.jones@clinic.example", false, "", []string{"error"}},
		{"mua-displayed.txt", DispositionDisplayed, "dr.jones@clinic.example", "dr.jones@clinic.example", false, "", nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "samples", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseMDN(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Disposition != tc.disp || m.FinalRecipient != tc.final || m.Recipient() != tc.recipient ||
				m.OriginalMessageID != omid || m.FinalDestination != tc.ext || m.Failure != tc.failure ||
				!reflect.DeepEqual(m.Modifiers, tc.mods) || m.ReportingUA == "" {
				t.Fatalf("parsed %+v", m)
			}
		})
	}
	for _, file := range []string{"bad-no-disposition.txt", "bad-dsn.txt", "bad-no-notification-part.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", "samples", file))
		if err != nil {
			t.Fatal(err)
		}
		if m, err := ParseMDN(b); err == nil {
			t.Errorf("%s parsed: %+v", file, m)
		}
	}
}

func TestTimelyAndReliableRequested(t *testing.T) {
	for _, tc := range []struct {
		options string
		want    bool
	}{
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true", true},
		{"x-direct-final-destination-delivery=optional,true", true},
		{"X-Direct-Final-Destination-Delivery=Optional,TRUE", true},
		{"  X-DIRECT-FINAL-DESTINATION-DELIVERY = optional , true  ", true},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=\toptional,\ttrue", true},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional, \"true\"", true},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=required,true", true},
		{"signed-receipt-protocol=optional,pkcs7-signature; X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true", true},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true;", true},
		{"", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY:optional,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=mandatory,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,yes", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=,true", false},
		{"X-DIRECT-FINAL-DESTINATION=optional,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY-X=optional,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVER=optional,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true; X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true; X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true", false},
		{"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,tru e", false},
	} {
		if got := TimelyAndReliableRequested(tc.options); got != tc.want {
			t.Errorf("TimelyAndReliableRequested(%q) = %v, want %v", tc.options, got, tc.want)
		}
	}
}

// FuzzParseMDN: ParseMDN never panics on any input; what it accepts has a
// disposition type, and building a notice from what it read and reading
// that again gives the same fields. The committed corpus is in
// testdata/fuzz/FuzzParseMDN; the samples and built notices seed it too.
func FuzzParseMDN(f *testing.F) {
	for _, d := range []Disposition{DispositionProcessed, DispositionDispatched, DispositionFailed} {
		m := sampleMDN(d)
		m.FinalDestination = d == DispositionDispatched
		m.Failure = map[Disposition]string{DispositionFailed: "mailbox full"}[d]
		msg, err := BuildMDN(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "samples", "*.txt"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		TimelyAndReliableRequested(string(b))
		m, err := ParseMDN(b)
		if err != nil {
			return
		}
		if m.Disposition == "" {
			t.Fatalf("accepted without a disposition type: %+v", m)
		}
		if m.From == "" || m.To == "" {
			return
		}
		if m.Disposition == DispositionFailed && m.Failure == "" {
			return
		}
		again, err := BuildMDN(*m)
		if err != nil {
			return // fields a notice of ours could not carry
		}
		m2, err := ParseMDN(again)
		if err != nil {
			t.Fatalf("re-parse of a built notice: %v\n%s", err, again)
		}
		if m2.Disposition != m.Disposition || m2.OriginalMessageID != m.OriginalMessageID ||
			m2.Recipient() != m.Recipient() || m2.FinalDestination != m.FinalDestination ||
			m2.Failure != m.Failure || m2.Error != m.Error || !reflect.DeepEqual(m2.Modifiers, m.Modifiers) {
			t.Fatalf("round trip changed fields:\nfirst  %+v\nsecond %+v\n%s", m, m2, again)
		}
	})
}
