package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/store"
)

// The edge tests of issue 9: what a user (or an attacker) can put in a
// submitted message, how large it may be, how full a mailbox, what the
// admin listener says about names and notices it did not choose, and which
// TLS suites every listener takes. Each over real sockets.

// TestSubmissionSenderFields: a user may name only themselves in Sender,
// Resent-From and Resent-Sender; otherwise 550 5.7.1 with an audit record,
// and nothing leaves. A message naming the user goes through.
func TestSubmissionSenderFields(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	carol, _ := a.addUser(t, "carol")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)
	sub := a.addrs["submission"]

	withHeader := func(id, extra string) []byte {
		return plainMessage(a.user+"\r\n"+extra, b.user, id, "Who sent this?")
	}
	for i, c := range []struct{ field, extra string }{
		{"Sender", "Sender: " + carol},
		{"Resent-From", "Resent-From: Dr. Carol <" + carol + ">"},
		{"Resent-From", "Resent-From: " + a.user + ", mallory@elsewhere.example"},
		{"Resent-Sender", "Resent-Sender: " + carol},
	} {
		id := fmt.Sprintf("sender-field-%d@hospital.example", i)
		r := submitPython(t, sub, a.user, a.password, a.user, []string{b.user}, withHeader(id, c.extra))
		refusedWith(t, r, 550, "5.7.1")
		if !strings.Contains(r, c.field) {
			t.Errorf("%s: the refusal %q does not name the field", c.extra, r)
		}
		a.audited(t, "refused "+c.field, func(e store.Event) bool {
			return e.Action == "outbound" && e.Verdict == "refused" && strings.Contains(e.Subject, id) && strings.Contains(e.Reason, c.field)
		})
	}
	if q := a.queued(t); len(q) != 0 {
		t.Fatalf("%d messages queued after the refusals", len(q))
	}
	// The user's own address in every one of them is fine.
	id := "sender-self@hospital.example"
	self := withHeader(id, "Sender: "+a.user+"\r\nResent-From: <"+strings.ToUpper(a.user)+">\r\nResent-Sender: "+a.user)
	if r := submitPython(t, sub, a.user, a.password, a.user, []string{b.user}, self); r != "" {
		t.Fatalf("own address as Sender refused: %s", r)
	}
	got := b.waitMailbox(t, b.user, "INBOX", 1)
	if !bytes.Contains(got[0], []byte(id)) {
		t.Fatalf("bob's message:\n%.400s", got[0])
	}
}

// TestSubmissionSizeLimit: submission takes only what still fits the
// backbone limit ([limits] message_size) once sealed. SIZE in EHLO says so,
// MAIL with a larger SIZE and DATA over it get 552 5.3.4, and a message
// just under it is sealed and accepted by a partner with the same limit.
func TestSubmissionSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 2 << 20
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	small := func(c *config.Config) { c.Limits.MessageSize = limit }
	b.start(t, dns, nil, small)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, small)
	backbone, submission := messageSizes(config.Limits{MessageLimits: config.MessageLimits{MessageSize: limit}})
	if backbone != limit || submission <= 0 || submission >= limit*1000/smime.SealGrowthPermille {
		t.Fatalf("limits: backbone %d, submission %d", backbone, submission)
	}

	for _, l := range []struct {
		addr string
		size int64
	}{{a.addrs["submission"], submission}, {b.addrs["smtp"], backbone}} {
		c := dialRaw(t, l.addr, false)
		if ehlo := c.expect(250, "EHLO test.localhost"); !strings.Contains(ehlo, fmt.Sprintf("SIZE %d", l.size)) {
			t.Errorf("%s EHLO: %q, want SIZE %d", l.addr, ehlo, l.size)
		}
		c.expect(221, "QUIT")
	}

	c := dialRaw(t, a.addrs["submission"], true)
	c.login(a.user, a.password)
	if code, msg := c.cmd(fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", a.user, submission+1)); !replyIs(code, msg, 552, "5.3.4") {
		t.Fatalf("MAIL with SIZE over the submission limit: %d %s", code, msg)
	}
	// A message the backbone would take but whose sealed form would not
	// fit: refused at DATA.
	big := sizedMessage(a.user, b.user, "too-big@hospital.example", int(submission)+1000)
	c.expect(250, "MAIL FROM:<"+a.user+">")
	c.expect(250, "RCPT TO:<"+b.user+">")
	if code, msg := c.data(big); !replyIs(code, msg, 552, "5.3.4") {
		t.Fatalf("%d-byte message: %d %s, want 552 5.3.4", len(big), code, msg)
	}
	a.audited(t, "oversize submission refused", func(e store.Event) bool {
		return e.Action == "smtp.submission.data" && strings.Contains(e.Reason, "552 5.3.4")
	})
	// Just under the limit: sealed, it fits the clinic's backbone.
	fits := sizedMessage(a.user, b.user, "just-fits@hospital.example", int(submission)-4096)
	c.expect(250, "MAIL FROM:<"+a.user+">")
	c.expect(250, "RCPT TO:<"+b.user+">")
	if code, msg := c.data(fits); code != 250 {
		t.Fatalf("%d-byte message: %d %s", len(fits), code, msg)
	}
	c.expect(221, "QUIT")
	got := b.waitMailbox(t, b.user, "INBOX", 1)
	if !bytes.Contains(got[0], []byte("just-fits@hospital.example")) {
		t.Fatalf("bob's message:\n%.300s", got[0])
	}
	q := a.queued(t)
	if len(q) != 1 || q[0].Size > limit {
		t.Fatalf("queue %+v: the sealed message must fit %d bytes", q, limit)
	}
	t.Logf("plain %d bytes sealed to %d (limit %d)", len(fits), q[0].Size, limit)
}

