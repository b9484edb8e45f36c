package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/store"
)

// rawConn speaks SMTP line by line, for what real clients will not send.
type rawConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	tcheck(t, err, "dial")
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	if g := rc.reply(); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	return rc
}

func (rc *rawConn) write(s string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// reply reads a whole reply and returns its lines joined by "|".
func (rc *rawConn) reply() string {
	rc.t.Helper()
	var lines []string
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("read reply (after %q): %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "|")
		}
	}
}

func (rc *rawConn) cmd(line string) string {
	rc.t.Helper()
	rc.write(line + "\r\n")
	return rc.reply()
}

// expect sends a command and checks the start of the last reply line.
func (rc *rawConn) expect(line, want string) string {
	rc.t.Helper()
	got := rc.cmd(line)
	last := got[strings.LastIndex(got, "|")+1:]
	if !strings.HasPrefix(last, want) {
		rc.t.Fatalf("%q: got %q, want %q...", line, got, want)
	}
	return got
}

// message sends a DATA section (dot-stuffing is the caller's) and checks
// the reply.
func (rc *rawConn) message(content, want string) string {
	rc.t.Helper()
	rc.expect("DATA", "354")
	return rc.expect(content+".", want)
}

func newBackbone(t testing.TB, cfg BackboneConfig) (*Server, *recorder, *testbuf.Buffer) {
	t.Helper()
	rec := &recorder{}
	log, buf := testLogger(t)
	cfg.Logger = log
	if cfg.Recipients == nil {
		cfg.Recipients = anyLocal{}
	}
	cfg.Handler = rec
	s, err := NewBackbone(cfg)
	tcheck(t, err, "new backbone")
	return s, rec, buf
}

func TestBackboneRelayUnknownAndAudit(t *testing.T) {
	st := testStore(t)
	s, rec, _ := newBackbone(t, BackboneConfig{Config: Config{Hostname: "mx.a.example", Audit: st}, Recipients: LocalRecipients{Store: st}})
	addr := serve(t, s)

	c, err := gosmtp.Dial(addr)
	tcheck(t, err, "dial")
	defer c.Close()
	tcheck(t, c.Hello("mx.remote.example"), "ehlo")
	if size, ok := c.MaxMessageSize(); !ok || size != DefaultMaxMessageBytes {
		t.Errorf("SIZE %d %v, want %d", size, ok, DefaultMaxMessageBytes)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Errorf("backbone offers AUTH")
	}
	if ok, _ := c.Extension("SMTPUTF8"); ok {
		t.Errorf("SMTPUTF8 offered")
	}
	tcheck(t, c.Mail("sender@remote.example", nil), "mail")
	wantSMTPError(t, c.Rcpt("victim@elsewhere.example", nil), 554, "5.7.1", "Relay access denied")
	wantSMTPError(t, c.Rcpt("nobody@a.example", nil), 550, "5.1.1", "No such recipient")
	tcheck(t, c.Rcpt("Bob@A.example", nil), "rcpt to a local address")
	w, err := c.Data()
	tcheck(t, err, "data")
	fmt.Fprintf(w, "From: sender@remote.example\r\nTo: bob@a.example\r\nSubject: s\r\n\r\nhello\r\n")
	tcheck(t, w.Close(), "end data")
	tcheck(t, c.Quit(), "quit")

	got := rec.all()
	if len(got) != 1 || len(got[0].env.Recipients) != 1 || got[0].env.Recipients[0] != "Bob@A.example" ||
		got[0].env.MailFrom != "sender@remote.example" || got[0].env.User != "" || got[0].env.TLS {
		t.Fatalf("handler got %+v", got)
	}
	events, err := st.AuditEvents(context.Background(), 0)
	tcheck(t, err, "audit events")
	var relay, unknown bool
	for _, e := range events {
		if e.Action == "smtp.backbone.rcpt" && e.Verdict == "refused" {
			relay = relay || e.Subject == "victim@elsewhere.example" && strings.Contains(e.Reason, "554 5.7.1")
			unknown = unknown || e.Subject == "nobody@a.example" && strings.Contains(e.Reason, "550 5.1.1")
		}
	}
	if !relay || !unknown {
		t.Fatalf("audit records missing: %+v", events)
	}
}

