// Package imap serves the mailboxes of local Direct addresses to ordinary
// mail clients over IMAP: IMAP4rev1, and IMAP4rev2 with the extensions that
// github.com/emersion/go-imap/v2's imapserver offers (NAMESPACE, UIDPLUS,
// MOVE, ESEARCH, SEARCHRES, LIST-EXTENDED, LIST-STATUS, STATUS=SIZE,
// BINARY, CHILDREN, SPECIAL-USE, LITERAL+, IDLE), over the mail storage of
// package store.
//
// Clients log in with LOGIN or AUTHENTICATE PLAIN as a local address, with
// the same password as for submission (store.CheckPassword); there is no
// other kind of IMAP login, so admin accounts cannot read mail. Logins need
// TLS (STARTTLS, or a listener served with ServeTLS), except on a listener
// bound to a loopback address when Options.Loopback is set. Failed logins
// are answered after a delay that doubles with each recent failure of the
// same address or from the same client IP; successful logins never wait.
//
// A session reaches only the mailboxes of its own mail account: every
// store call names the account, and mailboxes are found by name within it.
//
// Sessions of this server that have a mailbox selected share one
// imapserver.MailboxTracker per mailbox, so they agree on message sequence
// numbers. The server learns of changes made by its own sessions at once,
// of mail filed through Server.Deliver at once, and of changes made any
// other way (store.Store.Deliver, another process) by polling the store's
// mail modification sequence every Options.PollInterval.
package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/lograte"
)

// Defaults of Options.
const (
	DefaultMaxMessageSize = 64 << 20
	DefaultPollInterval   = 500 * time.Millisecond
)

// Options configure a Server.
type Options struct {
	// Store holds the accounts and mailboxes (a *store.Store). Required.
	Store Store
	// TLSConfig is used for STARTTLS and for ServeTLS. Without it, clients
	// can only log in on loopback listeners with Loopback set.
	TLSConfig *tls.Config
	// Logger receives connection and login events; nil: slog.Default().
	Logger *slog.Logger
	// Loopback allows LOGIN and AUTHENTICATE without TLS on a listener
	// bound to a loopback address (127.0.0.0/8, ::1). Other listeners
	// always need TLS first.
	Loopback bool
	// MaxMessageSize limits APPEND, in bytes; 0: DefaultMaxMessageSize.
	MaxMessageSize int64
	// PollInterval is how often the server looks for mail changes made
	// outside it; 0: DefaultPollInterval.
	PollInterval time.Duration
	// Changes, if set, receives a value when mail changed elsewhere (on
	// another node: store.MailNotifications); the server then looks at
	// once instead of at its next poll.
	Changes <-chan struct{}
	// Logins slows down password guessing; share one with SMTP submission
	// so that guesses at an address count together. nil: one of its own.
	Logins *loginlimit.Limiter
}

// Server is an IMAP server over the store. One Server may serve several
// listeners; its sessions share mailbox state.
type Server struct {
	store          Store
	tlsConfig      *tls.Config
	log            *slog.Logger
	loopback       bool
	maxMessageSize int64
	pollInterval   time.Duration
	logins         *loginlimit.Limiter

	// Replaced in tests.
	sleep         func(ctx context.Context, d time.Duration)
	checkPassword func(ctx context.Context, username, password string) (string, error)
	isLoopback    func(net.Addr) bool
	debugLog      func(format string, args ...any) // imapserver's own errors

	kick chan struct{} // wakes the poller
	// changes wakes the poller for changes made elsewhere (Options.Changes).
	changes <-chan struct{}
	// connLogLimit bounds imapserver's per-connection log lines.
	connLogLimit *lograte.Limiter

	mu         sync.Mutex
	mailboxes  map[int64]*mailboxState // selected by at least one session
	stopPoller context.CancelFunc      // set while mailboxes is not empty
}

// New returns a server; it serves nothing until Serve or ServeTLS.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("imap: no store")
	}
	if opts.Logins == nil {
		opts.Logins = loginlimit.New(nil)
	}
	s := &Server{
		store:          opts.Store,
		tlsConfig:      opts.TLSConfig,
		log:            opts.Logger,
		loopback:       opts.Loopback,
		maxMessageSize: opts.MaxMessageSize,
		pollInterval:   opts.PollInterval,
		logins:         opts.Logins,
		sleep:          func(ctx context.Context, d time.Duration) { loginlimit.Sleep(ctx, d) },
		checkPassword:  opts.Store.CheckPassword,
		isLoopback:     isLoopbackAddr,
		kick:           make(chan struct{}, 1),
		changes:        opts.Changes,
		connLogLimit:   &lograte.Limiter{Every: time.Minute, Burst: 20},
		mailboxes:      make(map[int64]*mailboxState),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("service", "imap")
	if s.maxMessageSize <= 0 {
		s.maxMessageSize = DefaultMaxMessageSize
	}
	if s.maxMessageSize > 1<<31 {
		s.maxMessageSize = 1 << 31 // APPENDLIMIT is a 32-bit number
	}
	if s.pollInterval <= 0 {
		s.pollInterval = DefaultPollInterval
	}
	return s, nil
}

// capabilities are what the sessions implement.
var capabilities = imap.CapSet{
	imap.CapIMAP4rev1:        {},
	imap.CapIMAP4rev2:        {},
	imap.CapNamespace:        {},
	imap.CapUIDPlus:          {},
	imap.CapESearch:          {},
	imap.CapSearchRes:        {},
	imap.CapListExtended:     {},
	imap.CapListStatus:       {},
	imap.CapMove:             {},
	imap.CapStatusSize:       {},
	imap.CapBinary:           {},
	imap.CapChildren:         {},
	imap.CapSpecialUse:       {},
	imap.CapCreateSpecialUse: {},
	imap.CapLiteralPlus:      {},
}

