package mdn

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func sampleDSN() DSN {
	return DSN{
		ReportingMTA:      "hisp.hospital.example",
		From:              "postmaster@hospital.example",
		To:                "alice@hospital.example",
		OriginalMessageID: "<m1@hospital.example>",
		OriginalHeaders:   []byte("From: alice@hospital.example\r\nTo: bob@clinic.example\r\nMessage-ID: <m1@hospital.example>\r\n"),
		Arrival:           time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		Recipients: []DSNRecipient{
			{Recipient: "bob@clinic.example", Action: Failed, Status: "5.7.1", Diagnostic: "no trusted certificate found for bob@clinic.example:\n expired"},
			{Recipient: "carol@lab.example", Action: Delayed, Status: "4.4.1", Diagnostic: "451 4.4.1 try later", DiagnosticSMTP: true,
				RemoteMTA: "mx.lab.example", WillRetryUntil: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)},
		},
	}
}

func TestBuildParseDSN(t *testing.T) {
	msg, err := BuildDSN(sampleDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Content-Type: multipart/report; report-type=delivery-status", "Auto-Submitted: auto-replied",
		"Final-Recipient: rfc822; bob@clinic.example", "Action: failed", "Status: 5.7.1",
		"Diagnostic-Code: X-Direct; no trusted certificate found for bob@clinic.example: expired",
		"Diagnostic-Code: smtp; 451 4.4.1 try later", "Content-Type: text/rfc822-headers", "Subject: Delivery Status Notification (Failure)"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, msg)
		}
	}
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("DSN has bare LF line ends")
	}
	p, err := ParseDSN(msg)
	if err != nil {
		t.Fatal(err)
	}
	if p.OriginalMessageID != "<m1@hospital.example>" || p.ReportingMTA != "hisp.hospital.example" || len(p.Recipients) != 2 ||
		p.Recipients[0].Action != Failed || p.Recipients[1].Status != "4.4.1" || p.Recipients[1].RemoteMTA != "mx.lab.example" {
		t.Fatalf("parsed %+v", p)
	}
}

// TestDSNReadByPython: an independent MIME parser (Python's email
// package) sees the report structure.
func TestDSNReadByPython(t *testing.T) {
	msg, err := BuildDSN(sampleDSN())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", "-c", `
import sys, email
m = email.message_from_bytes(sys.stdin.buffer.read())
assert m.get_content_type() == "multipart/report", m.get_content_type()
parts = [p.get_content_type() for p in m.walk()]
print(" ".join(parts))
ds = [p for p in m.walk() if p.get_content_type() == "message/delivery-status"][0]
blocks = ds.get_payload()
print(len(blocks), blocks[1]["Final-Recipient"], blocks[1]["Action"])
`)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "message/delivery-status") || !strings.Contains(string(out), "text/rfc822-headers") || !strings.Contains(string(out), "3 rfc822; bob@clinic.example failed") {
		t.Fatalf("python read: %s", out)
	}
}

func TestBuildDSNRefusesHeaderInjection(t *testing.T) {
	d := sampleDSN()
	d.To = "alice@hospital.example\r\nBcc: eve@evil.example"
	if _, err := BuildDSN(d); err == nil {
		t.Fatal("line break in To accepted")
	}
	d = sampleDSN()
	d.Recipients[0].Recipient = "bob@clinic.example\r\nAction: delivered"
	if _, err := BuildDSN(d); err == nil {
		t.Fatal("line break in a recipient accepted")
	}
}

func FuzzParseDSN(f *testing.F) {
	msg, _ := BuildDSN(sampleDSN())
	f.Add(msg)
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\n--x--\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseDSN(b)
	})
}