func wantSMTPError(t testing.TB, err error, code int, enhanced, text string) {
	t.Helper()
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want SMTP error %d %s", err, code, enhanced)
	}
	got := fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	if se.Code != code || got != enhanced || !strings.Contains(se.Message, text) {
		t.Fatalf("got %d %s %q, want %d %s %q", se.Code, got, se.Message, code, enhanced, text)
	}
}

func TestBackboneBadInput(t *testing.T) {
	s, rec, _ := newBackbone(t, BackboneConfig{Config: Config{MaxMessageBytes: 10000}})
	rec.reply = func(env Envelope, msg []byte) (*Reply, error) {
		switch {
		case strings.Contains(string(msg), "REFUSE"):
			return &Reply{Code: 550, Enhanced: "5.7.1", Message: "untrusted signer: no anchor for\r\nca.remote.example"}, nil
		case strings.Contains(string(msg), "TEMPFAIL"):
			return nil, errors.New("database on fire")
		case strings.Contains(string(msg), "CUSTOM"):
			return &Reply{Code: 250, Enhanced: "2.0.0", Message: "queued as 42"}, nil
		}
		return nil, nil
	}
	addr := serve(t, s)
	rc := dialRaw(t, addr)
	ehlo := rc.expect("EHLO mx.remote.example", "250")
	if !strings.Contains(ehlo, "SIZE 10000") {
		t.Errorf("EHLO %q: want SIZE 10000", ehlo)
	}

	// Malformed commands.
	rc.expect("XYZZY", "501 5.5.2")
	rc.expect("XYZZ", "500 5.5.2")
	rc.expect("RCPT TO:<bob@a.example>", "502 5.5.1")
	rc.expect("MAIL FROM:bogus", "501 5.5.2")
	rc.expect("RSET", "250")

	// Non-ASCII addresses, and the SMTPUTF8 parameter (not offered).
	rc.expect("MAIL FROM:<jöhn@remote.example>", "553 5.6.7")
	rc.expect("MAIL FROM:<john@remote.example> SMTPUTF8", "504 5.5.4")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<jöhn@a.example>", "553 5.6.7")
	rc.expect("RCPT TO:<bob@a.éxample>", "553 5.6.7")
	rc.expect("RCPT TO:<no-domain>", "501")
	rc.expect("DATA", "502")
	rc.expect("RSET", "250")

	// Oversize: announced, then sent.
	rc.expect("MAIL FROM:<john@remote.example> SIZE=20000", "552 5.3.4")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: big\r\n\r\n"+strings.Repeat("0123456789abcdef\r\n", 1000), "552 5.3.4")

	// Empty and blank messages.
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("", "554 5.6.0")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("\r\n  \r\n", "554 5.6.0")

	// The handler's refusal reaches the client as it is; its error is a
	// temporary failure; a 2xx text of its own is sent.
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: REFUSE\r\n\r\nx\r\n", "550 5.7.1 untrusted signer: no anchor for ca.remote.example")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: TEMPFAIL\r\n\r\nx\r\n", "451 4.3.0")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: CUSTOM\r\n\r\nx\r\n", "250 2.0.0 queued as 42")

	// Bare LF line ends are normalized; the null sender is fine here.
	rc.expect("MAIL FROM:<>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.expect("RCPT TO:<BOB@a.example>", "250") // duplicate, folded
	rc.message("Subject: lf\nFrom: x@remote.example\n\nline 1\nline 2\r\n", "250")
	got := rec.all()
	last := got[len(got)-1]
	if string(last.msg) != "Subject: lf\r\nFrom: x@remote.example\r\n\r\nline 1\r\nline 2\r\n" {
		t.Fatalf("bare LF message handed over as %q", last.msg)
	}
	if last.env.MailFrom != "" || len(last.env.Recipients) != 1 {
		t.Fatalf("envelope %+v", last.env)
	}
	rc.expect("QUIT", "221")
	if n := len(got); n != 4 {
		t.Fatalf("handler called %d times, want 4 (REFUSE, TEMPFAIL, CUSTOM, bare LF)", n)
	}
}

