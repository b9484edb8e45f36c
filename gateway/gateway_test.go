package gateway

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEndToEnd: two HISPs on loopback exchange a C-CDA discharge summary
// submitted by Python's smtplib. What leaves the first is a Direct message
// openssl opens with the recipient's key and verifies against the sender's
// CA; the second files the inner message, attachment byte for byte.
func TestEndToEnd(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	tp, tapAddr := startTap(t, b.addrs["smtp"])
	a.start(t, dns, map[string]string{"clinic.example": tapAddr}, nil)

	msg := dischargeSummary(t, a.user, b.user, "ds-1@hospital.example")
	if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user}, msg); refused != "" {
		t.Fatalf("submission refused: %s", refused)
	}
	got := b.waitMailbox(t, b.user, "INBOX", 1)[0]
	ccda, _ := os.ReadFile(filepath.Join("testdata", "ccda.xml"))
	ccda = bytes.ReplaceAll(ccda, []byte("\n"), []byte("\r\n"))
	if !bytes.Contains(got, ccda) {
		t.Fatalf("filed message lacks the C-CDA byte for byte:\n%s", got)
	}
	if !bytes.Contains(got, []byte("X-Hisp-Verification: pass")) || !bytes.Contains(got, []byte("Subject: Discharge summary")) {
		t.Fatalf("filed message lacks the verification header or inner headers:\n%.600s", got)
	}

	// What left the hospital, opened by an independent implementation.
	// The tap keeps it once the clinic has answered, which is after filing
	// (and after the clinic queued its MDN).
	waitFor(t, "the tap saw the message", func() bool { return len(tp.messages()) >= 1 })
	wire := tp.messages()
	if len(wire) != 1 {
		t.Fatalf("tap saw %d messages", len(wire))
	}
	if bytes.Contains(wire[0], []byte("Discharge summary")) || bytes.Contains(wire[0], []byte("ClinicalDocument")) {
		t.Fatal("PHI visible on the wire")
	}
	dir := t.TempDir()
	bobCert, bobKey := b.userID.WriteFiles(t, dir, "bob")
	caFile, _ := a.ca.WriteFiles(t, dir, "hospital-ca")
	signed := run(t, wire[0], "openssl", "cms", "-decrypt", "-recip", bobCert, "-inkey", bobKey)
	inner := run(t, signed, "openssl", "cms", "-verify", "-CAfile", caFile, "-purpose", "smimesign")
	if !bytes.HasPrefix(inner, []byte("Content-Type: message/rfc822")) || !bytes.Contains(inner, ccda) {
		t.Fatalf("openssl-verified content is not the wrapped message:\n%.400s", inner)
	}

	// The sender keeps a copy in Sent.
	if sent := a.waitMailbox(t, a.user, "Sent", 1); !bytes.Contains(sent[0], []byte("ds-1@hospital.example")) {
		t.Fatal("Sent copy missing")
	}
}

func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}
