package gateway

import (
	"archive/zip"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/mimepart"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/xdm"
)

// imapParts logs in with Python's imaplib, fetches every message of INBOX
// and returns, per message, its X-Hisp-Verification fields (unfolded) and
// its leaf parts as Python's email package reads them.
func imapParts(t *testing.T, addr, user, password string) []imapMessage {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	script := `
import email, hashlib, imaplib, json, ssl, sys
from email import policy
host, port, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4(host, int(port))
M.starttls(ssl_context=ctx)
M.login(user, pw)
M.select('INBOX')
typ, data = M.search(None, 'ALL')
out = []
for num in data[0].split():
    typ, d = M.fetch(num, '(BODY.PEEK[])')
    msg = email.message_from_bytes(d[0][1], policy=policy.compat32)
    parts = []
    for p in msg.walk():
        if p.is_multipart():
            continue
        payload = p.get_payload(decode=True) or b''
        parts.append({'type': p.get_content_type(), 'name': p.get_filename() or '', 'sha1': hashlib.sha1(payload).hexdigest(),
                      'size': len(payload), 'head': payload[:4000].decode('utf-8', 'replace')})
    ver = [' '.join(v.split()) for v in msg.get_all('X-Hisp-Verification') or []]
    out.append({'subject': msg['Subject'], 'verification': ver, 'parts': parts})
M.logout()
print(json.dumps(out))
`
	out, err := exec.Command("python3", "-c", script, host, port, user, password).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 imaplib: %v\n%s", err, out)
	}
	var msgs []imapMessage
	if err := json.Unmarshal(out, &msgs); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return msgs
}

type imapMessage struct {
	Subject      string
	Verification []string
	Parts        []struct {
		Type, Name, SHA1, Head string
		Size                   int
	}
}

func (m imapMessage) part(name string) (typ, sum, head string, n int) {
	for _, p := range m.Parts {
		if p.Name == name {
			typ, sum, head = p.Type, p.SHA1, p.Head
			n++
		}
	}
	return typ, sum, head, n
}

func sha1hex(b []byte) string {
	s := sha1.Sum(b)
	return hex.EncodeToString(s[:])
}

// clinicalMail is a message with a C-CDA attachment and a Direct context.
func clinicalMail(from, to, id string, ccda []byte) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Referral\r\nDate: %s\r\nMessage-ID: <%s>\r\nX-Direct-Context: <context-%s>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nReferral attached.\r\n"+
		"--b1\r\nContent-Type: application/xml; name=\"referral.xml\"\r\nContent-Disposition: attachment; filename=\"referral.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n"+
		"--b1\r\nContent-Type: text/plain\r\nContent-ID: <context-%s>\r\nContent-Disposition: attachment; filename=\"metadata.txt\"\r\n\r\n"+
		"version: 1.0\r\nid: %s\r\npatient-id: 2.16.840.1.113883.19.5.99999.2:67890\r\ntype: referral/order\r\npurpose: treatment\r\npatient: givenName=Synthia; surname=Example\r\n"+
		"--b1--\r\n", from, to, time.Now().Format(time.RFC1123Z), id, id, b64lines(ccda), id, id))
}