func TestBackboneRecipientLimit(t *testing.T) {
	st := testStore(t)
	s, rec, _ := newBackbone(t, BackboneConfig{Config: Config{Audit: st}})
	addr := serve(t, s)
	rc := dialRaw(t, addr)
	rc.expect("EHLO mx.remote.example", "250")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	// 1000 RCPTs, pipelined: write them while reading the replies.
	const n = 1000
	go func() {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "RCPT TO:<user%d@a.example>\r\n", i)
		}
		rc.c.Write([]byte(b.String()))
	}()
	ok, limited := 0, 0
	for i := range n {
		r := rc.reply()
		switch {
		case strings.HasPrefix(r, "250"):
			ok++
		case strings.HasPrefix(r, "452 4.5.3"):
			limited++
		default:
			t.Fatalf("reply %d: %q", i, r)
		}
	}
	if ok != DefaultMaxRecipients || limited != n-DefaultMaxRecipients {
		t.Fatalf("%d accepted, %d limited", ok, limited)
	}
	rc.message("Subject: many\r\n\r\nx\r\n", "250")
	got := rec.all()
	if len(got) != 1 || len(got[0].env.Recipients) != DefaultMaxRecipients {
		t.Fatalf("handler got %d messages", len(got))
	}
	// One audit record for the flood, naming the first recipient refused.
	evs, err := st.AuditEvents(context.Background(), 100)
	tcheck(t, err, "audit")
	audited := 0
	for _, e := range evs {
		if e.Action == "smtp.backbone.rcpt" && strings.HasPrefix(e.Reason, "452 4.5.3") {
			audited++
			if e.Subject != fmt.Sprintf("user%d@a.example", DefaultMaxRecipients) {
				t.Errorf("audited %+v", e)
			}
		}
	}
	if audited != 1 {
		t.Errorf("%d audit records of refused recipients, want 1", audited)
	}
}

func TestBackboneHeaderBomb(t *testing.T) {
	s, rec, buf := newBackbone(t, BackboneConfig{Config: Config{MaxMessageBytes: 8 << 20}})
	addr := serve(t, s)
	rc := dialRaw(t, addr)
	rc.expect("EHLO mx.remote.example", "250")
	send := func(header, want string) {
		t.Helper()
		rc.expect("MAIL FROM:<john@remote.example>", "250")
		rc.expect("RCPT TO:<bob@a.example>", "250")
		rc.message(header+"\r\nbody\r\n", want)
	}
	send(strings.Repeat("X-Bomb: 1\r\n", 1500), "552 5.3.4 Message refused: message header has more than 1000 lines")
	send(strings.Repeat("X-Bomb: "+strings.Repeat("b", 1500)+"\r\n", 900), "552 5.3.4 Message refused: message header is larger than 1048576 bytes")
	// Long bodies are no header bomb.
	send("Subject: fine\r\n\r\n"+strings.Repeat("body line\r\n", 5000), "250")
	if got := rec.all(); len(got) != 1 {
		t.Fatalf("handler called %d times", len(got))
	}
	waitLog(t, buf, "smtp refused", "action=data", "header has more than 1000 lines")
}