// sizedMessage is a message of about size bytes of 76-character lines.
func sizedMessage(from, to, id string, size int) []byte {
	m := plainMessage(from, to, id, "")
	line := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 2)[:76] + "\r\n"
	var b bytes.Buffer
	b.Write(m)
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// TestDefaultMailboxQuota: [limits] mailbox_quota limits an address
// without a quota of its own: IMAP APPEND over it is NO [OVERQUOTA]
// (Python's imaplib), within it OK; an own quota of none lifts it.
func TestDefaultMailboxQuota(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	a.start(t, "127.0.0.1:1", nil, func(c *config.Config) { c.Limits.MailboxQuota = 100 << 10 })
	host, port, _ := net.SplitHostPort(a.addrs["imap"])
	dir := t.TempDir()
	appendSize := func(size int) string {
		t.Helper()
		f := filepath.Join(dir, "m.eml")
		if err := os.WriteFile(f, sizedMessage(a.user, a.user, "draft@hospital.example", size), 0o600); err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf(`
import imaplib
c = imaplib.IMAP4(%q, %s)
c.login(%q, %q)
try:
    typ, data = c.append("INBOX", None, None, open(%q, "rb").read())
    print(typ, data[0].decode())
except imaplib.IMAP4.error as e:
    print("NO", e)
c.logout()
`, host, port, a.user, a.password, f)
		out, err := exec.Command("python3", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("python3 imaplib: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := appendSize(60 << 10); !strings.HasPrefix(out, "OK") {
		t.Fatalf("APPEND within the default quota: %s", out)
	}
	if out := appendSize(60 << 10); !strings.HasPrefix(out, "NO") || !strings.Contains(out, "OVERQUOTA") {
		t.Fatalf("APPEND over the default quota: %s, want NO [OVERQUOTA]", out)
	}
	if n := len(a.mailbox(t, a.user, "INBOX")); n != 1 {
		t.Fatalf("INBOX holds %d messages, want 1", n)
	}
	must(t, func() error { return a.st.SetQuota(context.Background(), a.user, store.QuotaNone) })
	if out := appendSize(60 << 10); !strings.HasPrefix(out, "OK") {
		t.Fatalf("APPEND with no quota of its own: %s", out)
	}
}

// TestAdminListenerEdges: /crl/ of a malformed or unknown name is 404
// (not 500, and the name is not echoed); the admin page's notice is only
// one the page chose.
func TestAdminListenerEdges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	const adminPassword = "admin password 1"
	must(t, func() error { _, err := a.st.AddAdmin(ctx, "ops", adminPassword); return err })
	a.start(t, "127.0.0.1:1", nil, nil)
	base := "http://" + a.addrs["admin"]
	get := func(path string, auth bool) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth {
			req.SetBasicAuth("ops", adminPassword)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, name := range []string{"unknown.example.crl", "hospital.example.crl", "<script>alert(1)</script>.crl",
		url.PathEscape("evil\r\nlevel=ERROR msg=forged") + ".crl", strings.Repeat("a", 300) + ".crl", "..%2f..%2fetc%2fpasswd.crl", "nodot"} {
		code, body := get("/crl/"+name, false)
		if code != http.StatusNotFound {
			t.Errorf("/crl/%.60s: %d, want 404", name, code)
		}
		if strings.Contains(body, "script") || strings.Contains(body, "forged") {
			t.Errorf("/crl/%.60s echoes the name: %q", name, body)
		}
	}

	for _, c := range []struct{ query, want, not string }{
		{"done=" + url.QueryEscape("<b>Your password expired, call 555-0100</b>"), "", "555-0100"},
		{"done=drop&id=7", "queue entry 7 dropped (no DSN)", ""},
		{"done=retry&id=7&n=2", "queue entry 7: 2 recipient(s) due now", ""},
		{"done=retry&id=7&n=" + url.QueryEscape("2 (call 555-0100)"), "", "555-0100"},
		{"done=drop&id=" + url.QueryEscape("7 dropped. Call 555-0100"), "", "555-0100"},
		{"done=reboot&id=7", "", "reboot"},
	} {
		code, page := get("/?"+c.query, true)
		if code != http.StatusOK {
			t.Fatalf("admin page ?%s: %d", c.query, code)
		}
		if c.want != "" && !strings.Contains(page, `<p class="notice">`+c.want+`</p>`) {
			t.Errorf("?%s: the page lacks the notice %q", c.query, c.want)
		}
		if c.not != "" && strings.Contains(page, c.not) {
			t.Errorf("?%s: the page shows the text of the link", c.query)
		}
		if c.want == "" && strings.Contains(page, `class="notice"`) {
			t.Errorf("?%s: the page shows a notice", c.query)
		}
	}
}

// TestTLSListenersAEADOnly: every TLS listener refuses a TLS 1.2 client
// that offers only CBC-SHA1 suites and serves one offering an AEAD suite.
func TestTLSListenersAEADOnly(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	a.start(t, "127.0.0.1:1", nil, func(c *config.Config) {
		c.Listen.IMAPS = "127.0.0.1:0"
		c.Listen.AdminHTTPS = "127.0.0.1:0"
	})
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
	gcm := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}

	// starttls brings a plain connection to the point of the handshake.
	smtpStartTLS := func(conn net.Conn) error {
		br := newLineReader(conn)
		for _, step := range []struct{ send, want string }{{"", "220 "}, {"EHLO test.localhost\r\n", "250 "}, {"STARTTLS\r\n", "220 "}} {
			if step.send != "" {
				conn.Write([]byte(step.send))
			}
			if err := br.until(step.want); err != nil {
				return err
			}
		}
		return nil
	}
	imapStartTLS := func(conn net.Conn) error {
		br := newLineReader(conn)
		if err := br.until("* OK"); err != nil {
			return err
		}
		conn.Write([]byte("a STARTTLS\r\n"))
		return br.until("a OK")
	}
	for _, l := range []struct {
		name     string
		starttls func(net.Conn) error // nil: implicit TLS
	}{{"smtp", smtpStartTLS}, {"submission", smtpStartTLS}, {"imap", imapStartTLS}, {"imaps", nil}, {"admin_https", nil}} {
		for _, suites := range [][]uint16{cbc, gcm} {
			conn, err := net.DialTimeout("tcp", a.addrs[l.name], 10*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", l.name, err)
			}
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if l.starttls != nil {
				if err := l.starttls(conn); err != nil {
					t.Fatalf("%s: STARTTLS: %v", l.name, err)
				}
			}
			tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: suites})
			err = tc.Handshake()
			if suites[0] == cbc[0] && err == nil {
				t.Errorf("%s: TLS 1.2 with CBC-SHA1 suites only: handshake succeeded with %s", l.name, tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
			}
			if suites[0] == gcm[0] && err != nil {
				t.Errorf("%s: TLS 1.2 with GCM: %v", l.name, err)
			}
			conn.Close()
		}
	}
	// An independent client: openssl offering only a CBC suite.
	if _, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command("openssl", "s_client", "-connect", a.addrs["imaps"], "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA").CombinedOutput()
		if err == nil && !bytes.Contains(out, []byte("handshake failure")) && !bytes.Contains(out, []byte("alert")) {
			t.Errorf("openssl with a CBC suite connected:\n%s", out)
		}
	}
}

