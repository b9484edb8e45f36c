package certs

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// memSource is a CertSource held in memory.
type memSource struct {
	mu      sync.Mutex
	domains []string
	certs   map[string][][]byte
	fail    bool
}

func (s *memSource) Domains(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, errors.New("store down")
	}
	return s.domains, nil
}

func (s *memSource) Certificates(ctx context.Context, name string) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.certs[name], nil
}

func (s *memSource) add(name string, c *x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs[name] = append(s.certs[name], c.Raw)
}

type publishEnv struct {
	pki  *testPKI
	src  *memSource
	addr string
	port int
	ab   *x509.Certificate // bob@b.example
	db   *x509.Certificate // b.example
	big  *x509.Certificate // big@b.example, too large for UDP
}

func startPublisher(t *testing.T) *publishEnv {
	t.Helper()
	return startPublisherWith(t, PublisherOptions{Hostname: "ns.hisp.example", TTL: 120})
}

// startPublisherWith starts a publisher with options.
func startPublisherWith(t *testing.T, opts PublisherOptions) *publishEnv {
	t.Helper()
	env := &publishEnv{pki: newTestPKI(t), src: &memSource{domains: []string{"b.example", "Sub.B.Example."}, certs: map[string][][]byte{}}}
	env.ab = env.pki.leaf(t, leafOpts{email: "bob@b.example"})
	env.db = env.pki.leaf(t, leafOpts{dnsName: "b.example"})
	env.big = env.pki.leaf(t, leafOpts{email: "big@b.example", extraSANs: 60})
	env.src.add("bob.b.example", env.ab)
	env.src.add("b.example", env.db)
	env.src.add("big.b.example", env.big)

	pc, l := listenDNSPair(t)
	env.addr = pc.LocalAddr().String()
	env.port = pc.LocalAddr().(*net.UDPAddr).Port
	p := NewPublisher(env.src, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, pc, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	// Serve returns to its caller only at the end; wait until TCP answers.
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", env.addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("publisher not listening: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return env
}

// ask sends one query with package dns.
func (env *publishEnv) ask(t *testing.T, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(4096, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 4096}
	r, _, err := c.Exchange(m, env.addr)
	tcheck(t, err, "exchange "+network+" "+name)
	return r
}

// dig runs the dig command against the publisher.
func (env *publishEnv) dig(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("dig")
	if err != nil {
		t.Fatal("dig not found: `make test` installs it (scripts/test-deps.sh: apt-get install bind9-dnsutils)")
	}
	args = append([]string{"@127.0.0.1", "-p", strconv.Itoa(env.port), "+time=5", "+tries=1"}, args...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

var whitespace = regexp.MustCompile(`\s+`)

// holdsCert reports whether dig output shows the certificate's base64.
func holdsCert(out string, c *x509.Certificate) bool {
	return strings.Contains(whitespace.ReplaceAllString(out, ""), base64.StdEncoding.EncodeToString(c.Raw))
}

func TestPublisherDig(t *testing.T) {
	env := startPublisher(t)

	for _, mode := range []string{"+notcp", "+tcp"} {
		out := env.dig(t, "bob.b.example", "CERT", mode)
		if !strings.Contains(out, "status: NOERROR") || !regexp.MustCompile(`flags: qr aa[ ;]`).MatchString(out) {
			t.Errorf("%s: not an authoritative answer:\n%s", mode, out)
		}
		if !strings.Contains(out, "CERT\tPKIX 0 0 ") || !holdsCert(out, env.ab) {
			t.Errorf("%s: certificate missing:\n%s", mode, out)
		}
	}

	// Organization-bound at the apex, with SOA and NS.
	if out := env.dig(t, "b.example", "CERT"); !holdsCert(out, env.db) {
		t.Errorf("domain certificate missing:\n%s", out)
	}
	if out := env.dig(t, "b.example", "SOA", "+short"); !strings.HasPrefix(out, "ns.hisp.example. hostmaster.b.example. ") {
		t.Errorf("SOA: %q", out)
	}
	if out := env.dig(t, "b.example", "NS", "+short"); out != "ns.hisp.example.\n" {
		t.Errorf("NS: %q", out)
	}

	// Too large for UDP: truncated, then dig retries over TCP itself.
	out := env.dig(t, "big.b.example", "CERT", "+notcp", "+ignore")
	if !regexp.MustCompile(`flags: qr aa tc[ ;]`).MatchString(out) || holdsCert(out, env.big) {
		t.Errorf("large answer over UDP not truncated:\n%s", out)
	}
	out = env.dig(t, "big.b.example", "CERT")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || !holdsCert(out, env.big) {
		t.Errorf("no TCP retry for the large answer:\n%s", out)
	}

	// Negative answers carry the SOA.
	out = env.dig(t, "nobody.b.example", "CERT")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "AUTHORITY: 1") || !strings.Contains(out, "SOA\tns.hisp.example.") {
		t.Errorf("NXDOMAIN:\n%s", out)
	}
	out = env.dig(t, "bob.b.example", "A")
	if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0") || !strings.Contains(out, "SOA\tns.hisp.example.") {
		t.Errorf("NODATA:\n%s", out)
	}

	// Outside the local domains.
	if out := env.dig(t, "bob.c.example", "CERT"); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("outside the zones:\n%s", out)
	}
}