func TestBackboneDropAndStall(t *testing.T) {
	s, rec, buf := newBackbone(t, BackboneConfig{Config: Config{DataTimeout: 300 * time.Millisecond}})
	addr := serve(t, s)

	// A client that drops the connection in the middle of DATA.
	rc := dialRaw(t, addr)
	rc.expect("EHLO mx.remote.example", "250")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.expect("DATA", "354")
	rc.write("Subject: half\r\n\r\nthe first half of a mess")
	rc.c.Close()
	waitLog(t, buf, "smtp connection lost in DATA, nothing queued")

	// A client that stops sending in the middle of DATA.
	rc = dialRaw(t, addr)
	rc.expect("EHLO mx.remote.example", "250")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.expect("DATA", "354")
	rc.write("Subject: stall\r\n\r\nand then noth")
	if r := rc.reply(); !strings.HasPrefix(r, "421 4.4.2") {
		t.Fatalf("stalled client got %q", r)
	}
	waitLog(t, buf, "smtp client stalled in DATA, nothing queued")

	// Nothing was handed over; a whole message still is.
	rc = dialRaw(t, addr)
	rc.expect("EHLO mx.remote.example", "250")
	rc.expect("MAIL FROM:<john@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: whole\r\n\r\nall of it\r\n", "250")
	got := rec.all()
	if len(got) != 1 || !strings.Contains(string(got[0].msg), "all of it") {
		t.Fatalf("handler got %d messages", len(got))
	}
}

func newSubmission(t testing.TB, cfg SubmissionConfig, st *store.Store) (*Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	log, _ := testLogger(t)
	cfg.Logger = log
	cfg.Auth = StoreAuthenticator{Store: st}
	cfg.Audit = st
	if cfg.LoginSleep == nil {
		cfg.LoginSleep = func(context.Context, time.Duration) {} // tests do not wait out failed logins
	}
	cfg.Handler = rec
	s, err := NewSubmission(cfg)
	tcheck(t, err, "new submission")
	return s, rec
}

func TestSubmissionGoClient(t *testing.T) {
	st := testStore(t)
	tlsConfig, pool := testTLS(t)
	// A listener that counts as non-loopback: no AUTH before TLS.
	s, rec := newSubmission(t, SubmissionConfig{Config: Config{TLSConfig: tlsConfig},
		InsecureAuth: func(net.Addr) bool { return false }}, st)
	addr := serve(t, s)

	c, err := gosmtp.Dial(addr)
	tcheck(t, err, "dial")
	tcheck(t, c.Hello("client.example"), "ehlo")
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatalf("AUTH offered before TLS on a non-loopback listener")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatalf("STARTTLS not offered")
	}
	wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), 538, "5.7.11", "STARTTLS")
	wantSMTPError(t, c.Mail("alice@a.example", nil), 530, "5.7.0", "Authentication required")
	c.Close()

	conn, err := net.Dial("tcp", addr)
	tcheck(t, err, "dial")
	c, err = gosmtp.NewClientStartTLS(conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	tcheck(t, err, "starttls")
	defer c.Close()
	if !c.SupportsAuth("PLAIN") || !c.SupportsAuth("LOGIN") {
		t.Fatalf("AUTH PLAIN and LOGIN not offered over TLS")
	}
	wantSMTPError(t, c.Mail("alice@a.example", nil), 530, "5.7.0", "Authentication required")
	wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "wrong-password")), 535, "5.7.8", "credentials invalid")
	wantSMTPError(t, c.Auth(sasl.NewLoginClient("nobody@a.example", "alice-password")), 535, "5.7.8", "credentials invalid")
	tcheck(t, c.Auth(sasl.NewLoginClient("alice@a.example", "alice-password")), "auth login")
	wantSMTPError(t, c.Mail("bob@a.example", nil), 550, "5.7.1", "not an address of login alice@a.example")
	tcheck(t, c.Mail("Alice@a.example", nil), "mail")
	tcheck(t, c.Rcpt("carol@b.example", nil), "rcpt remote")
	tcheck(t, c.Rcpt("bob@a.example", nil), "rcpt local")
	w, err := c.Data()
	tcheck(t, err, "data")
	fmt.Fprintf(w, "From: alice@a.example\r\nTo: carol@b.example, bob@a.example\r\nSubject: s\r\n\r\nhello\r\n")
	tcheck(t, w.Close(), "end data")
	tcheck(t, c.Quit(), "quit")

	got := rec.all()
	if len(got) != 1 {
		t.Fatalf("handler got %d messages", len(got))
	}
	env := got[0].env
	if env.User != "alice@a.example" || env.MailFrom != "Alice@a.example" || !env.TLS ||
		strings.Join(env.Recipients, ",") != "carol@b.example,bob@a.example" || env.RemoteAddr == "" {
		t.Fatalf("envelope %+v", env)
	}

	// A separate connection with PLAIN; too many failures stop AUTH.
	conn, err = net.Dial("tcp", addr)
	tcheck(t, err, "dial")
	c, err = gosmtp.NewClientStartTLS(conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	tcheck(t, err, "starttls")
	defer c.Close()
	tcheck(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), "auth plain")
}