// lineReader reads protocol lines until one with a prefix.
type lineReader struct {
	conn net.Conn
	buf  []byte
}

func newLineReader(c net.Conn) *lineReader { return &lineReader{conn: c} }

// until reads lines one byte at a time (nothing of the TLS handshake may
// be read ahead) until one starts with prefix.
func (r *lineReader) until(prefix string) error {
	b := make([]byte, 1)
	for {
		if _, err := r.conn.Read(b); err != nil {
			return err
		}
		r.buf = append(r.buf, b[0])
		if b[0] != '\n' {
			continue
		}
		line := string(r.buf)
		r.buf = r.buf[:0]
		if strings.HasPrefix(line, prefix) {
			return nil
		}
		if len(line) >= 4 && line[3] == ' ' {
			if _, err := strconv.Atoi(line[:3]); err == nil {
				return fmt.Errorf("got %q, want %q", strings.TrimSpace(line), prefix)
			}
		}
	}
}

// TestOutboundTLSConfig: [outbound] tls and a route's tls reach delivery.
// A route with tls = "required" to a partner without STARTTLS, and the
// default tls = "verify" for a partner with a self-signed certificate, are
// temporary failures with the reason; the message stays queued.
func TestOutboundTLSConfig(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	c := newInstance(t, "lab.example", "carol")
	for _, x := range []*instance{b, c} {
		a.trust(t, x)
		x.trust(t, a)
	}
	dns := publishBoth(t, a, b, c)
	b.start(t, dns, nil, nil)
	plain := plainSMTP(t)
	a.start(t, dns, nil, func(cfg *config.Config) {
		cfg.Outbound.TLS = "verify"
		cfg.Outbound.Routes = map[string]config.Route{
			"clinic.example": {Addr: b.addrs["smtp"]},        // self-signed: verify fails
			"lab.example":    {Addr: plain, TLS: "required"}, // no STARTTLS at all
		}
	})
	for _, to := range []string{b.user, c.user} {
		if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{to},
			plainMessage(a.user, to, "tls-"+to, "Over TLS only.")); r != "" {
			t.Fatalf("submission to %s refused: %s", to, r)
		}
	}
	want := map[string]struct{ enh, reason string }{
		b.user: {"4.7.0", "certificate"},
		c.user: {"4.7.10", "does not offer STARTTLS"},
	}
	waitFor(t, "both recipients deferred with the TLS reason", func() bool {
		n := 0
		for _, m := range a.queued(t) {
			for _, r := range m.Recipients {
				if w, ok := want[r.Address]; ok && r.Attempts > 0 && r.LastEnhanced == w.enh && strings.Contains(r.LastError, w.reason) &&
					r.State == store.StateQueued {
					n++
				}
			}
		}
		return n == 2
	})
	if n := len(b.mailbox(t, b.user, "INBOX")); n != 0 {
		t.Fatalf("bob got %d messages over unverified TLS", n)
	}
}

// plainSMTP is an SMTP server that offers no STARTTLS and takes nothing.
func plainSMTP(t *testing.T) string {
	t.Helper()
	return loopbackServer(t, func(conn net.Conn) {
		conn.SetDeadline(time.Now().Add(time.Minute))
		conn.Write([]byte("220 plain.example ESMTP\r\n"))
		r := newLineReader(conn)
		for {
			line, err := r.line()
			if err != nil {
				return
			}
			switch cmd := strings.ToUpper(strings.Fields(line + " x")[0]); cmd {
			case "EHLO", "HELO":
				conn.Write([]byte("250-plain.example\r\n250 8BITMIME\r\n"))
			case "QUIT":
				conn.Write([]byte("221 bye\r\n"))
				return
			default:
				conn.Write([]byte("554 5.7.0 nothing here\r\n"))
			}
		}
	})
}

// line reads one line without its end.
func (r *lineReader) line() (string, error) {
	b := make([]byte, 1)
	for {
		if _, err := r.conn.Read(b); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			line := strings.TrimRight(string(r.buf), "\r")
			r.buf = r.buf[:0]
			return line, nil
		}
		r.buf = append(r.buf, b[0])
	}
}