func TestPublisherProtocol(t *testing.T) {
	env := startPublisher(t)

	t.Run("no EDNS0: 512 bytes", func(t *testing.T) {
		mid := env.pki.leaf(t, leafOpts{email: "mid@b.example", extraSANs: 10})
		env.src.add("mid.b.example", mid)
		if n := len(mid.Raw); n < 600 || n > 1000 {
			t.Fatalf("certificate of %d bytes", n)
		}
		r := env.ask(t, "udp", "mid.b.example", dns.TypeCERT, false)
		if !r.Truncated || r.IsEdns0() != nil {
			t.Errorf("truncated %v, OPT %v; want a truncated answer without OPT", r.Truncated, r.IsEdns0())
		}
		if r = env.ask(t, "udp", "mid.b.example", dns.TypeCERT, true); r.Truncated {
			t.Error("truncated despite EDNS0")
		}
		r = env.ask(t, "tcp", "mid.b.example", dns.TypeCERT, false)
		if r.Truncated || len(r.Answer) != 1 {
			t.Errorf("tcp: truncated %v, %d answers", r.Truncated, len(r.Answer))
		}
	})

	t.Run("EDNS0", func(t *testing.T) {
		r := env.ask(t, "udp", "bob.b.example", dns.TypeCERT, true)
		if r.Truncated || len(r.Answer) != 1 || !r.Authoritative {
			t.Fatalf("truncated %v, %d answers, aa %v", r.Truncated, len(r.Answer), r.Authoritative)
		}
		if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != publishUDPSize {
			t.Errorf("OPT %v", opt)
		}
		c := r.Answer[0].(*dns.CERT)
		if c.Type != dns.CertPKIX || c.KeyTag != 0 || c.Algorithm != 0 || c.Hdr.Ttl != 120 {
			t.Errorf("record %v", c)
		}
		r = env.ask(t, "udp", "big.b.example", dns.TypeCERT, true)
		if !r.Truncated {
			t.Error("answer above 1232 bytes not truncated")
		}
	})

	t.Run("EDNS version 1", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion("bob.b.example.", dns.TypeCERT)
		m.SetEdns0(4096, false)
		m.IsEdns0().SetVersion(1)
		r, err := dns.Exchange(m, env.addr)
		tcheck(t, err, "exchange")
		if r.Rcode != dns.RcodeBadVers {
			t.Errorf("rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
		}
	})

	t.Run("sub-zone and case", func(t *testing.T) {
		c := env.pki.leaf(t, leafOpts{email: "amy@sub.b.example"})
		env.src.add("amy.sub.b.example", c)
		r := env.ask(t, "udp", "AMY.Sub.B.example", dns.TypeCERT, true)
		if len(r.Answer) != 1 || r.Answer[0].Header().Name != "AMY.Sub.B.example." {
			t.Fatalf("answer %v", r.Answer)
		}
		r = env.ask(t, "udp", "nobody.sub.b.example", dns.TypeCERT, true)
		if len(r.Ns) != 1 || r.Ns[0].Header().Name != "sub.b.example." {
			t.Errorf("authority %v, want the SOA of sub.b.example", r.Ns)
		}
	})

	t.Run("escaped dot is not a label boundary", func(t *testing.T) {
		// "a.b\.example." is the name "a" under the zone "b.example"?
		// No: its second label is "b.example", under the root.
		r := env.ask(t, "udp", `a.b\.example`, dns.TypeCERT, true)
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})

	t.Run("source failure", func(t *testing.T) {
		env.src.mu.Lock()
		env.src.fail = true
		env.src.mu.Unlock()
		defer func() {
			env.src.mu.Lock()
			env.src.fail = false
			env.src.mu.Unlock()
		}()
		if r := env.ask(t, "udp", "bob.b.example", dns.TypeCERT, true); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
		}
	})
}

