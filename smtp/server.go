package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/lograte"
	"github.com/hisp-project/hisp/metrics"
)

// Defaults of Config.
const (
	DefaultMaxMessageBytes = 64 << 20
	DefaultMaxRecipients   = 100
	DefaultMaxHeaderLines  = 1000
	DefaultMaxHeaderBytes  = 1 << 20
	DefaultTimeout         = 5 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultMaxAuthFailures = 5
)

// Config is what the backbone and submission servers share. Zero values
// take the defaults.
type Config struct {
	Hostname  string      // greeting name; "localhost" if empty
	TLSConfig *tls.Config // for STARTTLS; nil: STARTTLS not offered

	MaxMessageBytes int64 // DefaultMaxMessageBytes; announced in EHLO SIZE
	MaxRecipients   int   // DefaultMaxRecipients per transaction
	MaxHeaderLines  int   // DefaultMaxHeaderLines
	MaxHeaderBytes  int   // DefaultMaxHeaderBytes

	ReadTimeout  time.Duration // wait for a command; DefaultTimeout
	WriteTimeout time.Duration // write of a reply; DefaultTimeout
	DataTimeout  time.Duration // inside DATA, wait for each next 4 KB (or the end); DefaultTimeout
	// ShutdownTimeout bounds how long Serve, once its context ends, waits
	// for transactions in flight before it cuts them off.
	ShutdownTimeout time.Duration

	Logger *slog.Logger // slog.Default() if nil
	Audit  Auditor      // optional: an audit record for each refusal

	// Transactions, when set, counts transactions by listener
	// ("backbone", "submission") and outcome, in that label order:
	// "accepted" (DATA answered 2xx), "refused" (MAIL or DATA refused: a
	// limit, a rule or the handler's reply) or "failed" (nothing queued
	// for want of hisp or the client: the handler's error, a client gone
	// or stalled in DATA).
	Transactions *metrics.Counter
	// Refusals, when set, counts refused commands by listener and command
	// ("auth", "mail", "rcpt", "data"), in that label order.
	Refusals *metrics.Counter
}

// BackboneConfig configures the server where other HISPs deliver.
type BackboneConfig struct {
	Config
	Recipients RecipientChecker // required
	Handler    InboundHandler   // required
}

// SubmissionConfig configures the server for hisp's users.
type SubmissionConfig struct {
	Config
	Auth    Authenticator   // required
	Handler OutboundHandler // required
	// InsecureAuth reports whether AUTH is allowed without TLS on a
	// connection to the given local address. nil: only when it is a
	// loopback address, whose traffic never leaves the machine.
	InsecureAuth func(local net.Addr) bool
	// MaxAuthFailures per connection, after which AUTH is refused;
	// DefaultMaxAuthFailures.
	MaxAuthFailures int
	// Logins slows down password guessing across connections: after
	// failures of a login from a client IP, its attempts take turns spaced
	// by the earned delay before the password is checked, and a failed one
	// is answered after its own delay (per login name and client IP).
	// Share one with IMAP. nil: a limiter of the server's own.
	Logins *loginlimit.Limiter
	// LoginSleep waits out those delays; nil: a timer that ends early when
	// the server shuts down (tests shorten it).
	LoginSleep func(ctx context.Context, d time.Duration)
}

// Server is a backbone or submission SMTP server. Serve may be called for
// several listeners; Shutdown (or the end of Serve's context) stops them all.
type Server struct {
	kind       string // "backbone" or "submission"
	cfg        Config
	backbone   BackboneConfig
	submission SubmissionConfig
	srv        *gosmtp.Server
	log        *slog.Logger

	// handlerCtx is given to handlers; it ends only when a shutdown gives
	// up waiting (or Close), so that a message in flight is finished.
	handlerCtx    context.Context
	cancelHandler context.CancelFunc
	// stopping ends when a shutdown begins: waits that are no transaction
	// (a login's turn) end with it.
	stopping     context.Context
	stopStopping context.CancelFunc

	mu       sync.Mutex
	conns    map[*trackedConn]struct{}
	draining bool
	connWG   sync.WaitGroup

	shutdownOnce sync.Once
	shutdownDone chan struct{}
	shutdownErr  error
}

