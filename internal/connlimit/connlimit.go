// Package connlimit bounds the connections a listener holds, in all and
// per client IP, so that a flood of connections (idle ones included) from
// one address or many cannot take every file descriptor and the memory of
// the process, and other clients keep being served.
//
// A connection over a limit is answered with the protocol's own "too busy"
// answer (SMTP 421, IMAP BYE, HTTP 503, LDAP Notice of Disconnection),
// written without waiting for the client, and closed. Refusals are counted and logged as a summary at most
// once per interval, never a line per connection. Running out of file
// descriptors in Accept is waited out and logged the same way.
package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/hisp-project/hisp/internal/clientip"
	"github.com/hisp-project/hisp/metrics"
)

// Reasons a connection is refused, as counted.
const (
	ReasonTotal = "total"  // the listener holds Options.Max connections
	ReasonPerIP = "per_ip" // the client's IP holds Options.PerIP
)

// Defaults of Options.
const (
	DefaultLogEvery = time.Minute
	// maxAnswering bounds the goroutines writing busy answers at once; a
	// connection over it is closed without an answer.
	maxAnswering = 64
	busyTimeout  = 2 * time.Second
)

// Options configure a Listener.
type Options struct {
	Name  string // the listener, in logs and metrics
	Max   int    // open connections in all; 0: no limit
	PerIP int    // open connections per client IP (IPv6: per /64); 0: no limit
	// Busy is written to a refused connection before it is closed; nil:
	// closed at once (TLS listeners, where plain text means nothing).
	Busy []byte
	// Refused counts refusals by listener and reason, in that label
	// order; nil: not counted.
	Refused  *metrics.Counter
	Logger   *slog.Logger  // nil: slog.Default()
	LogEvery time.Duration // DefaultLogEvery
}

// Listener is a net.Listener that refuses connections over its limits.
type Listener struct {
	net.Listener
	o         Options
	log       *slog.Logger
	answering chan struct{}
	now       func() time.Time

	mu      sync.Mutex
	open    int
	perIP   map[netip.Addr]int
	lastLog time.Time
	pending map[string]int // refusals not logged yet, by reason
	lastIP  netip.Addr     // the last refused client, for the summary
}

// New wraps l.
func New(l net.Listener, o Options) *Listener {
	if o.LogEvery <= 0 {
		o.LogEvery = DefaultLogEvery
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Listener{Listener: l, o: o, log: log.With(slog.String("listener", o.Name)),
		answering: make(chan struct{}, maxAnswering), now: time.Now,
		perIP: make(map[netip.Addr]int), pending: make(map[string]int)}
}

// Open returns how many connections the listener holds.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				l.note("accept_error", netip.Addr{})
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		reason := ""
		switch {
		case l.o.Max > 0 && l.open >= l.o.Max:
			reason = ReasonTotal
		case l.o.PerIP > 0 && ip.IsValid() && l.perIP[ip] >= l.o.PerIP:
			reason = ReasonPerIP
		default:
			l.open++
			if ip.IsValid() {
				l.perIP[ip]++
			}
		}
		l.mu.Unlock()
		if reason == "" {
			return &conn{Conn: c, l: l, ip: ip}, nil
		}
		l.o.Refused.Inc(l.o.Name, reason)
		l.note(reason, ip)
		l.refuse(c)
	}
}

// refuse answers a connection over a limit and closes it, without holding
// up Accept.
func (l *Listener) refuse(c net.Conn) {
	if l.o.Busy == nil {
		c.Close()
		return
	}
	select {
	case l.answering <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.answering }()
		c.SetWriteDeadline(time.Now().Add(busyTimeout))
		c.Write(l.o.Busy)
		c.Close()
	}()
}

// note counts a refusal or accept error for the log's summary and writes
// the summary when the interval has passed.
func (l *Listener) note(reason string, ip netip.Addr) {
	l.mu.Lock()
	l.pending[reason]++
	if ip.IsValid() {
		l.lastIP = ip
	}
	now := l.now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.o.LogEvery {
		l.mu.Unlock()
		return
	}
	l.lastLog = now
	attrs := []any{slog.Int("open", l.open), slog.Int("max", l.o.Max), slog.Int("max_per_ip", l.o.PerIP)}
	for r, n := range l.pending {
		attrs = append(attrs, slog.Int(r, n))
	}
	if l.lastIP.IsValid() {
		client := l.lastIP.String()
		if l.lastIP.Is6() {
			client += "/64"
		}
		attrs = append(attrs, slog.String("last_client", client))
	}
	clear(l.pending)
	l.mu.Unlock()
	l.log.Warn("connections refused over the listener's limits (a summary, at most one per interval)",
		append(attrs, slog.Duration("interval", l.o.LogEvery))...)
}

func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if !ip.IsValid() {
		return
	}
	if n := l.perIP[ip] - 1; n > 0 {
		l.perIP[ip] = n
	} else {
		delete(l.perIP, ip)
	}
}

// conn is an accepted connection; closing it frees its place.
type conn struct {
	net.Conn
	l    *Listener
	ip   netip.Addr
	once sync.Once
}

// NetConn returns the accepted connection.
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}

// remoteIP is the client a connection counts as (clientip).
func remoteIP(c net.Conn) netip.Addr {
	ip, _ := clientip.Of(c.RemoteAddr())
	return ip
}
