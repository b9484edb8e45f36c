// Package dnsclient asks one DNS server a question the way hisp's look-ups
// need it (certificate discovery, MX for delivery): with EDNS0, over UDP
// with one retry on a time-out, again over TCP when the UDP answer is
// truncated, checking that the answer is for the question, and against the
// system resolver of /etc/resolv.conf when no server is configured.
package dnsclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// EDNSSize is the UDP payload size announced with EDNS0.
const EDNSSize = 4096

// Client queries one DNS server. The zero value queries the system
// resolver with a 3 s time-out per exchange.
type Client struct {
	Server  string        // host:port; "" = first nameserver of /etc/resolv.conf
	Timeout time.Duration // per exchange; 0 = 3 s
	// TCP asks over TCP only, as a check that a server answers there
	// (CD-04, CD-10); false asks over UDP first.
	TCP bool
}

// ServerAddr returns the server queried.
func (c Client) ServerAddr() (string, error) {
	if c.Server != "" {
		return c.Server, nil
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("no DNS resolver: %w", err)
	}
	if len(cc.Servers) == 0 {
		return "", errors.New("no DNS resolver: no nameserver in /etc/resolv.conf")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// Query asks for the records of qtype at name. NXDOMAIN is an answer;
// SERVFAIL, REFUSED and the like are errors. It returns the answer and
// the server that gave it.
func (c Client) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	server, err := c.ServerAddr()
	if err != nil {
		return nil, "", err
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(EDNSSize, false)
	r, err := c.exchange(ctx, server, m)
	if err != nil {
		return nil, server, fmt.Errorf("dns %s %s: %w", dns.TypeToString[qtype], name, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, server, fmt.Errorf("dns %s %s: server %s answered %s", dns.TypeToString[qtype], name, server, dns.RcodeToString[r.Rcode])
	}
	return r, server, nil
}

// exchange sends m over UDP, retrying once on a time-out, and again over
// TCP when the UDP answer is truncated; over TCP only when c.TCP is set.
func (c Client) exchange(ctx context.Context, server string, m *dns.Msg) (*dns.Msg, error) {
	if c.TCP {
		return c.exchangeNet(ctx, "tcp", server, m)
	}
	var (
		r   *dns.Msg
		err error
	)
	for attempt := 0; attempt < 2; attempt++ {
		r, err = c.exchangeNet(ctx, "udp", server, m)
		var ne net.Error
		if err == nil || ctx.Err() != nil || !errors.As(err, &ne) || !ne.Timeout() {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if r.Truncated {
		r, err = c.exchangeNet(ctx, "tcp", server, m)
		if err != nil {
			return nil, fmt.Errorf("over tcp after truncated udp answer: %w", err)
		}
	}
	return r, nil
}

func (c Client) exchangeNet(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	dc := &dns.Client{Net: network, Timeout: timeout, UDPSize: EDNSSize}
	co, err := dc.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	m.Id = dns.Id()
	r, _, err := dc.ExchangeWithConnContext(ctx, m, co)
	if cerr := ctx.Err(); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, err
	}
	q := m.Question[0]
	if len(r.Question) != 1 || !SameName(r.Question[0].Name, q.Name) || r.Question[0].Qtype != q.Qtype {
		return nil, fmt.Errorf("answer from %s does not match the question", server)
	}
	return r, nil
}

// SameName reports whether two names in presentation format are the same
// DNS name, comparing their wire form case-insensitively (so that escaped
// and plain spellings of one name agree).
func SameName(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	var ba, bb [256]byte
	na, erra := dns.PackDomainName(dns.Fqdn(a), ba[:], 0, nil, false)
	nb, errb := dns.PackDomainName(dns.Fqdn(b), bb[:], 0, nil, false)
	return erra == nil && errb == nil && bytes.EqualFold(ba[:na], bb[:nb])
}
