package imap

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/store"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// Test accounts.
const (
	alice   = "alice@clinic.example"
	alicePW = "alice's password"
	bob     = "bob@clinic.example"
	bobPW   = "bob's password"
)

// testEnv is a store with two clinicians and a server listening on
// 127.0.0.1.
type testEnv struct {
	t     testing.TB
	ctx   context.Context
	store *store.Store
	srv   *Server
	addr  string // STARTTLS listener
	tls   *tls.Config

	mu     sync.Mutex
	sleeps []time.Duration // login delays asked for
}

type envOptions struct {
	loopback   bool
	isLoopback func(net.Addr) bool
	sleep      func(ctx context.Context, d time.Duration)
	// realTime keeps the limiter's clock and sleeps real.
	realTime bool
}

func newTestEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, t.TempDir())
	tcheck(t, err, "open store")
	_, err = st.AddDomain(ctx, "clinic.example")
	tcheck(t, err, "add domain")
	for _, u := range [][2]string{{alice, alicePW}, {bob, bobPW}} {
		_, err := st.AddAddress(ctx, u[0])
		tcheck(t, err, "add address")
		tcheck(t, st.SetPassword(ctx, u[0], u[1]), "set password")
	}
	e := &testEnv{t: t, ctx: ctx, store: st, tls: testTLSConfig(t)}
	e.srv, err = New(Options{
		Store:     st,
		TLSConfig: e.tls,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Loopback:  o.loopback,
		// A clock that stands still: the sleeps are recorded, not slept,
		// and the login turns come out exact.
		Logins: loginlimit.New(func() time.Time { return time.Unix(1e9, 0) }),
	})
	tcheck(t, err, "new server")
	if o.realTime {
		e.srv.logins = loginlimit.New(nil)
		o.sleep = func(ctx context.Context, d time.Duration) { loginlimit.Sleep(ctx, d) }
	}
	e.srv.sleep = func(ctx context.Context, d time.Duration) {
		e.mu.Lock()
		e.sleeps = append(e.sleeps, d)
		e.mu.Unlock()
		if o.sleep != nil {
			o.sleep(ctx, d)
		}
	}
	if o.isLoopback != nil {
		e.srv.isLoopback = o.isLoopback
	}
	e.srv.debugLog = func(format string, args ...any) {
		if msg := fmt.Sprintf(format, args...); strings.Contains(msg, "panic") {
			t.Errorf("server: %s", msg)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	e.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		st.Close()
	})
	return e
}

func (e *testEnv) port() string {
	_, p, _ := net.SplitHostPort(e.addr)
	return p
}

func (e *testEnv) recordedSleeps() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Duration(nil), e.sleeps...)
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// testTLSConfig makes a self-signed certificate for 127.0.0.1.
func testTLSConfig(t testing.TB) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "key")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "imap test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	tcheck(t, err, "certificate")
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// directMessage is a Direct message as the inbound path files it: a text
// part and a C-CDA attachment.
func directMessage(t testing.TB, subject string) ([]byte, []byte) {
	ccda, err := os.ReadFile("testdata/ccda.xml")
	tcheck(t, err, "read C-CDA")
	enc := base64.StdEncoding.EncodeToString(ccda)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	msg := "From: dr.jones@hospital.example\r\n" +
		"To: alice@clinic.example\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: Tue, 07 May 2024 10:00:00 +0000\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@hospital.example>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n" +
		"\r\n" +
		"--b1\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Discharge summary attached.\r\n" +
		"--b1\r\n" +
		"Content-Type: application/xml; name=\"ccda.xml\"\r\n" +
		"Content-Disposition: attachment; filename=\"ccda.xml\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		b.String() +
		"--b1--\r\n"
	return []byte(msg), ccda
}

// rawConn is a line-level IMAP client for tests that need exact commands.
type rawConn struct {
	t   testing.TB
	c   net.Conn
	r   *bufio.Reader
	tag int
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	return dialRawFrom(t, "", addr)
}

// dialRawFrom is dialRaw from a local address ("": any), such as another
// loopback address (127.0.0.2) standing for another client IP.
func dialRawFrom(t testing.TB, local, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	tcheck(t, err, "dial")
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	if g := rc.readResponse(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	return rc
}

var literalRE = regexp.MustCompile(`\{(\d+)\+?\}$`)

// readResponse reads one response line with its literals.
func (rc *rawConn) readResponse() string {
	rc.t.Helper()
	var b strings.Builder
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("read: %v (after %q)", err, b.String()+line)
		}
		line = strings.TrimRight(line, "\r\n")
		b.WriteString(line)
		m := literalRE.FindStringSubmatch(line)
		if m == nil {
			return b.String()
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			rc.t.Fatalf("read literal: %v", err)
		}
		b.WriteString("\r\n")
		b.Write(buf)
	}
}

// cmd sends a command and returns the untagged responses and the tagged
// status line (without the tag).
func (rc *rawConn) cmd(format string, args ...any) ([]string, string) {
	rc.t.Helper()
	rc.tag++
	tag := fmt.Sprintf("t%d", rc.tag)
	if _, err := fmt.Fprintf(rc.c, tag+" "+format+"\r\n", args...); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
	var untagged []string
	for {
		l := rc.readResponse()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimPrefix(l, tag+" ")
		}
		untagged = append(untagged, l)
	}
}

// ok runs a command that must succeed.
func (rc *rawConn) ok(format string, args ...any) []string {
	rc.t.Helper()
	u, status := rc.cmd(format, args...)
	if !strings.HasPrefix(status, "OK") {
		rc.t.Fatalf("%s: %s (untagged %q)", fmt.Sprintf(format, args...), status, u)
	}
	return u
}

// no runs a command that must fail with NO (or BAD) and returns the status.
func (rc *rawConn) no(format string, args ...any) string {
	rc.t.Helper()
	u, status := rc.cmd(format, args...)
	if strings.HasPrefix(status, "OK") {
		rc.t.Fatalf("%s succeeded (untagged %q)", fmt.Sprintf(format, args...), u)
	}
	return status
}

func (rc *rawConn) startTLS(cfg *tls.Config) {
	rc.t.Helper()
	rc.ok("STARTTLS")
	tc := tls.Client(rc.c, cfg)
	tcheck(rc.t, tc.Handshake(), "TLS handshake")
	rc.c = tc
	rc.r = bufio.NewReader(tc)
}

func (rc *rawConn) login(user, pass string) {
	rc.t.Helper()
	rc.ok("LOGIN %s %s", quote(user), quote(pass))
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// loggedIn dials the STARTTLS listener and logs in.
func (e *testEnv) loggedIn(user, pass string) *rawConn {
	e.t.Helper()
	rc := dialRaw(e.t, e.addr)
	rc.startTLS(&tls.Config{InsecureSkipVerify: true})
	rc.login(user, pass)
	return rc
}

func contains(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