func TestSubmissionAuthFailureLimit(t *testing.T) {
	st := testStore(t)
	s, _ := newSubmission(t, SubmissionConfig{MaxAuthFailures: 2}, st)
	addr := serve(t, s)
	c, err := gosmtp.Dial(addr) // loopback: AUTH allowed without TLS
	tcheck(t, err, "dial")
	defer c.Close()
	for range 2 {
		wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "guess")), 535, "5.7.8", "")
	}
	wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), 421, "4.7.0", "Too many")
}

// TestSubmissionLoginDelays: failed logins are answered later and later
// across connections (per login and client IP), and each later try of the
// login, the right password too, waits its earned delay first; a good login
// forgets its name's failures.
func TestSubmissionLoginDelays(t *testing.T) {
	st := testStore(t)
	var mu sync.Mutex
	var sleeps []time.Duration
	s, _ := newSubmission(t, SubmissionConfig{LoginSleep: func(_ context.Context, d time.Duration) {
		mu.Lock()
		sleeps = append(sleeps, d)
		mu.Unlock()
	}, Logins: loginlimit.New(func() time.Time { return time.Unix(1e9, 0) })}, st) // a clock standing still: exact turns
	addr := serve(t, s)
	for range 3 {
		c, err := gosmtp.Dial(addr)
		tcheck(t, err, "dial")
		wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "guess")), 535, "5.7.8", "")
		c.Close()
	}
	c, err := gosmtp.Dial(addr)
	tcheck(t, err, "dial")
	defer c.Close()
	tcheck(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), "good login")
	mu.Lock()
	defer mu.Unlock()
	// After each failure its delay; before each later try of the login
	// (the right password too) the delay it earned.
	b := loginlimit.DelayBase
	if want := []time.Duration{b, b, 2 * b, 2 * b, 4 * b, 4 * b}; !slices.Equal(sleeps, want) {
		t.Fatalf("delays %v, want %v", sleeps, want)
	}
}

const pythonSubmission = `
import base64, smtplib, ssl, sys
host, port, port_remote = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def res(k, v):
    print("%s=%s" % (k, v), flush=True)
msg = "From: alice@a.example\r\nTo: carol@b.example\r\nSubject: hi\r\nMessage-ID: <py1@a.example>\r\n\r\nhello from python\r\n"

# Loopback listener: AUTH is offered before TLS; MAIL before AUTH is refused.
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("py.example")
res("loopback_auth_offered", s.has_extn("auth"))
code, resp = s.mail("alice@a.example")
res("mail_before_auth", "%d %s" % (code, resp.decode()))
s.rset()
s.starttls(context=ctx)
s.ehlo("py.example")
try:
    s.login("alice@a.example", "wrong-password")
    res("wrong_password", "accepted")
except smtplib.SMTPAuthenticationError as e:
    res("wrong_password", "%d %s" % (e.smtp_code, e.smtp_error.decode()))
s.user, s.password = "alice@a.example", "alice-password"
code, resp = s.auth("PLAIN", s.auth_plain)
res("plain", code)
try:
    s.sendmail("mallory@a.example", ["carol@b.example"], msg)
    res("spoof", "accepted")
except smtplib.SMTPSenderRefused as e:
    res("spoof", "%d %s" % (e.smtp_code, e.smtp_error.decode()))
s.sendmail("alice@a.example", ["carol@b.example", "bob@a.example"], msg)
res("sent_plain", "ok")
s.quit()

s = smtplib.SMTP(host, port, timeout=30)
s.starttls(context=ctx)
s.ehlo("py.example")
s.user, s.password = "alice@a.example", "alice-password"
code, resp = s.auth("LOGIN", s.auth_login)
res("login", code)
s.sendmail("alice@a.example", ["carol@b.example"], msg)
res("sent_login", "ok")
s.quit()

# A listener that is not loopback: no AUTH before STARTTLS.
s = smtplib.SMTP(host, port_remote, timeout=30)
s.ehlo("py.example")
res("remote_auth_offered", s.has_extn("auth"))
code, resp = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@a.example\0alice-password").decode())
res("remote_auth_before_tls", "%d %s" % (code, resp.decode()))
s.starttls(context=ctx)
s.ehlo("py.example")
res("remote_auth_offered_tls", s.has_extn("auth"))
s.login("alice@a.example", "alice-password")
res("remote_login", "ok")
s.quit()
`

