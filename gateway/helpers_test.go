package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testnet"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/store"
)

// addUser adds a second address with a password and an address-bound
// certificate from the instance's CA.
func (in *instance) addUser(t *testing.T, local string) (string, *testpki.Identity) {
	t.Helper()
	ctx := context.Background()
	addr := local + "@" + in.domain
	id := testpki.Issue(t, in.ca, testpki.Options{Email: []string{addr}})
	must(t, func() error { _, err := in.st.AddAddress(ctx, addr); return err })
	must(t, func() error { return in.st.SetPassword(ctx, addr, in.password) })
	must(t, func() error { _, err := in.st.AddCertificate(ctx, addr, id.Cert, nil, id.Key); return err })
	return addr, id
}

// publish serves the certificates of several sources from one DNS server
// and returns its address.
func publish(t *testing.T, src ...certs.CertSource) string {
	t.Helper()
	pc, l := testnet.ListenDNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		certs.NewPublisher(sources(src), certs.PublisherOptions{}).Serve(ctx, pc, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String()
}

type sources []certs.CertSource

func (m sources) Domains(ctx context.Context) ([]string, error) {
	var out []string
	for _, s := range m {
		d, err := s.Domains(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	return out, nil
}

func (m sources) Certificates(ctx context.Context, name string) ([][]byte, error) {
	var out [][]byte
	for _, s := range m {
		c, err := s.Certificates(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, c...)
	}
	return out, nil
}

// everyCert publishes every certificate of a store's addresses, expired
// ones included, as a careless HISP would: what a sender must check.
type everyCert struct{ st *store.Store }

func (e everyCert) Domains(ctx context.Context) ([]string, error) {
	return storeCerts(e).Domains(ctx)
}

func (e everyCert) Certificates(ctx context.Context, name string) ([][]byte, error) {
	ds, err := e.Domains(ctx)
	if err != nil {
		return nil, err
	}
	owner := certs.OwnerOfName(name, ds)
	if !strings.Contains(owner, "@") {
		return nil, nil // address-bound certificates only
	}
	list, err := e.st.Certificates(ctx, store.CertFilter{Owner: owner})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, c := range list {
		out = append(out, c.DER)
	}
	return out, nil
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after a minute, still not: %s", what)
}

// queued returns every message in an instance's queue, finished ones
// included.
func (in *instance) queued(t *testing.T) []store.QueuedMessage {
	t.Helper()
	q, err := in.st.QueueList(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// audited waits for an audit record that match accepts and returns it.
func (in *instance) audited(t *testing.T, what string, match func(store.Event) bool) store.Event {
	t.Helper()
	var found store.Event
	waitFor(t, in.domain+" audit record: "+what, func() bool {
		evs, err := in.st.AuditEvents(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// dsns parses the DSNs among messages; other messages fail the test.
func dsns(t *testing.T, msgs [][]byte) []*mdn.ParsedDSN {
	t.Helper()
	var out []*mdn.ParsedDSN
	for _, m := range msgs {
		d, err := mdn.ParseDSN(m)
		if err != nil {
			t.Fatalf("not a DSN: %v\n%.1000s", err, m)
		}
		out = append(out, d)
	}
	return out
}

// plainMessage is a short text message.
func plainMessage(from, to, id, body string) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Test\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain\r\n\r\n%s\r\n", from, to, time.Now().Format(time.RFC1123Z), id, body))
}

// rawClient speaks SMTP line by line, for what well-behaved clients do
// not send.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

// dialRaw connects and reads the greeting; with tlsOn it says EHLO and
// STARTTLS (not verifying the server's self-signed certificate).
func dialRaw(t *testing.T, addr string, tlsOn bool) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c := &rawClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220, "")
	c.expect(250, "EHLO test.localhost")
	if tlsOn {
		c.expect(220, "STARTTLS")
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.SetDeadline(time.Now().Add(2 * time.Minute))
		c.conn, c.tp = tc, textproto.NewConn(tc)
		c.expect(250, "EHLO test.localhost")
	}
	return c
}

// cmd sends a command (none when line is "") and returns the reply's code
// and text (enhanced code first).
func (c *rawClient) cmd(line string) (int, string) {
	c.t.Helper()
	if line != "" {
		if err := c.tp.PrintfLine("%s", line); err != nil {
			c.t.Fatalf("send %q: %v", line, err)
		}
	}
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reply to %.60q: %v", line, err)
	}
	return code, msg
}

// expect sends a command and fails the test unless the reply has code.
func (c *rawClient) expect(code int, line string) string {
	c.t.Helper()
	got, msg := c.cmd(line)
	if got != code {
		c.t.Fatalf("%.60q: got %d %s, want %d", line, got, msg, code)
	}
	return msg
}

// login authenticates with AUTH PLAIN.
func (c *rawClient) login(user, password string) {
	c.t.Helper()
	c.expect(235, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)))
}

// data sends DATA and the message, dot-stuffed, and returns the final
// reply.
func (c *rawClient) data(msg []byte) (int, string) {
	c.t.Helper()
	c.expect(354, "DATA")
	w := c.tp.DotWriter()
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.Write(msg); err != nil {
		c.t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	return c.cmd("")
}

// replyIs reports whether an SMTP reply has the code and its text starts
// with the enhanced code prefix.
func replyIs(code int, msg string, wantCode int, enhanced string) bool {
	return code == wantCode && strings.HasPrefix(msg, enhanced)
}

// unavailableSMTP is an SMTP server that greets every client with 421 (a
// temporary failure) and hangs up, for the length of the test: mail routed
// there stays queued. A port merely closed could be taken by another test's
// server meanwhile.
func unavailableSMTP(t *testing.T) string {
	t.Helper()
	return loopbackServer(t, func(c net.Conn) {
		c.Write([]byte("421 4.3.2 not now\r\n"))
	})
}

// loopbackServer serves each connection to a loopback port with handle,
// which the connection is closed after, for the length of the test; it
// returns the address.
func loopbackServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}
