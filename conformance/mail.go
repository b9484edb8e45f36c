package conformance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/dnsclient"
)

// checkMail checks that partners reach the domain's SMTP backbone: its MX
// hosts (or opts.Backbone) answer EHLO and offer STARTTLS.
func (r *run) checkMail(ctx context.Context) {
	var targets []string // host:port
	if r.opts.Backbone != "" {
		r.skip("mx", "not looked up: --backbone %s stands for the MX hosts, as a partner's static route does", r.opts.Backbone)
		targets = []string{r.opts.Backbone}
	} else {
		hosts, ok := r.checkMX(ctx)
		if !ok {
			r.skip("backbone", "no mail host to connect to (see the mx check)")
			r.skip("starttls", "no mail host to connect to (see the mx check)")
			return
		}
		for _, h := range hosts {
			targets = append(targets, net.JoinHostPort(h, strconv.Itoa(r.opts.Port)))
		}
	}
	for _, t := range targets {
		r.checkBackbone(ctx, t)
	}
}

// checkMX looks up the domain's mail hosts as a sending HISP does: MX
// records by preference, else the domain itself (the implicit MX of RFC
// 5321 section 5.1); a null MX (RFC 7505) accepts no mail.
func (r *run) checkMX(ctx context.Context) ([]string, bool) {
	dc := r.dns()
	d := r.opts.Domain
	resp, server, err := dc.Query(ctx, d, dns.TypeMX)
	if err != nil {
		r.fail("mx", "look-up failed: %v", err)
		return nil, false
	}
	if resp.Rcode == dns.RcodeNameError {
		r.fail("mx", "%s does not exist (NXDOMAIN from %s)", d, server)
		return nil, false
	}
	mxs := dnsclient.MXRecords(resp)
	if dnsclient.NullMX(mxs) {
		r.fail("mx", "%s publishes a null MX (RFC 7505): it accepts no mail", d)
		return nil, false
	}
	hosts := dnsclient.MXHosts(mxs)
	if len(hosts) == 0 {
		// Implicit MX: the domain must have an address itself.
		if _, err := r.addrs(ctx, d); err != nil {
			r.fail("mx", "no MX record for %s, and the domain itself has no address for the implicit MX: %v", d, err)
			return nil, false
		}
		r.pass("mx", "no MX record; the domain's own address is its mail host (implicit MX, RFC 5321 section 5.1)")
		return []string{d}, true
	}
	var names []string
	for _, mx := range mxs {
		names = append(names, fmt.Sprintf("%d %s", mx.Preference, strings.TrimSuffix(mx.Mx, ".")))
	}
	r.pass("mx", "%s (from %s)", strings.Join(names, ", "), server)
	return hosts, true
}

// dns returns the client of every look-up.
func (r *run) dns() dnsclient.Client {
	return dnsclient.Client{Server: r.opts.Resolver, Timeout: min(r.opts.Timeout, dnsTimeout)}
}

// dnsTimeout bounds one DNS exchange.
const dnsTimeout = 3 * time.Second

// addrs resolves a host's IPv4 and IPv6 addresses; an IP literal is its own.
func (r *run) addrs(ctx context.Context, host string) ([]string, error) {
	a := r.dns().LookupAddrs(ctx, host)
	if len(a.IPs) == 0 {
		if a.Err != nil {
			return nil, a.Err
		}
		return nil, fmt.Errorf("%s has no A or AAAA record", host)
	}
	out := make([]string, len(a.IPs))
	for i, ip := range a.IPs {
		out[i] = ip.String()
	}
	return out, nil
}

// checkBackbone connects to one mail host (host:port) the way a sending
// HISP does: EHLO, then STARTTLS on a second connection.
func (r *run) checkBackbone(ctx context.Context, target string) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		r.fail("backbone "+target, "%v", err)
		return
	}
	ips, err := r.addrs(ctx, host)
	if err != nil {
		r.fail("backbone "+target, "cannot resolve the host: %v", err)
		r.skip("starttls "+target, "the host cannot be resolved")
		return
	}
	var (
		c    *gosmtp.Client
		addr string
		errs []error
	)
	for _, ip := range ips {
		addr = net.JoinHostPort(ip, port)
		c, err = r.smtpHello(ctx, addr)
		if err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	if c == nil {
		r.fail("backbone "+target, "no address answers SMTP: %v", errors.Join(errs...))
		r.skip("starttls "+target, "the host does not answer")
		return
	}
	offered, _ := c.Extension("STARTTLS")
	size, hasSize := c.MaxMessageSize()
	c.Quit()
	c.Close()
	at := ""
	if addr != target {
		at = " at " + addr
	}
	limit := ""
	if hasSize && size > 0 {
		limit = fmt.Sprintf(", SIZE %d", size)
	}
	r.pass("backbone "+target, "answers SMTP and EHLO%s%s", at, limit)
	if !offered {
		r.fail("starttls "+target, "STARTTLS is not offered in the EHLO answer: partners requiring TLS cannot deliver")
		return
	}
	r.checkSTARTTLS(ctx, target, host, addr)
}

// smtpHello connects to addr and greets it with EHLO.
func (r *run) smtpHello(ctx context.Context, addr string) (*gosmtp.Client, error) {
	conn, err := r.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(3 * r.opts.Timeout))
	c := gosmtp.NewClient(conn)
	c.CommandTimeout = r.opts.Timeout
	c.SubmissionTimeout = r.opts.Timeout
	if err := c.Hello(r.opts.Hostname); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting or EHLO: %w", err)
	}
	return c, nil
}

func (r *run) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: r.opts.Timeout}
	return d.DialContext(ctx, "tcp", addr)
}

// checkSTARTTLS completes a TLS handshake after STARTTLS and describes the
// server certificate. Direct protects messages end to end, so an
// unverifiable server certificate is reported, not failed.
func (r *run) checkSTARTTLS(ctx context.Context, target, host, addr string) {
	check := "starttls " + target
	conn, err := r.dial(ctx, addr)
	if err != nil {
		r.fail(check, "%v", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(3 * r.opts.Timeout))
	c, err := gosmtp.NewClientStartTLS(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		conn.Close()
		r.fail(check, "STARTTLS offered but the TLS handshake failed: %v", err)
		return
	}
	defer c.Close()
	// The handshake happens with the first command over TLS: EHLO again,
	// as RFC 3207 asks.
	if err := c.Hello(r.opts.Hostname); err != nil {
		r.fail(check, "STARTTLS offered but the TLS handshake or the EHLO after it failed: %v", err)
		return
	}
	state, _ := c.TLSConnectionState()
	c.Quit()
	if len(state.PeerCertificates) == 0 {
		r.fail(check, "TLS without a server certificate")
		return
	}
	leaf := state.PeerCertificates[0]
	verified := "verifies against the system roots for " + host
	inter := x509.NewCertPool()
	for _, ic := range state.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Intermediates: inter}); err != nil {
		verified = "not verified (" + err.Error() + "); fine for partners with opportunistic TLS, not for those verifying it"
	}
	if now := r.opts.Now(); leaf.NotAfter.Before(now) {
		r.fail(check, "%s, server certificate %q expired on %s", tls.VersionName(state.Version), leaf.Subject.String(), day(leaf.NotAfter))
		return
	}
	r.pass(check, "%s %s, server certificate %q until %s, %s", tls.VersionName(state.Version),
		tls.CipherSuiteName(state.CipherSuite), leaf.Subject.String(), day(leaf.NotAfter), verified)
}
