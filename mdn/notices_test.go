package mdn

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestIsNotice pins the one answer to "is this message a notice". The agent
// and the gateway's tracking used to answer differently; the cases where
// they differed are marked.
func TestIsNotice(t *testing.T) {
	for ct, want := range map[string]bool{
		"multipart/report; report-type=disposition-notification; boundary=b": true,
		"multipart/report; report-type=delivery-status; boundary=b":          true,
		`Multipart/Report; Report-Type="Delivery-Status"; boundary="b"`:      true,
		"text/plain": false,
		"":           false,
		"multipart/mixed; report-type=delivery-status": false,
		// Differed: the tracking took any multipart/report for a notice
		// and left it untracked, although the recipient's HISP answers it
		// with an MDN like any message.
		"multipart/report; report-type=feedback-report; boundary=b": false,
		"multipart/report; report-type=tlsrpt; boundary=b":          false,
		"multipart/report; boundary=b":                              false,
		// Differed: parameters that do not parse made the tracking see
		// ordinary mail, and track a notice nothing will answer.
		"multipart/report; report-type=disposition-notification; boundary=b; =x": true,
		"multipart/report; report-type=delivery-status;; boundary":               true,
		"multipart/report; =x; text=other":                                       false,
	} {
		if got := IsNotice(ct); got != want {
			t.Errorf("IsNotice(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestPostmaster(t *testing.T) {
	for addr, want := range map[string]string{
		"alice@Hospital.Example":   "postmaster@hospital.example",
		"<alice@hospital.example>": "postmaster@hospital.example",
		"alice":                    "postmaster@localhost",
		"alice@":                   "postmaster@localhost",
	} {
		if got := Postmaster(addr); got != want {
			t.Errorf("Postmaster(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestBuildSenderDSN(t *testing.T) {
	if dsn, err := BuildSenderDSN(SenderReport{Sender: "alice@a.example", MessageID: "<m@a>"}); dsn != nil || err != nil {
		t.Errorf("no recipients: %q, %v", dsn, err)
	}
	when := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	orig := []byte("From: alice@a.example\r\nTo: bob@b.example\r\nMessage-ID: <m@a>\r\n\r\nthe body, never reported\r\n")
	for name, original := range map[string][]byte{"with the message": orig, "Message-ID only": nil} {
		msg, err := BuildSenderDSN(SenderReport{ReportingMTA: "hisp.a.example", Sender: "alice@a.example", MessageID: "<m@a>",
			Original: original, Arrival: when, Date: when, Recipients: []DSNRecipient{
				{Recipient: "bob@b.example", Action: Failed, Status: "5.7.1", Diagnostic: "no trusted certificate", LastAttempt: when}}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d, err := ParseDSN(msg)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, msg)
		}
		if d.OriginalMessageID != "<m@a>" || len(d.Recipients) != 1 || d.Recipients[0].Recipient != "bob@b.example" ||
			d.Recipients[0].Status != "5.7.1" || d.Recipients[0].Action != Failed {
			t.Errorf("%s: %+v", name, d)
		}
		hdr, _ := splitMessage(msg)
		h := parseFields(hdr)
		if !strings.Contains(h.get("from"), "<postmaster@a.example>") || h.get("to") != "<alice@a.example>" {
			t.Errorf("%s: From %q To %q", name, h.get("from"), h.get("to"))
		}
		if bytes.Contains(msg, []byte("the body, never reported")) {
			t.Errorf("%s: the DSN carries the original body", name)
		}
		if !bytes.Contains(msg, []byte("Message-ID: <m@a>")) {
			t.Errorf("%s: the DSN does not name the original", name)
		}
	}
}

// TestParseFieldsLenient: the notification fields of a sloppy writer are
// read through the one header reader: LF line ends, folded values, white
// space before the colon, lines that are no field and their continuations
// skipped, stopping at the first empty line.
func TestParseFieldsLenient(t *testing.T) {
	block := []byte("Reporting-UA : mx.b.example; hisp\n" +
		"this line is no field\n" +
		" nor its continuation\n" +
		"Bad Name: x\n" +
		": no name\n" +
		"Final-Recipient: rfc822;\n bob@b.example\n" +
		"Disposition: automatic-action/MDN-sent-automatically;\r\n\tprocessed\r\n" +
		"\n" +
		"Failure: after the empty line\n")
	f := parseFields(block)
	for name, want := range map[string]string{
		"reporting-ua":    "mx.b.example; hisp",
		"final-recipient": "rfc822; bob@b.example",
		"disposition":     "automatic-action/MDN-sent-automatically; processed",
		"failure":         "",
		"bad name":        "",
	} {
		if got := f.get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if len(f) != 3 {
		t.Errorf("%d fields: %+v", len(f), f)
	}
}
