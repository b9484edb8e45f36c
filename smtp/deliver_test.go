package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/store"
)

// sink is a go-smtp server standing for a remote HISP.
type sink struct {
	mu        sync.Mutex
	conns     int
	datas     int // DATA commands answered
	msgs      []sinkMsg
	rcptReply func(rcpt string) error // nil: accept
	dataReply func(n int) error       // n counts DATA commands from 1; nil: accept
	hold      chan struct{}           // when set, DATA waits for it to close
	srv       *gosmtp.Server
	addr      string
}

type sinkMsg struct {
	helo  string
	tls   bool
	from  string
	rcpts []string
	data  string
}

type countingListener struct {
	net.Listener
	s *sink
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.mu.Lock()
		l.s.conns++
		l.s.mu.Unlock()
	}
	return c, err
}

// startSink starts a sink on addr ("" for any loopback port).
func startSink(t testing.TB, addr string, tlsConfig *tls.Config) *sink {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	tcheck(t, err, "listen")
	s := &sink{addr: l.Addr().String()}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return &sinkSession{s: s, c: c}, nil
	}))
	srv.Domain = "sink.test"
	srv.TLSConfig = tlsConfig
	log, _ := testLogger(t)
	srv.ErrorLog = newErrorLog(log)
	s.srv = srv
	go srv.Serve(countingListener{Listener: l, s: s})
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *sink) snapshot() (conns, datas int, msgs []sinkMsg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, s.datas, append([]sinkMsg(nil), s.msgs...)
}

type sinkSession struct {
	s     *sink
	c     *gosmtp.Conn
	from  string
	rcpts []string
}

func (ss *sinkSession) Reset()        { ss.from, ss.rcpts = "", nil }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, opts *gosmtp.MailOptions) error {
	ss.from = from
	return nil
}

func (ss *sinkSession) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	ss.s.mu.Lock()
	f := ss.s.rcptReply
	ss.s.mu.Unlock()
	if f != nil {
		if err := f(to); err != nil {
			return err
		}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.datas++
	n, f, hold := ss.s.datas, ss.s.dataReply, ss.s.hold
	ss.s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if f != nil {
		if err := f(n); err != nil {
			return err
		}
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, sinkMsg{helo: ss.c.Hostname(), tls: isTLS, from: ss.from, rcpts: ss.rcpts, data: string(b)})
	ss.s.mu.Unlock()
	return nil
}

// fakeClock is the queue clock of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Millisecond)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeBouncer records DSN requests.
type fakeBouncer struct {
	mu    sync.Mutex
	calls []bounceCall
}

type bounceCall struct {
	msg   store.QueuedMessage
	rcpts []RecipientOutcome
	final bool
}

func (b *fakeBouncer) Bounce(ctx context.Context, msg store.QueuedMessage, rcpts []RecipientOutcome, final bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, bounceCall{msg, rcpts, final})
	return nil
}

func (b *fakeBouncer) all() []bounceCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]bounceCall(nil), b.calls...)
}

func queueStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	tcheck(t, err, "open store")
	t.Cleanup(func() { st.Close() })
	return st
}

// enqueue queues a message from alice@a.example; recipients in a.example
// are local.
func enqueue(t testing.TB, st *store.Store, clock *fakeClock, from string, rcpts ...string) int64 {
	t.Helper()
	m := store.QueuedMessage{
		MessageID: fmt.Sprintf("<%d@a.example>", time.Now().UnixNano()),
		MailFrom:  from,
		User:      from,
		Origin:    "test",
		Data:      []byte("From: " + from + "\r\nSubject: test\r\n\r\nbody\r\n.leading dot\r\n"),
	}
	if clock != nil {
		m.Created = clock.Now()
	}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.QueuedRecipient{Address: r, Local: strings.HasSuffix(r, "@a.example")})
	}
	id, err := st.Enqueue(context.Background(), m)
	tcheck(t, err, "enqueue")
	return id
}

// runDeliverer starts a deliverer until the test ends.
func runDeliverer(t testing.TB, cfg DelivererConfig) (*Deliverer, *testbuf.Buffer) {
	t.Helper()
	log, buf := testLogger(t)
	cfg.Logger = log
	if cfg.Hostname == "" {
		cfg.Hostname = "hisp.a.example"
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 10 * time.Second
	}
	d, stop := startDeliverer(t, cfg)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("deliverer log:\n%s", buf.String())
		}
	})
	return d, buf
}

