package certs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// CertSource answers which certificates to publish. Its methods may be called
// concurrently, once or twice per DNS query, so they should be quick.
type CertSource interface {
	// Domains returns the local domains; each is the apex of a zone the
	// Publisher is authoritative for.
	Domains(ctx context.Context) ([]string, error)
	// Certificates returns the DER certificates to publish at a DNS name,
	// given in lower case without the final dot: an address name such as
	// "bob.b.example" (address-bound, the address with "@" replaced by ".",
	// CD-02) or the domain itself ("b.example", organization-bound). Bytes
	// special in DNS presentation format appear escaped, as in
	// "john\.doe.b.example" or "a\ b.b.example". A name with nothing to
	// publish gives no certificates and no error.
	Certificates(ctx context.Context, name string) ([][]byte, error)
}

// PublisherOptions configure a Publisher. The zero value gives the defaults.
type PublisherOptions struct {
	// Hostname is the name server's own name, used as NS target and SOA
	// MNAME. Default "localhost".
	Hostname string
	// TTL of the published records, and the negative-caching TTL in the SOA.
	// Default 300 s.
	TTL uint32
	// Logger receives a debug record per query and errors of the source.
	// Nil discards them.
	Logger *slog.Logger
	// RateLimit limits UDP answers per client (rrl.go); the zero value
	// takes its defaults.
	RateLimit RateLimit
	// LDAPTarget and LDAPPort, when set, are published as the SRV record
	// _ldap._tcp.DOMAIN of every local domain (CD-05), pointing discovery
	// at hisp's LDAPServer.
	LDAPTarget string
	LDAPPort   uint16
	// MX, when set, is published as the MX record (preference 10) of every
	// local domain: a Direct domain delegated to this server needs one, or
	// partners find no mail host for it. "" publishes none.
	MX string
}

// publishUDPSize is the largest UDP answer sent, whatever a client
// advertises: the size that avoids IP fragmentation on common paths (DNS
// flag day 2020). Larger answers are truncated so clients retry over TCP.
const publishUDPSize = 1232

// sourceTimeout bounds the CertSource calls of one query.
const sourceTimeout = 3 * time.Second

// Publisher is an authoritative DNS server for the local domains. It
// publishes certificates as CERT records of type PKIX (key tag 0, algorithm
// 0) at address names and domain apexes (CD-10), answers SOA and NS (and
// MX, when set) at each apex, NXDOMAIN or NODATA with the SOA for names
// without records, and REFUSED for names outside its zones. It serves UDP and TCP, supports
// EDNS0, and truncates UDP answers above 1232 bytes (or 512 without EDNS0)
// so clients retry over TCP (CD-04). UDP answers are rate limited per
// client (RateLimit), so that it is no amplifier for reflection attacks.
type Publisher struct {
	src      CertSource
	hostname string
	ldap     *dns.SRV // Hdr.Name unset; nil: no LDAP
	mx       string   // fully qualified; "": no MX
	ttl      uint32
	log      *slog.Logger
	serial   uint32
	rrl      *rateLimiter // nil: UDP answers are not rate limited
}

// NewPublisher returns a Publisher of the certificates src names.
func NewPublisher(src CertSource, opts PublisherOptions) *Publisher {
	p := &Publisher{src: src, hostname: opts.Hostname, ttl: opts.TTL, log: opts.Logger, rrl: newRateLimiter(opts.RateLimit)}
	if p.hostname == "" {
		p.hostname = "localhost"
	}
	p.hostname = dns.Fqdn(strings.ToLower(p.hostname))
	if opts.LDAPTarget != "" && opts.LDAPPort != 0 {
		p.ldap = &dns.SRV{Target: dns.Fqdn(strings.ToLower(opts.LDAPTarget)), Port: opts.LDAPPort}
	}
	if opts.MX != "" {
		p.mx = dns.Fqdn(strings.ToLower(opts.MX))
	}
	if p.ttl == 0 {
		p.ttl = 300
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	// Answers are computed from the source at each query, so the zone has
	// no version of its own; the serial is the start time.
	p.serial = uint32(time.Now().Unix())
	return p
}

// ListenAndServe serves DNS on addr over UDP and TCP (the same port; when
// addr has port 0, the port UDP got) until ctx ends, then returns nil. Use
// Serve to learn the address of listeners of port 0.
func (p *Publisher) ListenAndServe(ctx context.Context, addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns publisher: %w", err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns publisher: %w", err)
	}
	p.log.Info("dns publisher listening", slog.String("addr", pc.LocalAddr().String()))
	return p.Serve(ctx, pc, l)
}

