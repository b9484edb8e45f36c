package smtp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"

	"github.com/hisp-project/hisp/dnsclient"
	"github.com/miekg/dns"
)

// resolver does the look-ups of delivery (MX, A, AAAA) against one DNS
// server: the configured host:port, or the first name server of
// /etc/resolv.conf.
type resolver struct {
	c dnsclient.Client // its Timeout bounds each look-up too
}

// dnsError is a failed look-up; permanent when the name does not exist.
type dnsError struct {
	name      string
	permanent bool
	err       error
}

func (e *dnsError) Error() string { return e.err.Error() }
func (e *dnsError) Unwrap() error { return e.err }

// query asks for the records of qtype at name. NXDOMAIN is an answer;
// SERVFAIL, REFUSED and the like are errors. A truncated UDP answer is asked
// again over TCP.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.c.Timeout)
	defer cancel()
	resp, _, err := r.c.Query(ctx, name, qtype)
	return resp, err
}

// errNullMX is returned by lookupMX for a domain that publishes a null MX
// (RFC 7505): it accepts no mail.
var errNullMX = errors.New("domain accepts no mail (null MX, RFC 7505)")

// lookupMX returns the mail hosts of a domain in order of preference (hosts
// of equal preference shuffled). With no MX record the domain itself is the
// host, the implicit MX of RFC 5321 §5.1. A domain that does not exist, or
// publishes a null MX, is a permanent failure.
func (r *resolver) lookupMX(ctx context.Context, domain string) ([]string, error) {
	resp, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, &dnsError{name: domain, err: err}
	}
	if resp.Rcode == dns.RcodeNameError {
		return nil, &dnsError{name: domain, permanent: true, err: fmt.Errorf("domain %s does not exist", domain)}
	}
	// Hosts of equal preference are tried in a random order, spreading
	// the load among them (MXRecords sorts stably).
	rand.Shuffle(len(resp.Answer), func(i, j int) { resp.Answer[i], resp.Answer[j] = resp.Answer[j], resp.Answer[i] })
	mxs := dnsclient.MXRecords(resp)
	if len(mxs) == 0 {
		return []string{domain}, nil
	}
	if dnsclient.NullMX(mxs) {
		return nil, &dnsError{name: domain, permanent: true, err: fmt.Errorf("%s: %w", domain, errNullMX)}
	}
	return dnsclient.MXHosts(mxs), nil
}

// lookupIP returns the IPv4 then IPv6 addresses of a host (an IP literal is
// its own address). The error is permanent when DNS answered that the host
// has no address (rather than failing to answer).
func (r *resolver) lookupIP(ctx context.Context, host string) ([]net.IP, error) {
	ctx, cancel := context.WithTimeout(ctx, r.c.Timeout)
	defer cancel()
	a := r.c.LookupAddrs(ctx, host)
	switch {
	case len(a.IPs) > 0:
		return a.IPs, nil
	case a.Err != nil:
		return nil, &dnsError{name: host, err: a.Err}
	case a.NXDomain:
		return nil, &dnsError{name: host, permanent: true, err: fmt.Errorf("host %s does not exist", host)}
	}
	return nil, &dnsError{name: host, permanent: true, err: fmt.Errorf("host %s has no address", host)}
}