func TestSubmissionPython(t *testing.T) {
	st := testStore(t)
	tlsConfig, _ := testTLS(t)
	s, rec := newSubmission(t, SubmissionConfig{Config: Config{TLSConfig: tlsConfig}}, st)
	addr := serve(t, s)
	remote, _ := newSubmission(t, SubmissionConfig{Config: Config{TLSConfig: tlsConfig},
		InsecureAuth: func(net.Addr) bool { return false }}, st)
	remoteAddr := serve(t, remote)
	host, port, _ := net.SplitHostPort(addr)
	_, remotePort, _ := net.SplitHostPort(remoteAddr)

	out := runPython(t, pythonSubmission, host, port, remotePort)
	results := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		results[k] = v
	}
	want := map[string]string{
		"loopback_auth_offered":   "True",
		"mail_before_auth":        "530 5.7.0 Authentication required",
		"wrong_password":          "535 5.7.8 Authentication credentials invalid",
		"plain":                   "235",
		"spoof":                   "550 5.7.1 Sender <mallory@a.example> is not an address of login alice@a.example",
		"sent_plain":              "ok",
		"login":                   "235",
		"sent_login":              "ok",
		"remote_auth_offered":     "False",
		"remote_auth_before_tls":  "538 5.7.11 Encryption required: use STARTTLS before AUTH",
		"remote_auth_offered_tls": "True",
		"remote_login":            "ok",
	}
	for k, v := range want {
		if results[k] != v {
			t.Errorf("%s: got %q, want %q", k, results[k], v)
		}
	}
	if t.Failed() {
		t.Logf("python output:\n%s", out)
	}
	got := rec.all()
	if len(got) != 2 || got[0].env.User != "alice@a.example" || !got[0].env.TLS || len(got[0].env.Recipients) != 2 ||
		!strings.Contains(string(got[0].msg), "hello from python\r\n") {
		t.Fatalf("handler got %+v", got)
	}
}

const pythonBackbone = `
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
def res(k, v):
    print("%s=%s" % (k, v), flush=True)
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("mx.remote.example")
res("auth", s.has_extn("auth"))
res("size", s.esmtp_features.get("size", ""))
msg = "From: x@remote.example\r\nTo: bob@a.example\r\nSubject: t\r\n\r\nbody\r\n"
for rcpt in ["victim@elsewhere.example", "nobody@a.example"]:
    try:
        s.sendmail("x@remote.example", [rcpt], msg)
        res(rcpt, "accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients[rcpt]
        res(rcpt, "%d %s" % (code, text.decode()))
refused = s.sendmail("x@remote.example", ["bob@a.example", "victim@elsewhere.example"], msg)
res("partial", ",".join("%s:%d" % (k, v[0]) for k, v in refused.items()))
try:
    s.sendmail("x@remote.example", ["bob@a.example"], "Subject: REFUSE\r\n\r\nx\r\n")
    res("refused_data", "accepted")
except smtplib.SMTPDataError as e:
    res("refused_data", "%d %s" % (e.smtp_code, e.smtp_error.decode()))
s.quit()
`

