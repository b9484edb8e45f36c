package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
)

// instance is one hisp in an end-to-end test: its own data directory,
// domain, local CA, user and loopback listeners.
type instance struct {
	dir, domain, user, password string
	ca, userID                  *testpki.Identity
	addrs                       map[string]string // listener name → address
	st                          *store.Store      // a second handle, for the test's checks
}

const testPassword = "e2e password 1"

// newInstance makes the data directory of a HISP for domain with one user.
func newInstance(t *testing.T, domain, user string) *instance {
	t.Helper()
	ctx := context.Background()
	in := &instance{dir: t.TempDir(), domain: domain, user: user + "@" + domain, password: testPassword}
	st, err := store.Open(ctx, in.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	in.st = st
	in.ca = testpki.NewCA(t, "CA of "+domain)
	in.userID = testpki.Issue(t, in.ca, testpki.Options{Email: []string{in.user}})
	must(t, func() error { _, err := st.AddDomain(ctx, domain); return err })
	must(t, func() error { _, err := st.AddAddress(ctx, in.user); return err })
	must(t, func() error { return st.SetPassword(ctx, in.user, in.password) })
	must(t, func() error {
		_, err := st.AddCertificate(ctx, in.user, in.userID.Cert, nil, in.userID.Key)
		return err
	})
	must(t, func() error { _, err := st.AddAnchor(ctx, domain, in.ca.Cert, store.DirectionBoth); return err })
	return in
}

func must(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

// trust makes in trust other's CA both ways.
func (in *instance) trust(t *testing.T, other *instance) {
	t.Helper()
	must(t, func() error {
		_, err := in.st.AddAnchor(context.Background(), in.domain, other.ca.Cert, store.DirectionBoth)
		return err
	})
}

// start runs the instance's gateway until the test ends.
func (in *instance) start(t *testing.T, resolver string, routes map[string]string, tweak func(*config.Config)) {
	t.Helper()
	in.runStoppable(t, resolver, routes, tweak)
}

// runStoppable starts the instance's gateway and returns a stop that ends it
// (and waits) before the test does, if called, so that the same data
// directory can be served again.
func (in *instance) runStoppable(t *testing.T, resolver string, routes map[string]string, tweak func(*config.Config)) (stop func()) {
	t.Helper()
	cfg := config.Default()
	cfg.Data = in.dir
	cfg.Listen = config.Listen{SMTP: "127.0.0.1:0", Submission: "127.0.0.1:0", IMAP: "127.0.0.1:0", Admin: "127.0.0.1:0"}
	cfg.DNS.Resolver = resolver
	cfg.Outbound.Routes = config.Routes(routes)
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out testbuf.Buffer
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t, in.domain}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() { done <- Run(ctx, cfg, logger, &out) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: %v", in.domain, err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("%s did not stop", in.domain)
			}
		})
	}
	t.Cleanup(stop)
	re := regexp.MustCompile(`(?m)^  (\w+) \(.*\): (?:https?://)?([0-9.:]+)/?$`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if o := out.String(); strings.Contains(o, "hisp ready") {
			in.addrs = map[string]string{}
			for _, m := range re.FindAllStringSubmatch(o, -1) {
				in.addrs[m[1]] = m[2]
			}
			return stop
		}
		select {
		case err := <-done:
			t.Fatalf("%s ended: %v\n%s", in.domain, err, out.String())
		default:
		}
	}
	t.Fatalf("%s did not start:\n%s", in.domain, out.String())
	return stop
}