// Serve answers DNS queries arriving on pc (UDP) and l (TCP); either may be
// nil. It returns nil when ctx ends, after closing both, or the error of a
// server that failed.
func (p *Publisher) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: p.handler(ctx, false)})
	}
	if l != nil {
		servers = append(servers, &dns.Server{Listener: l, Handler: p.handler(ctx, true),
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }})
	}
	if len(servers) == 0 {
		return errors.New("dns publisher: nothing to serve on")
	}
	errc := make(chan error, len(servers))
	var started []*dns.Server
	shutdown := func() {
		for _, s := range started {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.ShutdownContext(sctx)
			cancel()
		}
	}
	for _, s := range servers {
		up := make(chan struct{})
		s.NotifyStartedFunc = func() { close(up) }
		go func() { errc <- s.ActivateAndServe() }()
		select {
		case <-up:
			started = append(started, s)
		case err := <-errc:
			shutdown()
			return fmt.Errorf("dns publisher: %w", err)
		}
	}
	select {
	case <-ctx.Done():
		shutdown()
		return nil
	case err := <-errc:
		shutdown()
		if err == nil {
			err = errors.New("server stopped")
		}
		return fmt.Errorf("dns publisher: %w", err)
	}
}

func (p *Publisher) handler(ctx context.Context, overTCP bool) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if !overTCP && p.rrl != nil {
			switch p.rrl.check(w.RemoteAddr()) {
			case rrlDrop:
				return
			case rrlSlip:
				// Empty and truncated: smaller than the query's answer
				// could be, and a real client retries over TCP.
				m := new(dns.Msg)
				m.SetReply(r)
				m.Truncated = true
				w.WriteMsg(m)
				return
			}
		}
		qctx, cancel := context.WithTimeout(ctx, sourceTimeout)
		defer cancel()
		m := p.answer(qctx, r, overTCP)
		if len(r.Question) == 1 {
			q := r.Question[0]
			p.log.Debug("dns query", slog.String("name", q.Name), slog.String("type", dns.TypeToString[q.Qtype]),
				slog.Bool("tcp", overTCP), slog.String("rcode", dns.RcodeToString[m.Rcode]),
				slog.Int("answers", len(m.Answer)), slog.Bool("truncated", m.Truncated), slog.String("remote", w.RemoteAddr().String()))
		}
		if err := w.WriteMsg(m); err != nil {
			p.log.Debug("dns write", slog.Any("err", err))
		}
	})
}

// answer builds the response to r.
func (p *Publisher) answer(ctx context.Context, r *dns.Msg, overTCP bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = false
	if r.Opcode != dns.OpcodeQuery {
		m.SetRcode(r, dns.RcodeNotImplemented)
		return m
	}
	if len(r.Question) != 1 {
		m.SetRcode(r, dns.RcodeFormatError)
		return m
	}
	opt := r.IsEdns0()
	if opt != nil {
		m.SetEdns0(publishUDPSize, false)
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers // RFC 6891 section 6.1.3
			return m
		}
	}
	p.fill(ctx, m, r.Question[0])
	size := dns.MaxMsgSize
	if !overTCP {
		size = dns.MinMsgSize
		if opt != nil {
			size = max(dns.MinMsgSize, min(int(opt.UDPSize()), publishUDPSize))
		}
	}
	m.Truncate(size) // CD-04: the client retries over TCP
	return m
}