// startDeliverer makes a deliverer of cfg as it is and runs it; stop ends
// the run and checks that it ended well (once, however often called).
func startDeliverer(t testing.TB, cfg DelivererConfig) (*Deliverer, func()) {
	t.Helper()
	d, err := NewDeliverer(cfg)
	tcheck(t, err, "new deliverer")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	return d, func() {
		once.Do(func() {
			cancel()
			tcheck(t, <-done, "run")
		})
	}
}

// recipient returns a queued recipient's row.
func recipient(t testing.TB, st *store.Store, id int64, addr string) store.QueuedRecipient {
	t.Helper()
	m, err := st.QueueMessage(context.Background(), id)
	tcheck(t, err, "read queued message")
	for _, r := range m.Recipients {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no recipient %s in %+v", addr, m.Recipients)
	return store.QueuedRecipient{}
}

func waitState(t testing.TB, st *store.Store, id int64, addr string, cond func(r store.QueuedRecipient) bool) store.QueuedRecipient {
	t.Helper()
	var r store.QueuedRecipient
	waitFor(t, fmt.Sprintf("recipient %s of message %d", addr, id), func() bool {
		r = recipient(t, st, id, addr)
		return cond(r)
	})
	return r
}

func inState(s store.RecipientState) func(store.QueuedRecipient) bool {
	return func(r store.QueuedRecipient) bool { return r.State == s }
}

func TestDeliverRouteConnectionReuse(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	var ids []int64
	for range 3 {
		ids = append(ids, enqueue(t, st, nil, "alice@a.example", "carol@route.test", "dave@route.test"))
	}
	runDeliverer(t, DelivererConfig{Queue: st, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	for _, id := range ids {
		for _, a := range []string{"carol@route.test", "dave@route.test"} {
			r := waitState(t, st, id, a, inState(store.StateDelivered))
			if r.RemoteMTA != "127.0.0.1" || !strings.HasPrefix(r.Status, "250 2.0.0") || r.Attempts != 1 {
				t.Fatalf("delivered recipient: %+v", r)
			}
		}
	}
	conns, _, msgs := sk.snapshot()
	if conns != 1 {
		t.Fatalf("%d connections for 3 messages, want 1", conns)
	}
	if len(msgs) != 3 {
		t.Fatalf("sink got %d messages", len(msgs))
	}
	for _, m := range msgs {
		if m.helo != "hisp.a.example" || m.from != "alice@a.example" || strings.Join(m.rcpts, ",") != "carol@route.test,dave@route.test" ||
			!strings.HasSuffix(m.data, "body\r\n.leading dot\r\n") || m.tls {
			t.Fatalf("sink message %+v", m)
		}
	}
	// A message whose recipients are all delivered keeps no data.
	m, err := st.QueueMessage(context.Background(), ids[0])
	tcheck(t, err, "read message")
	if len(m.Data) != 0 {
		t.Fatalf("delivered message keeps %d bytes", len(m.Data))
	}
}

func TestDeliverTemporaryThenDelivered(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	sk.dataReply = func(n int) error {
		if n == 1 {
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}
	clock := newClock()
	id := enqueue(t, st, clock, "alice@a.example", "carol@route.test")
	start := clock.Now()
	d, _ := runDeliverer(t, DelivererConfig{Queue: st, Now: clock.Now, Backoff: store.Backoff{First: 10 * time.Minute, Attempts: 5},
		Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	r := waitState(t, st, id, "carol@route.test", func(r store.QueuedRecipient) bool { return r.State == store.StateQueued && r.Attempts == 1 })
	if r.LastCode != 451 || r.LastEnhanced != "4.3.0" || r.LastError != "try again later" || !r.NextAttempt.Equal(start.Add(10*time.Minute)) {
		t.Fatalf("after 451: %+v", r)
	}
	clock.Advance(11 * time.Minute)
	d.Wake()
	r = waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
	if r.Attempts != 2 {
		t.Fatalf("delivered after %d attempts", r.Attempts)
	}
	if _, datas, msgs := sk.snapshot(); datas != 2 || len(msgs) != 1 {
		t.Fatalf("sink: %d DATA, %d accepted", datas, len(msgs))
	}
}

func TestDeliverPermanentFailureBounces(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	sk.rcptReply = func(rcpt string) error {
		if strings.HasPrefix(rcpt, "nobody") {
			return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	b := &fakeBouncer{}
	id := enqueue(t, st, nil, "alice@a.example", "carol@route.test", "nobody@route.test")
	nullID := enqueue(t, st, nil, "", "nobody@route.test")
	runDeliverer(t, DelivererConfig{Queue: st, Bouncer: b, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
	r := waitState(t, st, id, "nobody@route.test", inState(store.StateBounced))
	if r.Status != "550 5.1.1 no such user" || r.RemoteMTA != "127.0.0.1" {
		t.Fatalf("bounced recipient: %+v", r)
	}
	waitState(t, st, nullID, "nobody@route.test", inState(store.StateBounced))
	calls := b.all()
	if len(calls) != 1 {
		t.Fatalf("%d bounces, want 1 (none for the null sender): %+v", len(calls), calls)
	}
	c := calls[0]
	if !c.final || c.msg.ID != id || len(c.msg.Data) == 0 || len(c.rcpts) != 1 {
		t.Fatalf("bounce %+v", c)
	}
	o := c.rcpts[0]
	if o.Recipient != "nobody@route.test" || o.Reply != (Reply{Code: 550, Enhanced: "5.1.1", Message: "no such user"}) ||
		o.RemoteMTA != "127.0.0.1" || o.Attempts != 1 || o.LastAttempt.IsZero() {
		t.Fatalf("outcome %+v", o)
	}
	if _, _, msgs := sk.snapshot(); len(msgs) != 1 || strings.Join(msgs[0].rcpts, ",") != "carol@route.test" {
		t.Fatalf("sink got %+v", msgs)
	}
}

func TestDeliverDownThenUp(t *testing.T) {
	st := queueStore(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	clock := newClock()
	id := enqueue(t, st, clock, "alice@a.example", "carol@route.test")
	d, _ := runDeliverer(t, DelivererConfig{Queue: st, Now: clock.Now, Backoff: store.Backoff{First: time.Minute, Attempts: 5},
		Routes: map[string]Route{"route.test": {Addr: addr}}})
	r := waitState(t, st, id, "carol@route.test", func(r store.QueuedRecipient) bool { return r.State == store.StateQueued && r.Attempts == 1 })
	if !strings.Contains(r.LastError, "cannot connect") || r.LastCode != 451 {
		t.Fatalf("while down: %+v", r)
	}
	sk := startSink(t, addr, nil)
	clock.Advance(2 * time.Minute)
	d.Wake()
	waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
	if _, _, msgs := sk.snapshot(); len(msgs) != 1 {
		t.Fatalf("sink got %d messages", len(msgs))
	}
}

// startDNS serves a small zone over UDP on loopback.
func startDNS(t testing.TB, records map[string][]string, nx map[string]bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	tcheck(t, err, "listen udp")
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		if nx[name] {
			m.Rcode = dns.RcodeNameError
		}
		for _, s := range records[name] {
			rr, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDeliverMX(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	_, port, _ := net.SplitHostPort(sk.addr)
	var p int
	fmt.Sscan(port, &p)
	resolver := startDNS(t, map[string][]string{
		"mx.test.":      {"mx.test. 300 IN MX 20 backup.mx.test.", "mx.test. 300 IN MX 10 mail.mx.test."},
		"mail.mx.test.": {"mail.mx.test. 300 IN A 127.0.0.1"},
		// backup.mx.test has no address: never needed, preference 20.
		"nomx.test.":   {"nomx.test. 300 IN A 127.0.0.1"},
		"nullmx.test.": {"nullmx.test. 300 IN MX 0 ."},
		"noaddr.test.": {"noaddr.test. 300 IN TXT \"no mail here\""},
	}, map[string]bool{"nx.test.": true})
	b := &fakeBouncer{}
	ids := map[string]int64{}
	for _, a := range []string{"carol@mx.test", "dave@nomx.test", "erin@nullmx.test", "frank@nx.test", "gina@noaddr.test"} {
		ids[a] = enqueue(t, st, nil, "alice@a.example", a)
	}
	runDeliverer(t, DelivererConfig{Queue: st, Bouncer: b, Resolver: resolver, Port: p})
	for _, a := range []string{"carol@mx.test", "dave@nomx.test"} {
		r := waitState(t, st, ids[a], a, inState(store.StateDelivered))
		if r.RemoteMTA == "" {
			t.Fatalf("%s: %+v", a, r)
		}
	}
	for a, want := range map[string]string{
		"erin@nullmx.test": "556 5.1.10",
		"frank@nx.test":    "550 5.1.2",
		"gina@noaddr.test": "550 5.1.2",
	} {
		r := waitState(t, st, ids[a], a, inState(store.StateBounced))
		if !strings.HasPrefix(r.Status, want) {
			t.Fatalf("%s: status %q, want %s", a, r.Status, want)
		}
	}
	if conns, _, msgs := sk.snapshot(); conns != 2 || len(msgs) != 2 {
		t.Fatalf("sink: %d connections, %d messages", conns, len(msgs))
	}
	waitFor(t, "three bounces", func() bool { return len(b.all()) == 3 })
}

// TestDeliverSTARTTLS: the three TLS policies against real SMTP servers on
// loopback, one offering STARTTLS with a self-signed certificate, one
// offering none.
func TestDeliverSTARTTLS(t *testing.T) {
	st := queueStore(t)
	tlsConfig, pool := testTLS(t)
	withTLS := startSink(t, "", tlsConfig)
	plain := startSink(t, "", nil)
	clock := newClock()
	idOpp := enqueue(t, st, clock, "alice@a.example", "carol@opportunistic.test")
	idOppPlain := enqueue(t, st, clock, "alice@a.example", "carol@plain.test")
	idReq := enqueue(t, st, clock, "alice@a.example", "carol@required.test")
	idVerify := enqueue(t, st, clock, "alice@a.example", "carol@verify.test")
	idNoTLS := enqueue(t, st, clock, "alice@a.example", "carol@notls.test")
	idVerifyPlain := enqueue(t, st, clock, "alice@a.example", "carol@verifyplain.test")
	runDeliverer(t, DelivererConfig{Queue: st, Now: clock.Now, TLSConfig: &tls.Config{RootCAs: pool},
		Routes: map[string]Route{
			"opportunistic.test": {Addr: withTLS.addr},
			"plain.test":         {Addr: plain.addr},
			"required.test":      {Addr: withTLS.addr, TLS: TLSRequired},
			"verify.test":        {Addr: withTLS.addr, TLS: TLSVerify},
			"notls.test":         {Addr: plain.addr, TLS: TLSRequired},
			"verifyplain.test":   {Addr: plain.addr, TLS: TLSVerify},
		}})
	waitState(t, st, idOpp, "carol@opportunistic.test", inState(store.StateDelivered))
	waitState(t, st, idOppPlain, "carol@plain.test", inState(store.StateDelivered))
	waitState(t, st, idReq, "carol@required.test", inState(store.StateDelivered))
	waitState(t, st, idVerify, "carol@verify.test", inState(store.StateDelivered))
	for _, c := range []struct {
		id   int64
		rcpt string
	}{{idNoTLS, "carol@notls.test"}, {idVerifyPlain, "carol@verifyplain.test"}} {
		// A temporary failure with a reason: retried, not bounced.
		r := waitState(t, st, c.id, c.rcpt, func(r store.QueuedRecipient) bool { return r.State == store.StateQueued && r.Attempts == 1 })
		if r.LastEnhanced != "4.7.10" || !strings.Contains(r.LastError, "does not offer STARTTLS") || r.LastCode != 451 {
			t.Fatalf("%s: required TLS not offered: %+v", c.rcpt, r)
		}
	}
	_, _, msgs := withTLS.snapshot()
	if len(msgs) != 3 {
		t.Fatalf("TLS sink got %d messages, want 3", len(msgs))
	}
	for _, m := range msgs {
		if !m.tls {
			t.Fatalf("message without TLS: %+v", m)
		}
	}
	if _, _, msgs := plain.snapshot(); len(msgs) != 1 {
		t.Fatalf("plain sink got %d messages, want the opportunistic one", len(msgs))
	}
}

// TestDeliverTLSPolicySelfSigned: a partner with a self-signed certificate
// (not in the roots) gets mail under "required" (encryption only) and
// under "opportunistic", but not under "verify": a temporary failure
// naming the certificate problem, with no fall-back to plain text. The
// MX-wide policy (DelivererConfig.TLS) applies to MX deliveries.
func TestDeliverTLSPolicySelfSigned(t *testing.T) {
	st := queueStore(t)
	tlsConfig, _ := testTLS(t)
	sk := startSink(t, "", tlsConfig)
	_, p, _ := net.SplitHostPort(sk.addr)
	port, _ := strconv.Atoi(p)
	resolver := startDNS(t, map[string][]string{
		"mx.test.":           {"mx.test. 300 IN MX 10 localhost.mx.test."},
		"localhost.mx.test.": {"localhost.mx.test. 300 IN A 127.0.0.1"},
	}, nil)
	clock := newClock()
	idReq := enqueue(t, st, clock, "alice@a.example", "carol@required.test")
	idVerify := enqueue(t, st, clock, "alice@a.example", "carol@verify.test")
	idMX := enqueue(t, st, clock, "alice@a.example", "carol@mx.test")
	roots := x509.NewCertPool() // trusts nothing: the certificate is self-signed
	runDeliverer(t, DelivererConfig{Queue: st, Now: clock.Now, TLSConfig: &tls.Config{RootCAs: roots}, Resolver: resolver, Port: port,
		TLS: TLSVerify,
		Routes: map[string]Route{
			"required.test": {Addr: sk.addr, TLS: TLSRequired},
			"verify.test":   {Addr: sk.addr, TLS: TLSVerify},
		}})
	waitState(t, st, idReq, "carol@required.test", inState(store.StateDelivered))
	for _, c := range []struct {
		id   int64
		rcpt string
	}{{idVerify, "carol@verify.test"}, {idMX, "carol@mx.test"}} {
		r := waitState(t, st, c.id, c.rcpt, func(r store.QueuedRecipient) bool { return r.State == store.StateQueued && r.Attempts == 1 })
		if r.LastEnhanced != "4.7.0" || !strings.Contains(r.LastError, "certificate") {
			t.Fatalf("%s: unverifiable certificate under verify: %+v", c.rcpt, r)
		}
	}
	if _, _, msgs := sk.snapshot(); len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want the required one only", len(msgs))
	}
}

func TestParseTLSPolicy(t *testing.T) {
	for in, want := range map[string]TLSPolicy{"": TLSOpportunistic, "opportunistic": TLSOpportunistic, "required": TLSRequired, "Verify": TLSVerify} {
		if got, err := ParseTLSPolicy(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseTLSPolicy("always"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func TestDeliverLocal(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	b := &fakeBouncer{}
	var mu sync.Mutex
	var local []Envelope
	deliver := LocalFunc(func(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
		mu.Lock()
		defer mu.Unlock()
		local = append(local, env)
		if !strings.Contains(string(msg), "body\r\n") {
			return nil, errors.New("wrong message")
		}
		if env.Recipients[0] == "carol@a.example" {
			return &Reply{Code: 550, Enhanced: "5.7.1", Message: "signer not trusted by a.example"}, nil
		}
		return nil, nil
	})
	id := enqueue(t, st, nil, "alice@a.example", "bob@a.example", "carol@a.example", "dave@route.test")
	runDeliverer(t, DelivererConfig{Queue: st, Local: deliver, Bouncer: b, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	waitState(t, st, id, "bob@a.example", inState(store.StateDelivered))
	waitState(t, st, id, "dave@route.test", inState(store.StateDelivered))
	r := waitState(t, st, id, "carol@a.example", inState(store.StateBounced))
	if r.Status != "550 5.7.1 signer not trusted by a.example" || r.RemoteMTA != "" {
		t.Fatalf("local failure: %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(local) != 2 {
		t.Fatalf("local deliveries: %+v", local)
	}
	for _, env := range local {
		if len(env.Recipients) != 1 || env.MailFrom != "alice@a.example" || env.User != "alice@a.example" {
			t.Fatalf("local envelope %+v", env)
		}
	}
	if _, _, msgs := sk.snapshot(); len(msgs) != 1 || strings.Join(msgs[0].rcpts, ",") != "dave@route.test" {
		t.Fatalf("sink got %+v", msgs)
	}
	if calls := b.all(); len(calls) != 1 || len(calls[0].rcpts) != 1 || calls[0].rcpts[0].Recipient != "carol@a.example" {
		t.Fatalf("bounces %+v", calls)
	}
}

func TestDeliverDelayedNoticeOnceAndGiveUp(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	sk.dataReply = func(int) error {
		return &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	}
	clock := newClock()
	b := &fakeBouncer{}
	id := enqueue(t, st, clock, "alice@a.example", "carol@route.test")
	d, _ := runDeliverer(t, DelivererConfig{Queue: st, Now: clock.Now, Bouncer: b, DelayedAfter: time.Hour,
		Backoff: store.Backoff{First: 40 * time.Minute, Max: 40 * time.Minute, Attempts: 4},
		Routes:  map[string]Route{"route.test": {Addr: sk.addr}}})
	attempts := func(n int) {
		t.Helper()
		waitState(t, st, id, "carol@route.test", func(r store.QueuedRecipient) bool { return r.Attempts == n && r.State != store.StateDelivering })
	}
	attempts(1)
	for n := 2; n <= 4; n++ {
		clock.Advance(41 * time.Minute)
		d.Wake()
		attempts(n)
	}
	// Attempt 2 came 41 minutes in, attempt 3 at 82: the delayed notice
	// went out once, in between; attempt 4 was the last.
	r := waitState(t, st, id, "carol@route.test", inState(store.StateBounced))
	if !strings.HasPrefix(r.Status, "452 4.2.2 giving up after 4 attempts; last: mailbox full") {
		t.Fatalf("given up: %+v", r)
	}
	var delayed, failed []bounceCall
	for _, c := range b.all() {
		if c.final {
			failed = append(failed, c)
		} else {
			delayed = append(delayed, c)
		}
	}
	if len(delayed) != 1 || len(failed) != 1 {
		t.Fatalf("%d delayed and %d failure notices, want 1 each", len(delayed), len(failed))
	}
	if o := delayed[0].rcpts[0]; o.Reply.Code != 452 || o.RetryUntil.IsZero() || o.RetryUntil.Before(o.LastAttempt) {
		t.Fatalf("delayed outcome %+v", o)
	}
}

func TestDeliverShutdown(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	sk.hold = make(chan struct{})
	clock := newClock()
	id := enqueue(t, st, clock, "alice@a.example", "carol@route.test")
	log, _ := testLogger(t)
	_, stop := startDeliverer(t, DelivererConfig{Queue: st, Now: clock.Now, Logger: log, PollInterval: 20 * time.Millisecond,
		ShutdownGrace: 50 * time.Millisecond, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	// The remote holds the message at its final dot; stop the deliverer.
	waitFor(t, "DATA at the sink", func() bool { _, n, _ := sk.snapshot(); return n == 1 })
	stop()
	close(sk.hold)
	r := recipient(t, st, id, "carol@route.test")
	if r.State != store.StateQueued || r.Attempts != 1 || !strings.Contains(r.LastError, "connection to 127.0.0.1 failed") {
		t.Fatalf("after shutdown in flight: %+v", r)
	}
}

// relayBouncer is a Bouncer that is also a RelayRecorder; it notes the
// queue state of each recipient at the moment it hears of it.
type relayBouncer struct {
	fakeBouncer
	st      *store.Store
	mu      sync.Mutex
	relayed []RecipientOutcome
	states  []store.RecipientState
}

func (b *relayBouncer) Relayed(ctx context.Context, msg store.QueuedMessage, rcpts []RecipientOutcome) {
	for _, r := range rcpts {
		q, _ := b.st.QueueMessage(ctx, msg.ID)
		b.mu.Lock()
		b.relayed = append(b.relayed, r)
		for _, qr := range q.Recipients {
			if qr.Address == r.Recipient {
				b.states = append(b.states, qr.State)
			}
		}
		b.mu.Unlock()
	}
}

// TestDeliverRelayRecorder: a Bouncer that records relays hears of each
// recipient the next hop accepted, with its reply, at the 250 and before
// the queue records the delivery; not of refused ones.
func TestDeliverRelayRecorder(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	sk.rcptReply = func(rcpt string) error {
		if strings.HasPrefix(rcpt, "nobody") {
			return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	b := &relayBouncer{st: st}
	id := enqueue(t, st, nil, "alice@a.example", "carol@route.test", "nobody@route.test")
	runDeliverer(t, DelivererConfig{Queue: st, Bouncer: b, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
	waitState(t, st, id, "nobody@route.test", inState(store.StateBounced))
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.relayed) != 1 || b.relayed[0].Recipient != "carol@route.test" || b.relayed[0].Reply.Code != 250 || b.relayed[0].RemoteMTA != "127.0.0.1" {
		t.Fatalf("relayed %+v", b.relayed)
	}
	if len(b.states) != 1 || b.states[0] != store.StateDelivering {
		t.Fatalf("queue state when the relay was heard of: %v, want delivering (before the outcome is stored)", b.states)
	}
}

// renewCounter is a queue that tells of each renewal of the node's claims.
type renewCounter struct {
	Queue
	renewed chan struct{}
}

func (q *renewCounter) RenewClaims(ctx context.Context, now time.Time) (int64, error) {
	select {
	case q.renewed <- struct{}{}:
	default:
	}
	return q.Queue.RenewClaims(ctx, now)
}

// TestClaimsRenewedBetweenPolls: a node renews its claims every
// ClaimRenewal even when that is shorter than its poll interval and no work
// wakes it (a short [store] lease), so that another node does not take over
// attempts still in flight.
func TestClaimsRenewedBetweenPolls(t *testing.T) {
	q := &renewCounter{Queue: queueStore(t), renewed: make(chan struct{}, 1)}
	runDeliverer(t, DelivererConfig{Queue: q, PollInterval: time.Hour, ClaimRenewal: 10 * time.Millisecond})
	for i := range 3 {
		select {
		case <-q.renewed:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d renewals, then none for 30 s with ClaimRenewal 10ms and PollInterval 1h", i)
		}
	}
}

// readCounter is a store that counts the deliverer's reads of queued
// messages.
type readCounter struct {
	*store.Store
	mu    sync.Mutex
	reads int
}

func (c *readCounter) QueueMessageData(ctx context.Context, id int64) ([]byte, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Store.QueueMessageData(ctx, id)
}

// TestDeliverHandedOver: a message queued claimed and handed over with
// Take is delivered from memory (the store is not read back), its attempt
// counted once; the outcomes of several are recorded; once Run has stopped
// Reserve refuses and the message is left to the queue.
func TestDeliverHandedOver(t *testing.T) {
	st := queueStore(t)
	rc := &readCounter{Store: st}
	sk := startSink(t, "", nil)
	d, stop := startDeliverer(t, DelivererConfig{Queue: rc, Hostname: "hisp.a.example", PollInterval: time.Hour,
		Routes: map[string]Route{"route.test": {Addr: sk.addr}}, Logger: slog.New(slog.DiscardHandler)})
	q := store.NewQueue(st, store.QueueOptions{})
	defer q.Close()
	msg := store.QueuedMessage{MessageID: "<h@a.example>", MailFrom: "alice@a.example", Origin: "test",
		Data: []byte("Subject: handed\r\n\r\nover\r\n"), Recipients: []store.QueuedRecipient{{Address: "carol@route.test"}}}
	waitTakingWork(t, d)
	var ids []int64
	for range 3 {
		ids = append(ids, handOver(t, d, q, msg))
	}
	for _, id := range ids {
		r := waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
		if r.Attempts != 1 || !strings.HasPrefix(r.Status, "250") {
			t.Fatalf("delivered recipient: %+v", r)
		}
	}
	if _, _, msgs := sk.snapshot(); len(msgs) != 3 || !strings.HasSuffix(msgs[0].data, "over\r\n") {
		t.Fatalf("sink got %+v", msgs)
	}
	rc.mu.Lock()
	reads := rc.reads
	rc.mu.Unlock()
	if reads != 0 {
		t.Errorf("the store was read %d times for messages handed over", reads)
	}
	stop()
	if d.Reserve(1) {
		t.Error("a stopped deliverer took a reservation")
	}
}

// TestDeliverHandedOverKeepsConnection: a message handed over right after
// the previous one to the same destination was delivered goes over the
// same connection, which the worker keeps open for a while (connLinger)
// instead of paying a connection, STARTTLS and EHLO per message.
func TestDeliverHandedOverKeepsConnection(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	d, stop := startDeliverer(t, DelivererConfig{Queue: st, Hostname: "hisp.a.example", PollInterval: time.Hour,
		Routes: map[string]Route{"route.test": {Addr: sk.addr}}, Logger: slog.New(slog.DiscardHandler)})
	q := store.NewQueue(st, store.QueueOptions{})
	defer q.Close()
	msg := store.QueuedMessage{MessageID: "<k@a.example>", MailFrom: "alice@a.example", Origin: "test",
		Data: []byte("Subject: kept\r\n\r\nover\r\n"), Recipients: []store.QueuedRecipient{{Address: "carol@route.test"}}}
	waitTakingWork(t, d)
	for i := range 2 {
		id := handOver(t, d, q, msg)
		waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
		if conns, _, msgs := sk.snapshot(); conns != 1 || len(msgs) != i+1 {
			t.Fatalf("after message %d: %d connections, %d messages; want 1 connection", i+1, conns, len(msgs))
		}
	}
	stop()
}

// failingOutcomes is a queue whose first fails stores of outcomes fail, as
// a PostgreSQL deadlock or failover makes them.
type failingOutcomes struct {
	Queue
	fails, calls atomic.Int32
}

func (q *failingOutcomes) UpdateRecipients(ctx context.Context, now time.Time, updates []store.RecipientUpdate) error {
	q.calls.Add(1)
	if q.fails.Add(-1) >= 0 {
		return errors.New("deadlock detected")
	}
	return q.Queue.UpdateRecipients(ctx, now, updates)
}

// TestDeliverOutcomeStoredAfterFailures: an outcome whose first stores
// fail is stored on a later try: the recipient is delivered once and
// recorded so, not left delivering for a second delivery once its claim
// runs out.
func TestDeliverOutcomeStoredAfterFailures(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	id := enqueue(t, st, nil, "alice@a.example", "carol@route.test")
	q := &failingOutcomes{Queue: st}
	q.fails.Store(2)
	_, log := runDeliverer(t, DelivererConfig{Queue: q, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	r := waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
	if r.Attempts != 1 {
		t.Fatalf("delivered after %d attempts", r.Attempts)
	}
	if _, _, msgs := sk.snapshot(); len(msgs) != 1 {
		t.Fatalf("sink got %d messages", len(msgs))
	}
	if !strings.Contains(log.String(), "record delivery outcomes, trying again") {
		t.Errorf("no retry logged:\n%s", log.String())
	}
}

// TestDeliverOutcomeFailuresEndAtShutdown: outcomes the store keeps
// refusing are tried again only until the shutdown grace ends: a stop
// does not wait out the whole retry schedule.
func TestDeliverOutcomeFailuresEndAtShutdown(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	enqueue(t, st, nil, "alice@a.example", "carol@route.test")
	q := &failingOutcomes{Queue: st}
	q.fails.Store(1 << 20)
	log, buf := testLogger(t)
	_, stop := startDeliverer(t, DelivererConfig{Queue: q, Logger: log, Hostname: "hisp.a.example", PollInterval: 20 * time.Millisecond,
		ShutdownGrace: 100 * time.Millisecond, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	waitFor(t, "a failed store of the outcome", func() bool {
		return strings.Contains(buf.String(), "record delivery outcomes, trying again")
	})
	stop()
	if _, _, msgs := sk.snapshot(); len(msgs) != 1 {
		t.Fatalf("sink got %d messages", len(msgs))
	}
	// The 100 ms grace ends the schedule (0.1, 0.5, 2, 5 s) at its second
	// wait at the latest.
	if n := q.calls.Load(); n > 2 {
		t.Fatalf("the outcome was tried %d times: the retries outlived the shutdown grace", n)
	}
}

// waitTakingWork waits until d's Run takes messages handed over.
func waitTakingWork(t *testing.T, d *Deliverer) {
	t.Helper()
	waitFor(t, "Run taking work", func() bool {
		if !d.Reserve(1) {
			return false
		}
		d.Release(1)
		return true
	})
}

// handOver queues msg claimed for its first attempt and hands it to d in
// memory, as the gateway does with a submission; it returns its queue id.
func handOver(t *testing.T, d *Deliverer, q *store.Queue, msg store.QueuedMessage) int64 {
	t.Helper()
	size := int64(len(msg.Data))
	if !d.Reserve(size) {
		t.Fatal("no room for a message")
	}
	b := d.Backoff()
	res, err := q.EnqueueWith(context.Background(), msg, store.EnqueueExtras{Claim: &b})
	tcheck(t, err, "enqueue")
	d.Take(res.Claimed, size)
	return res.ID
}