// Serve accepts IMAP connections on ln, offering STARTTLS when the server
// has a TLS configuration, until ctx ends; then it closes the listener and
// every connection it accepted, waits for their sessions to end, and
// returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, ln)
}

// ServeTLS is Serve for implicit TLS (port 993): every connection starts
// with a TLS handshake.
func (s *Server) ServeTLS(ctx context.Context, ln net.Listener) error {
	if s.tlsConfig == nil {
		return errors.New("imap: ServeTLS without a TLS configuration")
	}
	return s.serve(ctx, tls.NewListener(ln, s.tlsConfig))
}

func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	insecure := s.loopback && s.isLoopback(ln.Addr())
	var sessions sessionGroup
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			if !sessions.add() {
				return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
			}
			return s.newSession(ctx, c, sessions.done), nil, nil
		},
		Caps:         capabilities,
		Logger:       printfLogger{s},
		TLSConfig:    s.tlsConfig,
		InsecureAuth: insecure,
	})
	s.log.Info("imap listening", "addr", ln.Addr().String(), "plaintext_login", insecure)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			srv.Close()
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	// Close every connection, and wait for their sessions to end so that
	// none uses the store after Serve returns.
	srv.Close()
	sessions.closeAndWait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("imap: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// sessionGroup counts the sessions of a listener, so that serve can wait
// for them to end; after closeAndWait it takes no new ones.
type sessionGroup struct {
	mu     sync.Mutex
	n      int
	closed bool
	zero   chan struct{}
}

func (g *sessionGroup) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *sessionGroup) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.zero != nil {
		close(g.zero)
		g.zero = nil
	}
}

func (g *sessionGroup) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	if g.n == 0 {
		g.mu.Unlock()
		return
	}
	zero := make(chan struct{})
	g.zero = zero
	g.mu.Unlock()
	<-zero
}

// Deliver files a message like store.Store.Deliver, and tells the IDLE
// clients of this server about it at once. The gateway's inbound path may
// call this instead of the store's Deliver.
func (s *Server) Deliver(ctx context.Context, address, mailbox string, msg []byte, flags []string, date time.Time) (uint32, error) {
	uid, err := s.store.Deliver(ctx, address, mailbox, msg, flags, date)
	if err == nil {
		s.Notify()
	}
	return uid, err
}

// Notify makes the server look for changes in the store now rather than
// at its next poll: call it after changing mailboxes through the store.
func (s *Server) Notify() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// acquire returns the shared state of a mailbox, counting a user.
func (s *Server) acquire(account, id int64, uidValidity uint32) *mailboxState {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mailboxes[id]
	if m == nil {
		m = &mailboxState{srv: s, account: account, id: id, uidValidity: uidValidity}
		s.mailboxes[id] = m
		if s.stopPoller == nil {
			ctx, cancel := context.WithCancel(context.Background())
			s.stopPoller = cancel
			go s.poll(ctx)
		}
	}
	m.refs++
	return m
}

// release gives back a mailbox state taken with acquire.
func (s *Server) release(m *mailboxState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(s.mailboxes, m.id)
	if len(s.mailboxes) == 0 && s.stopPoller != nil {
		s.stopPoller()
		s.stopPoller = nil
	}
}

// selected returns the states of the mailboxes sessions have selected,
// all of them when ids is empty.
func (s *Server) selected(ids ...int64) []*mailboxState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*mailboxState
	if len(ids) == 0 {
		for _, m := range s.mailboxes {
			out = append(out, m)
		}
		return out
	}
	for _, id := range ids {
		if m := s.mailboxes[id]; m != nil {
			out = append(out, m)
		}
	}
	return out
}

// syncMailboxes brings the states of mailboxes up to date with the store,
// queueing updates for their sessions.
func (s *Server) syncMailboxes(ctx context.Context, ids ...int64) {
	for _, m := range s.selected(ids...) {
		if err := m.sync(ctx, nil, nil); err != nil {
			s.log.Error("imap: sync mailbox", "mailbox", m.id, "err", err)
		}
	}
}

// poll runs while sessions have mailboxes selected: it syncs them when the
// store's mail modification sequence moves, checked every poll interval
// and when kicked.
func (s *Server) poll(ctx context.Context) {
	t := time.NewTicker(s.pollInterval)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		case <-s.changes:
		}
		v, err := s.store.MailChanged(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("imap: poll mail changes", "err", err)
			}
			continue
		}
		if v == last {
			continue
		}
		last = v
		s.syncMailboxes(ctx)
	}
}

// isLoopbackAddr reports whether a listener address is a loopback IP.
func isLoopbackAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	default:
		return false
	}
}

// printfLogger passes imapserver's messages to the server's log: panics
// always, the per-connection ones (a failed read, greeting or accept) at
// most a few per interval, so that a flood of failing connections does not
// flood the log.
type printfLogger struct{ s *Server }

func (l printfLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if l.s.debugLog != nil {
		l.s.debugLog(format, args...)
	}
	if strings.Contains(msg, "panic") {
		l.s.log.Error("imap: " + strings.TrimSpace(msg))
		return
	}
	ok, suppressed := l.s.connLogLimit.Allow(time.Now())
	if !ok {
		return
	}
	attrs := []any{}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed_before", suppressed)
	}
	l.s.log.Info("imap: "+strings.TrimSpace(msg), attrs...)
}