func (c *Config) setDefaults() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxHeaderLines <= 0 {
		c.MaxHeaderLines = DefaultMaxHeaderLines
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultTimeout
	}
	if c.DataTimeout <= 0 {
		c.DataTimeout = DefaultTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// NewBackbone returns the server other HISPs deliver to: no AUTH, RCPT only
// for recipients cfg.Recipients accepts, messages to cfg.Handler.
func NewBackbone(cfg BackboneConfig) (*Server, error) {
	if cfg.Recipients == nil || cfg.Handler == nil {
		return nil, errors.New("smtp backbone: Recipients and Handler are required")
	}
	cfg.setDefaults()
	s := newServer("backbone", cfg.Config)
	s.backbone = cfg
	return s, nil
}

// NewSubmission returns the server for hisp's users: STARTTLS, AUTH PLAIN
// and LOGIN against cfg.Auth, messages of logged-in users to cfg.Handler.
func NewSubmission(cfg SubmissionConfig) (*Server, error) {
	if cfg.Auth == nil || cfg.Handler == nil {
		return nil, errors.New("smtp submission: Auth and Handler are required")
	}
	cfg.setDefaults()
	if cfg.InsecureAuth == nil {
		cfg.InsecureAuth = isLoopback
	}
	if cfg.MaxAuthFailures <= 0 {
		cfg.MaxAuthFailures = DefaultMaxAuthFailures
	}
	if cfg.Logins == nil {
		cfg.Logins = loginlimit.New(nil)
	}
	if cfg.LoginSleep == nil {
		cfg.LoginSleep = func(ctx context.Context, d time.Duration) { loginlimit.Sleep(ctx, d) }
	}
	s := newServer("submission", cfg.Config)
	s.submission = cfg
	// go-smtp's own rule is all-or-nothing per server; the session decides
	// per connection (TLS or loopback) instead.
	s.srv.AllowInsecureAuth = true
	return s, nil
}

func newServer(kind string, cfg Config) *Server {
	s := &Server{
		kind:         kind,
		cfg:          cfg,
		log:          cfg.Logger.With(slog.String("listener", kind)),
		conns:        map[*trackedConn]struct{}{},
		shutdownDone: make(chan struct{}),
	}
	s.handlerCtx, s.cancelHandler = context.WithCancel(context.Background())
	s.stopping, s.stopStopping = context.WithCancel(context.Background())
	srv := gosmtp.NewServer(gosmtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLSConfig
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = 0 // the session enforces cfg.MaxRecipients, so that a refusal is audited
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.ErrorLog = newErrorLog(s.log)
	s.srv = srv
	return s
}

// Serve accepts connections on l until ctx ends or Shutdown is called. When
// ctx ends it shuts the server down gracefully: it stops accepting, closes
// idle connections, lets transactions in flight finish for up to
// Config.ShutdownTimeout, and returns when the connections are gone.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		l.Close()
		return gosmtp.ErrServerClosed
	}
	s.log.Info("smtp server listening", slog.String("addr", l.Addr().String()))
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		s.Shutdown(sctx)
	})
	defer stop()
	err := s.srv.Serve(&trackingListener{Listener: l, s: s})
	if ctx.Err() != nil {
		<-s.shutdownDone
		return nil
	}
	if err != nil {
		return fmt.Errorf("smtp %s server on %s: %w", s.kind, l.Addr(), err)
	}
	return nil
}

// Shutdown stops the server gracefully: listeners close, idle connections
// close, and each connection in a mail transaction is closed after the
// reply that ends it. When ctx ends first, the remaining connections are
// cut and handlers' contexts cancelled. It returns when every connection is
// gone (with ctx's error if it had to cut).
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		defer close(s.shutdownDone)
		s.stopStopping()
		s.mu.Lock()
		s.draining = true
		var idle []*trackedConn
		for c := range s.conns {
			if !c.busy {
				idle = append(idle, c)
			}
		}
		s.mu.Unlock()
		for _, c := range idle {
			c.Conn.Close()
		}
		s.log.Info("smtp server shutting down", slog.Int("idle_closed", len(idle)))
		done := make(chan struct{})
		go func() {
			s.srv.Shutdown(context.Background()) // closes the listeners, waits for connections
			s.connWG.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.shutdownErr = ctx.Err()
			s.log.Warn("smtp server shutdown timed out, closing connections in flight")
			s.forceClose()
			// Connections end as soon as their handler returns; a handler
			// that ignores its context is not waited for long.
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				s.log.Error("smtp server shutdown: a handler ignores its context, not waiting for it")
			}
		}
		s.cancelHandler()
	})
	<-s.shutdownDone
	return s.shutdownErr
}

// Close stops the server at once, cutting transactions in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func (s *Server) forceClose() {
	s.cancelHandler()
	s.mu.Lock()
	var all []*trackedConn
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.Conn.Close()
	}
}

// trackingListener records the connections it accepts, so that shutdown
// can tell idle ones from those in a transaction.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.mu.Lock()
	l.s.conns[tc] = struct{}{}
	l.s.connWG.Add(1)
	l.s.mu.Unlock()
	return tc, nil
}

// trackedConn is an accepted connection with the state shutdown needs.
// Fields after Conn are guarded by s.mu.
type trackedConn struct {
	net.Conn
	s *Server

	busy         bool // in a mail transaction (MAIL until its end)
	closed       bool
	authFailures int
}

// NetConn returns the accepted connection.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	first := !c.closed
	c.closed = true
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	if first {
		defer c.s.connWG.Done()
	}
	return c.Conn.Close()
}

// setBusy marks the start or end of a mail transaction. At the end during a
// shutdown, the connection is closed (the reply has been written).
func (c *trackedConn) setBusy(busy bool) {
	c.s.mu.Lock()
	c.busy = busy
	closeNow := !busy && c.s.draining
	c.s.mu.Unlock()
	if closeNow {
		c.Conn.Close()
	}
}

func (c *trackedConn) draining() bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.draining
}

// tracked finds the trackedConn under a go-smtp connection (through TLS).
func tracked(c net.Conn) *trackedConn {
	for {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// isLoopback reports whether an address is a loopback IP.
func isLoopback(a net.Addr) bool {
	var ip net.IP
	switch v := a.(type) {
	case *net.TCPAddr:
		ip = v.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return false
		}
		ip = net.ParseIP(host)
	}
	return ip != nil && ip.IsLoopback()
}

// errorLog sends go-smtp's internal errors (a line per failed connection
// or accept) to slog, at most a few per interval: a flood of connections
// that fail must not flood the log.
type errorLog struct {
	log   *slog.Logger
	limit *lograte.Limiter
}

func newErrorLog(log *slog.Logger) errorLog {
	return errorLog{log: log, limit: &lograte.Limiter{Every: time.Minute, Burst: 20}}
}

func (e errorLog) Printf(format string, v ...any) { e.warn(fmt.Sprintf(format, v...)) }

func (e errorLog) Println(v ...any) { e.warn(fmt.Sprint(v...)) }

func (e errorLog) warn(msg string) {
	ok, suppressed := e.limit.Allow(time.Now())
	if !ok {
		return
	}
	attrs := []any{slog.String("error", msg)}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed_before", suppressed))
	}
	e.log.Warn("smtp connection", attrs...)
}