// fill answers question q into m.
func (p *Publisher) fill(ctx context.Context, m *dns.Msg, q dns.Question) {
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return
	}
	name := strings.ToLower(q.Name)
	zone, err := p.zoneOf(ctx, name)
	if err != nil {
		p.log.Error("dns publisher: domains", slog.Any("err", err))
		m.Rcode = dns.RcodeServerFailure
		return
	}
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	apex := name == zone
	exists := apex
	if q.Qtype == dns.TypeCERT || q.Qtype == dns.TypeANY || !apex {
		certs, err := p.src.Certificates(ctx, strings.TrimSuffix(name, "."))
		if err != nil {
			p.log.Error("dns publisher: certificates", slog.String("name", name), slog.Any("err", err))
			m.Authoritative = false
			m.Rcode = dns.RcodeServerFailure
			return
		}
		exists = exists || len(certs) > 0
		if q.Qtype == dns.TypeCERT || q.Qtype == dns.TypeANY {
			for _, der := range certs {
				m.Answer = append(m.Answer, &dns.CERT{
					Hdr:         dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCERT, Class: dns.ClassINET, Ttl: p.ttl},
					Type:        dns.CertPKIX, // CD-03, CD-10: DER in the record, key tag 0, algorithm 0
					Certificate: base64.StdEncoding.EncodeToString(der),
				})
			}
		}
	}
	if p.ldap != nil && name == "_ldap._tcp."+zone {
		exists = true
		if q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY {
			srv := *p.ldap
			srv.Hdr = dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: p.ttl}
			m.Answer = append(m.Answer, &srv)
		}
	}
	if apex {
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, p.soa(zone, q.Name))
		}
		if q.Qtype == dns.TypeNS || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.NS{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: p.ttl}, Ns: p.hostname})
		}
		if p.mx != "" && (q.Qtype == dns.TypeMX || q.Qtype == dns.TypeANY) {
			m.Answer = append(m.Answer, &dns.MX{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: p.ttl},
				Preference: 10, Mx: p.mx})
		}
	}
	if len(m.Answer) == 0 {
		// NODATA or NXDOMAIN, with the SOA for negative caching
		// (RFC 2308). A name is known to exist only when it has
		// certificates, so an empty non-terminal (doe.b.example under
		// john.doe.b.example) is answered NXDOMAIN.
		m.Ns = append(m.Ns, p.soa(zone, zone))
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
}

// soa returns the SOA record of zone, owned by owner.
func (p *Publisher) soa(zone, owner string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: p.ttl},
		Ns:      p.hostname,
		Mbox:    "hostmaster." + zone,
		Serial:  p.serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  p.ttl,
	}
}

// zoneOf returns the local domain (lower case, with final dot) that name is
// in, the longest if several are; "" if none.
func (p *Publisher) zoneOf(ctx context.Context, name string) (string, error) {
	domains, err := p.src.Domains(ctx)
	if err != nil {
		return "", err
	}
	zone := ""
	for _, d := range domains {
		d = dns.Fqdn(strings.ToLower(strings.TrimSpace(d)))
		if _, ok := dns.IsDomainName(d); !ok || d == "." {
			continue
		}
		if dns.IsSubDomain(d, name) && len(d) > len(zone) {
			zone = d
		}
	}
	return zone, nil
}

// OwnerOfName returns whose certificates are published at a DNS name, as
// CertSource.Certificates receives it: the domain itself at a zone's apex
// (organization-bound), "local@domain" at a one-label name under it
// (address-bound, the inverse of CD-02's mapping, escapes undone), "" for
// any other name.
func OwnerOfName(name string, zones []string) string {
	fqdn := dns.Fqdn(strings.ToLower(name))
	zone := ""
	for _, z := range zones { // the longest zone holding the name
		z = dns.Fqdn(strings.ToLower(z))
		if dns.IsSubDomain(z, fqdn) && dns.CountLabel(z) > dns.CountLabel(zone) {
			zone = z
		}
	}
	switch {
	case zone == "":
		return ""
	case fqdn == zone:
		return strings.TrimSuffix(zone, ".")
	case dns.CountLabel(fqdn) != dns.CountLabel(zone)+1:
		return ""
	}
	var wire [256]byte
	if _, err := dns.PackDomainName(fqdn, wire[:], 0, nil, false); err != nil {
		return ""
	}
	local := string(wire[1 : 1+int(wire[0])]) // the first label, unescaped
	return local + "@" + strings.TrimSuffix(zone, ".")
}