// TestPublisherDiscover looks the published certificates up with the
// project's own Discoverer.
func TestPublisherDiscover(t *testing.T) {
	env := startPublisher(t)
	d := NewDiscoverer(DiscoveryOptions{Resolver: env.addr, DNSTimeout: 2 * time.Second})
	v := env.pki.validator()

	res, err := discover(t, d, "bob@b.example", v)
	tcheck(t, err, "discover bob")
	wantCerts(t, res, DNSAddress, env.ab)

	res, err = discover(t, d, "big@b.example", v)
	tcheck(t, err, "discover big")
	wantCerts(t, res, DNSAddress, env.big)

	// No address-bound certificate: the organization-bound one.
	res, err = discover(t, d, "carol@b.example", v)
	tcheck(t, err, "discover carol")
	wantCerts(t, res, DNSDomain, env.db)
}

func TestPublisherListenAndServe(t *testing.T) {
	pc, l := listenDNSPair(t)
	addr := pc.LocalAddr().String()
	pc.Close()
	l.Close()
	p := NewPublisher(&memSource{domains: []string{"b.example"}}, PublisherOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ListenAndServe(ctx, addr) }()
	var r *dns.Msg
	var err error
	for i := 0; i < 200; i++ {
		m := new(dns.Msg)
		m.SetQuestion("b.example.", dns.TypeSOA)
		r, _, err = (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, addr)
		if err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tcheck(t, err, "query")
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Ns != "localhost." {
		t.Errorf("answer %v", r.Answer)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
}

func TestOwnerOfName(t *testing.T) {
	zones := []string{"b.example", "sub.b.example"}
	for name, want := range map[string]string{
		"b.example":           "b.example",
		"bob.b.example":       "bob@b.example",
		"BOB.B.Example.":      "bob@b.example",
		`john\.doe.b.example`: "john.doe@b.example",
		`a\032b.b.example`:    "a b@b.example",
		"bob.sub.b.example":   "bob@sub.b.example",
		"x.y.b.example":       "",
		"bob.other.example":   "",
		"sub.b.example":       "sub.b.example",
	} {
		if got := OwnerOfName(name, zones); got != want {
			t.Errorf("OwnerOfName(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestPublisherMX: with an MX host, every local domain's apex answers MX
// (a domain delegated to hisp's DNS needs one for partners to route mail);
// without, NODATA.
func TestPublisherMX(t *testing.T) {
	env := startPublisherWith(t, PublisherOptions{Hostname: "ns.hisp.example", MX: "Mail.Hisp.Example"})
	r := env.ask(t, "udp", "b.example", dns.TypeMX, true)
	if len(r.Answer) != 1 {
		t.Fatalf("MX of b.example: %v", r.Answer)
	}
	if mx, ok := r.Answer[0].(*dns.MX); !ok || mx.Mx != "mail.hisp.example." || mx.Preference != 10 || !r.Authoritative {
		t.Fatalf("MX record %v", r.Answer[0])
	}
	if r := env.ask(t, "udp", "bob.b.example", dns.TypeMX, true); len(r.Answer) != 0 || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("MX below the apex: rcode %d, %v", r.Rcode, r.Answer)
	}
	none := startPublisher(t)
	if r := none.ask(t, "udp", "b.example", dns.TypeMX, true); len(r.Answer) != 0 || r.Rcode != dns.RcodeSuccess || len(r.Ns) != 1 {
		t.Fatalf("without MX: rcode %d, answers %v, authority %v", r.Rcode, r.Answer, r.Ns)
	}
}
