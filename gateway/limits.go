package gateway

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"github.com/go-ldap/ldap/v3"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/connlimit"
	"github.com/hisp-project/hisp/metrics"
)

// The busy answers of connections over a listener's limits ([limits]).
var (
	smtpBusy = func(host string) []byte {
		return fmt.Appendf(nil, "421 4.7.0 %s Too many connections, try again later\r\n", host)
	}
	imapBusy  = []byte("* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
	adminBusy = []byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Type: text/plain\r\n" +
		"Content-Length: 33\r\nConnection: close\r\n\r\nToo many connections, try later.\n")
	// LDAP's is a Notice of Disconnection with resultCode busy.
	ldapBusy = certs.LDAPNoticeOfDisconnection(ldap.LDAPResultBusy, "Too many connections, try again later")
)

// listenerLimits holds the connection limits of the server's listeners
// and what /metrics reports of them.
type listenerLimits struct {
	max, perIP int
	refused    *metrics.Counter // hisp_connections_refused_total{listener,reason}
	log        *slog.Logger

	mu        sync.Mutex
	listeners map[string]*connlimit.Listener
}

// newListenerLimits sizes the limits for n listeners: each gets max
// connections unless the process's descriptor limit could not hold them
// all (with room left for the store, DNS look-ups and outbound delivery),
// in which case each gets its share, with a warning.
func newListenerLimits(maxConns, perIP, n int, refused *metrics.Counter, log *slog.Logger) *listenerLimits {
	if fds := openFileLimit(); fds > 0 && n > 0 {
		share := (fds * 4 / 5) / n
		if share < maxConns {
			log.Warn("[limits] connections lowered to fit the open file limit (raise it with ulimit -n or LimitNOFILE)",
				"configured", maxConns, "per_listener", share, "open_file_limit", fds, "listeners", n)
			maxConns = max(share, 1)
		}
	}
	return &listenerLimits{max: maxConns, perIP: min(perIP, maxConns), refused: refused, log: log,
		listeners: map[string]*connlimit.Listener{}}
}

// openFileLimit is the process's soft limit of open files (Go raises it to
// the hard limit at start), 0 if unknown.
func openFileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 0
	}
	return int(r.Cur)
}

// wrap puts l under the limits as the listener name, answering refused
// connections with busy (nil: closing them, as TLS listeners do).
func (ll *listenerLimits) wrap(name string, l net.Listener, busy []byte) net.Listener {
	cl := connlimit.New(l, connlimit.Options{Name: name, Max: ll.max, PerIP: ll.perIP, Busy: busy,
		Refused: ll.refused, Logger: ll.log})
	ll.mu.Lock()
	ll.listeners[name] = cl
	ll.mu.Unlock()
	return cl
}

// wrapTLS is wrap for an implicit-TLS listener: the limits apply before
// the handshake.
func (ll *listenerLimits) wrapTLS(name string, l net.Listener, config *tls.Config) net.Listener {
	return tls.NewListener(ll.wrap(name, l, nil), config)
}

// families are the gauges and counter of /metrics.
func (ll *listenerLimits) families() []metrics.Family {
	open := metrics.Family{Name: "hisp_connections_open", Type: metrics.TypeGauge, Labels: []string{"listener"},
		Help: "Open connections by listener."}
	limit := metrics.Family{Name: "hisp_connections_limit", Type: metrics.TypeGauge, Labels: []string{"listener"},
		Help: "The most connections a listener holds at once ([limits] connections, lowered to fit the open file limit)."}
	ll.mu.Lock()
	for name, l := range ll.listeners {
		open.Samples = append(open.Samples, metrics.Sample{Values: []string{name}, Value: float64(l.Open())})
		limit.Samples = append(limit.Samples, metrics.Sample{Values: []string{name}, Value: float64(ll.max)})
	}
	ll.mu.Unlock()
	return []metrics.Family{open, limit, ll.refused.Family()}
}

// countListeners counts the listeners a configuration opens.
func countListeners(l config.Listen) int {
	n := 0
	for _, a := range []string{l.SMTP, l.Submission, l.IMAP, l.IMAPS, l.DNS, l.Admin, l.AdminHTTPS} {
		if a != "" {
			n++
		}
	}
	// An LDAP connection takes three descriptors: the client's and both
	// ends of the relay to the library's own listener (certs.LDAPServer).
	if l.LDAP != "" {
		n += 3
	}
	return n
}