// inbox returns the bodies of the messages in a mailbox of addr.
func (in *instance) mailbox(t *testing.T, addr, name string) [][]byte {
	t.Helper()
	ctx := context.Background()
	acct, err := in.st.MailAccount(ctx, addr)
	if err != nil {
		return nil
	}
	mb, err := in.st.Mailbox(ctx, acct.ID, name)
	if err != nil {
		return nil
	}
	uids, err := in.st.MessageUIDs(ctx, acct.ID, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, u := range uids {
		b, err := in.st.MessageBody(ctx, acct.ID, mb.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// waitMailbox waits until a mailbox holds n messages.
func (in *instance) waitMailbox(t *testing.T, addr, name string, n int) [][]byte {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := in.mailbox(t, addr, name); len(m) >= n {
			return m
		}
	}
	t.Fatalf("%s %s: fewer than %d messages after a minute", addr, name, n)
	return nil
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s: %s", w.name, strings.TrimSpace(string(p)))
	return len(p), nil
}

// publishBoth serves the local certificates of several instances from one
// DNS server, as the Internet's DNS would, and returns its address.
func publishBoth(t *testing.T, ins ...*instance) string {
	t.Helper()
	var src []certs.CertSource
	for _, in := range ins {
		src = append(src, storeCerts{in.st})
	}
	return publish(t, src...)
}

// tap is an SMTP relay that keeps a copy of every message and passes it
// on to next: what leaves one HISP for another.
type tap struct {
	next string
	mu   sync.Mutex
	msgs [][]byte
	down bool // refuse connections' transactions with 421 while set
}

func (tp *tap) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.down {
		return nil, &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "down for the test"}
	}
	return &tapSession{tp: tp}, nil
}

func (tp *tap) messages() [][]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([][]byte(nil), tp.msgs...)
}

type tapSession struct {
	tp   *tap
	from string
	to   []string
}

func (s *tapSession) Mail(from string, _ *gosmtp.MailOptions) error { s.from = from; return nil }
func (s *tapSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *tapSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := forward(s.tp.next, s.from, s.to, b); err != nil {
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 4, 0}, Message: "tap: " + err.Error()}
	}
	s.tp.mu.Lock()
	s.tp.msgs = append(s.tp.msgs, b)
	s.tp.mu.Unlock()
	return nil
}
func (s *tapSession) Reset()        { s.from, s.to = "", nil }
func (s *tapSession) Logout() error { return nil }

// forward passes a message on over STARTTLS, not verifying the next
// hop's self-signed certificate.
func forward(addr, from string, to []string, msg []byte) error {
	c, err := gosmtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer c.Close()
	return c.SendMail(from, to, bytes.NewReader(msg))
}

func startTap(t *testing.T, next string) (*tap, string) {
	t.Helper()
	tp := &tap{next: next}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gosmtp.NewServer(tp)
	srv.Domain = "tap.localhost"
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return tp, l.Addr().String()
}

// submitPython submits a message as a mail client would: Python's smtplib
// with STARTTLS and AUTH. It returns smtplib's error text, "" on success.
func submitPython(t *testing.T, addr, user, password, from string, to []string, msg []byte) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	msgFile := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(msgFile, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(%q, %s, timeout=60)
s.starttls(context=ctx)
s.login(%q, %q)
try:
    s.sendmail(%q, %s, open(%q, "rb").read())
except smtplib.SMTPException as e:
    print("REFUSED", e)
    sys.exit(0)
s.quit()
print("OK")
`, host, port, user, password, from, pyList(to), msgFile)
	out, err := exec.Command("python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, out)
	}
	if strings.HasPrefix(strings.TrimSpace(string(out)), "OK") {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func pyList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// dischargeSummary is a message with the synthetic C-CDA attached.
func dischargeSummary(t *testing.T, from, to, id string) []byte {
	t.Helper()
	ccda, err := os.ReadFile(filepath.Join("testdata", "ccda.xml"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Discharge summary\r\nDate: %s\r\nMessage-ID: <%s>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"+
		"Discharge summary attached.\r\n--b1\r\nContent-Type: application/xml; name=\"ccda.xml\"\r\nContent-Disposition: attachment; filename=\"ccda.xml\"\r\n\r\n%s\r\n--b1--\r\n",
		from, to, time.Now().Format(time.RFC1123Z), id, bytes.ReplaceAll(ccda, []byte("\n"), []byte("\r\n"))))
}