func TestBackbonePython(t *testing.T) {
	st := testStore(t)
	s, rec, _ := newBackbone(t, BackboneConfig{Recipients: LocalRecipients{Store: st}})
	rec.reply = func(env Envelope, msg []byte) (*Reply, error) {
		if strings.Contains(string(msg), "REFUSE") {
			return &Reply{Code: 554, Enhanced: "5.7.1", Message: "message is not encrypted"}, nil
		}
		return nil, nil
	}
	addr := serve(t, s)
	host, port, _ := net.SplitHostPort(addr)
	out := runPython(t, pythonBackbone, host, port)
	for _, want := range []string{
		"auth=False",
		fmt.Sprintf("size=%d", DefaultMaxMessageBytes),
		"victim@elsewhere.example=554 5.7.1 Relay access denied: elsewhere.example is not a domain of this server",
		"nobody@a.example=550 5.1.1 No such recipient <nobody@a.example>",
		"partial=victim@elsewhere.example:554",
		"refused_data=554 5.7.1 message is not encrypted",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("python output lacks %q:\n%s", want, out)
		}
	}
	if got := rec.all(); len(got) != 2 || len(got[0].env.Recipients) != 1 || got[0].env.Recipients[0] != "bob@a.example" {
		t.Fatalf("handler got %+v", got)
	}
}

func TestBackboneSTARTTLS(t *testing.T) {
	tlsConfig, pool := testTLS(t)
	s, rec, _ := newBackbone(t, BackboneConfig{Config: Config{TLSConfig: tlsConfig}})
	addr := serve(t, s)
	conn, err := net.Dial("tcp", addr)
	tcheck(t, err, "dial")
	c, err := gosmtp.NewClientStartTLS(conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	tcheck(t, err, "starttls")
	defer c.Close()
	tcheck(t, c.SendMail("x@remote.example", []string{"bob@a.example"}, strings.NewReader("Subject: tls\r\n\r\nx\r\n")), "send")
	if got := rec.all(); len(got) != 1 || !got[0].env.TLS {
		t.Fatalf("handler got %+v", got)
	}
}

func TestGracefulShutdown(t *testing.T) {
	s, rec, _ := newBackbone(t, BackboneConfig{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	addr := l.Addr().String()

	busy := dialRaw(t, addr)
	busy.expect("EHLO mx.remote.example", "250")
	busy.expect("MAIL FROM:<john@remote.example>", "250")
	busy.expect("RCPT TO:<bob@a.example>", "250")
	busy.expect("DATA", "354")
	busy.write("Subject: in flight\r\n\r\nfirst half, ")
	idle := dialRaw(t, addr)
	idle.expect("EHLO mx.remote.example", "250")

	cancel() // Serve shuts down
	// The idle connection is closed at once.
	if _, err := idle.r.ReadString('\n'); err == nil {
		t.Fatalf("idle connection still open")
	}
	// No new connections.
	waitFor(t, "listener closed", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The transaction in flight finishes and gets its 250, then the
	// connection closes.
	busy.write("second half\r\n.\r\n")
	if r := busy.reply(); !strings.HasPrefix(r, "250") {
		t.Fatalf("in-flight message got %q", r)
	}
	if _, err := busy.r.ReadString('\n'); err == nil {
		t.Fatalf("connection still open after its transaction")
	}
	tcheck(t, <-served, "serve")
	if got := rec.all(); len(got) != 1 || !strings.Contains(string(got[0].msg), "first half, second half") {
		t.Fatalf("handler got %+v", got)
	}
}

func TestShutdownTimeout(t *testing.T) {
	s, rec, _ := newBackbone(t, BackboneConfig{})
	addr := serve(t, s)
	busy := dialRaw(t, addr)
	busy.expect("EHLO mx.remote.example", "250")
	busy.expect("MAIL FROM:<john@remote.example>", "250")
	busy.expect("RCPT TO:<bob@a.example>", "250")
	busy.expect("DATA", "354")
	busy.write("Subject: stuck\r\n\r\nnever finished")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v, want deadline exceeded", err)
	}
	if _, err := busy.r.ReadString('\n'); err == nil {
		t.Fatalf("connection in flight not cut")
	}
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("handler got %+v", got)
	}
}
