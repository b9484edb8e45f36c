package conformance

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/internal/testnet"
	"github.com/hisp-project/hisp/internal/testpki"
)

// startZone serves fixed records (presentation format) on loopback.
func startZone(t *testing.T, records ...string) string {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		exists := false
		for _, rr := range rrs {
			if strings.EqualFold(rr.Header().Name, q.Name) {
				exists = true
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		if !exists && !strings.HasSuffix(q.Name, ".test.") {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, l := testnet.ListenDNS(t)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return pc.LocalAddr().String()
}

type sinkBackend struct{}

func (sinkBackend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return sinkSession{}, nil }

type sinkSession struct{}

func (sinkSession) Reset()                                 {}
func (sinkSession) Logout() error                          { return nil }
func (sinkSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (sinkSession) Data(r io.Reader) error                 { _, err := io.Copy(io.Discard, r); return err }

// startSMTP runs an SMTP server on loopback, with STARTTLS when withTLS,
// and returns its port.
func startSMTP(t *testing.T, withTLS bool) int {
	t.Helper()
	s := gosmtp.NewServer(sinkBackend{})
	s.Domain = "mail.test"
	if withTLS {
		ca := testpki.NewCA(t, "mail CA")
		id := testpki.Issue(t, ca, testpki.Options{DNS: []string{"mail.mx.test"}, CN: "mail.mx.test"})
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key}}}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// mailResults runs the checks on domain and returns the results of the
// mail checks by name.
func mailResults(t *testing.T, resolver, domain string, port int) map[string]Result {
	t.Helper()
	out := map[string]Result{}
	_, err := Run(context.Background(), Options{Domain: domain, Resolver: resolver, Port: port}, func(r Result) {
		name, _, _ := strings.Cut(r.Check, " ")
		if name == "mx" || name == "backbone" || name == "starttls" {
			out[r.Check] = r
			t.Log(r)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMailChecks: the MX hosts as a sending HISP finds them, EHLO and
// STARTTLS on each, and the failures of each.
func TestMailChecks(t *testing.T) {
	resolver := startZone(t,
		"mx.test. 300 IN MX 10 mail.mx.test.",
		"mail.mx.test. 300 IN A 127.0.0.1",
		"null.test. 300 IN MX 0 .",
		"nomx.test. 300 IN SOA ns.test. h.test. 1 2 3 4 5",
		"gone.test. 300 IN MX 10 nowhere.gone.test.",
	)
	tlsPort := startSMTP(t, true)
	plainPort := startSMTP(t, false)

	host := "mail.mx.test:" + strconv.Itoa(tlsPort)
	res := mailResults(t, resolver, "mx.test", tlsPort)
	if r := res["mx"]; r.Status != Pass || !strings.Contains(r.Reason, "10 mail.mx.test") {
		t.Errorf("mx: %v", r)
	}
	if r := res["backbone "+host]; r.Status != Pass || !strings.Contains(r.Reason, "at 127.0.0.1:"+strconv.Itoa(tlsPort)) {
		t.Errorf("backbone: %v", r)
	}
	if r := res["starttls "+host]; r.Status != Pass || !strings.Contains(r.Reason, `CN=mail.mx.test`) || !strings.Contains(r.Reason, "not verified") {
		t.Errorf("starttls: %v", r)
	}

	host = "mail.mx.test:" + strconv.Itoa(plainPort)
	res = mailResults(t, resolver, "mx.test", plainPort)
	if r := res["starttls "+host]; r.Status != Fail || !strings.Contains(r.Reason, "STARTTLS is not offered") {
		t.Errorf("no STARTTLS: %v", r)
	}

	down := freePort(t)
	res = mailResults(t, resolver, "mx.test", down)
	if r := res["backbone mail.mx.test:"+strconv.Itoa(down)]; r.Status != Fail || !strings.Contains(r.Reason, "no address answers SMTP") {
		t.Errorf("backbone down: %v", r)
	}

	for domain, want := range map[string]string{
		"null.test":  "null MX",
		"nomx.test":  "no MX record for nomx.test, and the domain itself has no address",
		"nx.example": "does not exist",
	} {
		res = mailResults(t, resolver, domain, tlsPort)
		if r := res["mx"]; r.Status != Fail || !strings.Contains(r.Reason, want) {
			t.Errorf("%s: %v, want a failure with %q", domain, r, want)
		}
	}
	res = mailResults(t, resolver, "gone.test", tlsPort)
	if r := res["backbone nowhere.gone.test:"+strconv.Itoa(tlsPort)]; r.Status != Fail || !strings.Contains(r.Reason, "cannot resolve") {
		t.Errorf("MX host without address: %v", res)
	}
}

// freePort returns a loopback port where nothing listens.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
