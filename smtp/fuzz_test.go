package smtp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fuzzSeeds are sessions that reach each state of the server: they are
// also in testdata/fuzz/FuzzSMTPSession.
var fuzzSeeds = []string{
	"EHLO mx.remote.example\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<bob@a.example>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n",
	"EHLO x\r\nMAIL FROM:<x@r.example>\r\nRCPT TO:<b@a.example>\r\nBDAT 10\r\n0123456789BDAT 5 LAST\r\nabcdeQUIT\r\n",
	"EHLO x\r\nMAIL FROM:<x@r.example>\r\nRCPT TO:<b@a.example>\r\nBDAT 0 LAST\r\nBDAT 99999999999\r\nBDAT 4294967295 LAST\r\n",
	"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
	"EHLO x\r\nAUTH PLAIN AGFsaWNlQGEuZXhhbXBsZQBwdw==\r\nAUTH LOGIN\r\n*\r\n",
	"HELO x\r\nMAIL FROM:<>\r\n" + strings.Repeat("RCPT TO:<b@a.example>\r\n", 15) + "DATA\r\nX: 1\r\n\r\n.\r\n",
	"EHLO x\r\nMAIL FROM:<x@r.example>\r\nRCPT TO:<b@a.example>\r\nDATA\r\n" + strings.Repeat("X-H: 1\r\n", 60) + "\r\nb\r\n.\r\n",
	"EHLO x\r\nMAIL FROM:<x@r.example> BODY=8BITMIME SIZE=12\r\nRCPT TO:<b@a.example>\r\nDATA\r\nSubject: lf\nbare\n\n.\n\r\n.\r\n",
	"EHLO x\r\nMAIL FROM:<jöhn@r.example>\r\nMAIL FROM:<x@r.example> SMTPUTF8\r\nMAIL FROM:<x@r.example> SIZE=999999999999\r\nRCPT TO:<jö@a.example>\r\n",
	"ehlo x\r\nnoop\r\nvrfy bob\r\nhelp\r\nrset\r\nmail from:<x@r.example>\r\nrcpt to:<@route,@r2:b@a.example>\r\nexpn list\r\nquit\r\n",
	"EHLO x\r\nMAIL FROM:<x@r.example>\r\nRCPT TO:<b@a.example>\r\nDATA\r\nSubject: cut\r\n\r\nno end",
	"EHLO " + strings.Repeat("x", 2100) + "\r\n",
	"EHLO x\r\nMAIL FROM:<x@r.example>\r\nRCPT TO:<b@elsewhere.example>\r\nRCPT TO:<REFUSE@a.example>\r\nDATA\r\n\r\n.\r\n",
	"\x00\xff\r\n\r\n\r\n.\r\nMAIL\r\nRCPT\r\nDATA\r\nBDAT\r\nAUTH\r\n",
}

// pipeListener hands net.Pipe server ends to the server.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// notifyConn reports when the server is done with a connection. It also
// makes the pipe behave like TCP after the client has closed its end: the
// server may still set deadlines and read what it has buffered (a pipe
// refuses SetReadDeadline once either end is closed; a socket only once
// its own end is).
type notifyConn struct {
	net.Conn
	once   sync.Once
	done   chan struct{}
	closed atomic.Bool // closed by the server
}

func (c *notifyConn) Close() error {
	c.closed.Store(true)
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}

func (c *notifyConn) deadline(err error) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	return nil
}

func (c *notifyConn) SetDeadline(t time.Time) error     { return c.deadline(c.Conn.SetDeadline(t)) }
func (c *notifyConn) SetReadDeadline(t time.Time) error { return c.deadline(c.Conn.SetReadDeadline(t)) }
func (c *notifyConn) SetWriteDeadline(t time.Time) error {
	return c.deadline(c.Conn.SetWriteDeadline(t))
}

// panicWatch is a slog handler that notices the panics go-smtp recovers
// and logs (through the server's logger), so that the fuzzer sees them.
type panicWatch struct {
	panics *atomic.Int64
	last   *atomic.Value // string
}

func (h panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (h panicWatch) Handle(_ context.Context, r slog.Record) error {
	text := r.Message
	r.Attrs(func(a slog.Attr) bool { text += " " + a.Value.String(); return true })
	// A known go-smtp v0.25.1 bug, harmless but logged: when the client
	// goes away right after a BDAT command, the goroutine that go-smtp
	// starts for the chunk calls Data on the session that closing the
	// connection has already set to nil; go-smtp recovers. Our own panics
	// have frames of this package.
	if strings.Contains(text, "handleBdat.func1()") && strings.Contains(text, "nil pointer dereference") &&
		!strings.Contains(text, "hisp-project/hisp/smtp.") {
		return nil
	}
	if strings.Contains(text, "panic") {
		h.panics.Add(1)
		h.last.Store(text)
	}
	return nil
}
func (h panicWatch) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicWatch) WithGroup(string) slog.Handler      { return h }

// FuzzSMTPSession writes random bytes as a client session to the backbone
// server over net.Pipe: the server must neither crash nor hang, and a
// refused or incomplete message must not reach the handler as accepted.
func FuzzSMTPSession(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	tlsConfig, _ := testTLS(f)
	var panics atomic.Int64
	var lastPanic atomic.Value
	var handled atomic.Int64
	s, err := NewBackbone(BackboneConfig{
		Config: Config{
			Hostname: "mx.a.example", TLSConfig: tlsConfig,
			MaxMessageBytes: 64 << 10, MaxRecipients: 10, MaxHeaderLines: 50, MaxHeaderBytes: 4 << 10,
			ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, DataTimeout: 2 * time.Second,
			Logger: slog.New(panicWatch{&panics, &lastPanic}),
		},
		Recipients: anyLocal{},
		Handler: InboundFunc(func(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
			handled.Add(1)
			if len(msg) == 0 || len(env.Recipients) == 0 || len(env.Recipients) > 10 {
				panic("handler called with an empty message or bad recipients")
			}
			for _, r := range env.Recipients {
				if strings.HasPrefix(r, "REFUSE") {
					return &Reply{Code: 550, Enhanced: "5.7.1", Message: "refused\r\nby the handler"}, nil
				}
			}
			if strings.Contains(string(msg), "ERR") {
				return nil, errors.New("handler error")
			}
			return nil, nil
		}),
	})
	if err != nil {
		f.Fatal(err)
	}
	l := &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	f.Cleanup(func() {
		cancel()
		<-served
	})

	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		nc := &notifyConn{Conn: server, done: make(chan struct{})}
		l.conns <- nc
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(10 * time.Second))
		client.Write(data)
		client.Close()
		select {
		case <-nc.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("session did not end")
		}
		if n := panics.Swap(0); n > 0 {
			t.Fatalf("%d panics recovered by go-smtp; last: %v", n, lastPanic.Load())
		}
	})
}
