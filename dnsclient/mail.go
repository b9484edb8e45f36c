package dnsclient

import (
	"cmp"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// The look-ups of mail delivery, one home for what a sending HISP (the
// deliverer) and the self-check of what partners see (conformance) read
// from DNS.

// MXRecords returns the MX records of an answer by preference, records of
// equal preference in the answer's order.
func MXRecords(resp *dns.Msg) []*dns.MX {
	var mxs []*dns.MX
	for _, rr := range resp.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx)
		}
	}
	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return cmp.Compare(a.Preference, b.Preference) })
	return mxs
}

// MXHosts returns the mail hosts of MX records in their order: lower case,
// without the final dot, each once, the null target left out. None for a
// domain that publishes no MX record (its implicit MX is the domain itself,
// RFC 5321 section 5.1) or only a null MX (NullMX).
func MXHosts(mxs []*dns.MX) []string {
	var hosts []string
	for _, mx := range mxs {
		if h := strings.ToLower(strings.TrimSuffix(mx.Mx, ".")); h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// NullMX reports whether MX records say that the domain accepts no mail
// (RFC 7505): there are some, and none names a host.
func NullMX(mxs []*dns.MX) bool {
	return len(mxs) > 0 && len(MXHosts(mxs)) == 0
}

// Addrs is what the A and AAAA look-ups of a host found: its IPv4 then
// IPv6 addresses (an IP literal is its own), whether both look-ups
// answered that the name does not exist, and the look-ups that failed.
type Addrs struct {
	IPs      []net.IP
	NXDomain bool
	Err      error // the failed look-ups, joined; nil when both answered
}

// LookupAddrs asks for a host's A and AAAA records, both at once (the
// caller's deadline bounds each, not their sum: a server that never
// answers one still gives the other).
func (c Client) LookupAddrs(ctx context.Context, host string) Addrs {
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		return Addrs{IPs: []net.IP{ip}}
	}
	if c.Server == "" { // read /etc/resolv.conf once for both
		server, err := c.ServerAddr()
		if err != nil {
			return Addrs{Err: err}
		}
		c.Server = server
	}
	type answer struct {
		resp *dns.Msg
		err  error
	}
	var answers [2]answer
	var wg sync.WaitGroup
	for i, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _, err := c.Query(ctx, host, qt)
			answers[i] = answer{resp, err}
		}()
	}
	wg.Wait()
	var a Addrs
	var errs []error
	nx := 0
	for _, an := range answers {
		if an.err != nil {
			errs = append(errs, an.err)
			continue
		}
		if an.resp.Rcode == dns.RcodeNameError {
			nx++
		}
		for _, rr := range an.resp.Answer {
			switch v := rr.(type) {
			case *dns.A:
				a.IPs = append(a.IPs, v.A)
			case *dns.AAAA:
				a.IPs = append(a.IPs, v.AAAA)
			}
		}
	}
	a.NXDomain, a.Err = nx == 2, errors.Join(errs...)
	return a
}