// TestEndToEndXDM: two hisps, the sender with [outbound] xdm = "ccda". The
// recipient's IMAP message holds the C-CDA byte for byte as its own
// attachment, the XDM zip (whose metadata carries the context's patient
// id and the Direct addresses), an HTML view, and the context in the
// verification field. A package made by hand the way other
// implementations write it has its document added beside it.
func TestEndToEndXDM(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, func(c *config.Config) { c.Outbound.XDM = "ccda" })

	ccda, err := os.ReadFile(filepath.Join("..", "ccda", "testdata", "referral-note.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user}, clinicalMail(a.user, b.user, "ref-1@hospital.example", ccda)); r != "" {
		t.Fatalf("refused: %s", r)
	}
	// A package as another HISP writes it: lower-case names, an extra
	// file, README.TXT with CRLF, sent with xdm = "never" semantics (the
	// sender's policy does not touch a message that holds a package).
	other, err := os.ReadFile(filepath.Join("..", "ccda", "testdata", "ccd.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for _, e := range [][2]string{{"index.htm", "<html><body>index</body></html>"}, {"readme.txt", "Made by another HISP.\r\nSecond line.\r\n"},
		{"ihe_xdm/subset01/metadata.xml", handMetadata(other)}, {"ihe_xdm/subset01/doc0001.xml", string(other)}, {"ihe_xdm/subset01/style.xsl", "<xsl/>"}} {
		w, _ := zw.Create(e[0])
		w.Write([]byte(e[1]))
	}
	zw.Close()
	handMsg := []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Hand-made XDM\r\nDate: %s\r\nMessage-ID: <hand-1@hospital.example>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\nPackage attached.\r\n"+
		"--b2\r\nContent-Type: application/octet-stream; name=\"XDM.ZIP\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b2--\r\n",
		a.user, b.user, time.Now().Format(time.RFC1123Z), b64lines(zb.Bytes())))
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user}, handMsg); r != "" {
		t.Fatalf("refused: %s", r)
	}
	b.waitMailbox(t, b.user, "INBOX", 2)

	msgs := imapParts(t, b.addrs["imap"], b.user, b.password)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "Referral" {
		m, msgs[1] = msgs[1], msgs[0]
	}
	// The C-CDA, byte for byte, once (the package's copy is not added
	// twice).
	if typ, sum, _, n := m.part("referral.xml"); n != 1 || sum != sha1hex(ccda) || typ != "application/xml" {
		t.Errorf("C-CDA attachment: %d, %s %s", n, typ, sum)
	}
	typ, _, _, n := m.part("xdm.zip")
	if n != 1 || typ != "application/zip" {
		t.Fatalf("no XDM zip: %+v", m.Parts)
	}
	if typ, _, head, n := m.part("referral.html"); n != 1 || typ != "text/html" || !strings.Contains(head, "Synthia Example") || strings.Contains(head, "<script") {
		t.Errorf("HTML view: %d %s", n, typ)
	}
	ver := strings.Join(m.Verification, " ")
	for _, w := range []string{"pass;", "context=pass", "patient-id 2.16.840.1.113883.19.5.99999.2:67890", "purpose treatment",
		"ccda=pass", "Referral note (57133-1)", "xdm=pass", "1 already attached"} {
		if !strings.Contains(ver, w) {
			t.Errorf("verification lacks %q: %s", w, ver)
		}
	}
	// The zip as filed: unzip -t passes, and its metadata names the
	// context's patient and both Direct addresses.
	raw := b.mailbox(t, b.user, "INBOX")
	var filed []byte
	for _, r := range raw {
		if bytes.Contains(r, []byte("Subject: Referral")) {
			filed = r
		}
	}
	zipped := attachmentBytes(t, filed, "xdm.zip")
	file := filepath.Join(t.TempDir(), "xdm.zip")
	os.WriteFile(file, zipped, 0o600)
	if out, err := exec.Command("unzip", "-t", file).CombinedOutput(); err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Fatalf("unzip -t: %v\n%s", err, out)
	}
	pkg, err := xdm.Open(zipped, xdm.Limits{})
	if err != nil || !pkg.Valid() {
		t.Fatal(err)
	}
	ss := pkg.Metadata.SubmissionSet
	if ss.PatientID != "67890^^^&2.16.840.1.113883.19.5.99999.2&ISO" || xdm.TelecomAddress(ss.AuthorTelecom[0]) != a.user ||
		xdm.RecipientAddress(ss.IntendedRecipients[0]) != b.user || pkg.Documents[0].Entry.TypeCode.Code != "57133-1" {
		t.Errorf("metadata: %+v %+v", ss, pkg.Documents[0].Entry)
	}

	// The hand-made package: its document beside it, with a view.
	h := msgs[1]
	if _, sum, _, n := h.part("doc0001.xml"); n != 1 || sum != sha1hex(other) {
		t.Errorf("document of the hand-made package not added: %+v", h.Parts)
	}
	if _, sum, _, n := h.part("XDM.ZIP"); n != 1 || sum != sha1hex(zb.Bytes()) {
		t.Errorf("hand-made zip changed")
	}
	if _, _, _, n := h.part("doc0001.html"); n != 1 {
		t.Errorf("no view of the hand-made package's C-CDA: %+v", h.Parts)
	}
	if v := strings.Join(h.Verification, " "); !strings.Contains(v, "xdm=pass") || !strings.Contains(v, "1 added beside the package") {
		t.Errorf("verification: %s", v)
	}
	// Audit records on both sides.
	a.audited(t, "outbound-content", func(e store.Event) bool {
		return e.Action == "outbound-content" && strings.Contains(e.Reason, "packaged 1 document")
	})
	b.audited(t, "inbound-content", func(e store.Event) bool {
		return e.Action == "inbound-content" && e.Verdict == "ok" && strings.Contains(e.Reason, "context pass")
	})
}

// handMetadata is a METADATA.XML as another implementation writes it.
func handMetadata(doc []byte) string {
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
<rim:RegistryObjectList>
<rim:ExtrinsicObject id="Document01" mimeType="text/xml" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
<rim:Slot name="hash"><rim:ValueList><rim:Value>%s</rim:Value></rim:ValueList></rim:Slot>
<rim:Slot name="size"><rim:ValueList><rim:Value>%d</rim:Value></rim:ValueList></rim:Slot>
<rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
</rim:ExtrinsicObject>
<rim:RegistryPackage id="SubmissionSet01"/>
</rim:RegistryObjectList>
</SubmitObjectsRequest>
`, strings.ToUpper(sha1hex(doc)), len(doc))
}

// attachmentBytes returns the decoded part of msg with the file name.
func attachmentBytes(t *testing.T, msg []byte, name string) []byte {
	t.Helper()
	for _, p := range mimepart.Parse(msg).Leaves() {
		if p.FileName() == name {
			b, err := p.Decode(msg, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no part %s", name)
	return nil
}

// b64lines is base64 in lines of 76 characters.
func b64lines(data []byte) string {
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
	return b.String()
}
