package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testPKI is a throwaway CA issuing the certificates of the tests.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	key    *ecdsa.PrivateKey // shared by every leaf: only the certificates matter here
	serial int64
	mu     sync.Mutex
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "ca key")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "leaf key")
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hisp test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	tcheck(t, err, "ca cert")
	ca, err := x509.ParseCertificate(der)
	tcheck(t, err, "parse ca")
	return &testPKI{ca: ca, caKey: caKey, key: key, serial: 1}
}

type leafOpts struct {
	email     string // SAN rfc822Name: address-bound
	dnsName   string // SAN dNSName: domain-bound
	expired   bool
	notAfter  time.Time // zero: 12 hours from now
	extraSANs int       // padding SANs, to make a big certificate
}

func (p *testPKI) leaf(t testing.TB, o leafOpts) *x509.Certificate {
	t.Helper()
	p.mu.Lock()
	p.serial++
	serial := p.serial
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: o.email + o.dnsName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	if !o.notAfter.IsZero() {
		tmpl.NotAfter = o.notAfter
	}
	if o.expired {
		tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
		tmpl.NotAfter = time.Now().Add(-24 * time.Hour)
	}
	if o.email != "" {
		tmpl.EmailAddresses = []string{o.email}
	}
	if o.dnsName != "" {
		tmpl.DNSNames = []string{o.dnsName}
	}
	for i := range o.extraSANs {
		tmpl.EmailAddresses = append(tmpl.EmailAddresses, fmt.Sprintf("padding-%04d@padding.example", i))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &p.key.PublicKey, p.caKey)
	tcheck(t, err, "leaf cert")
	c, err := x509.ParseCertificate(der)
	tcheck(t, err, "parse leaf")
	return c
}

// validator is the tests' stand-in for package trust: trusted when issued
// by the test CA, within validity, bound to the address by SAN, and not in
// revoked.
func (p *testPKI) validator(revoked ...*x509.Certificate) ValidateFunc {
	return func(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, address string) (bool, string) {
		for _, r := range revoked {
			if r.Equal(cert) {
				return false, "revoked"
			}
		}
		if err := cert.CheckSignatureFrom(p.ca); err != nil {
			return false, "not issued by the test CA: " + err.Error()
		}
		if now := time.Now(); now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
			return false, "expired"
		}
		_, domain, _ := strings.Cut(address, "@")
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, address) {
				return true, "address-bound, issued by the test CA"
			}
		}
		for _, n := range cert.DNSNames {
			if strings.EqualFold(n, domain) {
				return true, "domain-bound, issued by the test CA"
			}
		}
		return false, "not bound to " + address
	}
}

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// testZone is a small DNS server for discovery tests: whatever records are
// added, served authoritatively over UDP and TCP on loopback. Over UDP it
// truncates answers above 1232 bytes (or 512 without EDNS0), as real servers
// do, so large CERT records need TCP.
type testZone struct {
	addr string

	mu      sync.Mutex
	rrs     map[string][]dns.RR // by lower-case owner name
	queries []string            // "udp CERT bob.b.example."
}

func startTestZone(t testing.TB) *testZone {
	t.Helper()
	z := &testZone{rrs: map[string][]dns.RR{}}
	pc, l := listenDNSPair(t)
	z.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: l, Handler: z}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return z
}

// listenDNSPair listens on a UDP and a TCP socket of the same loopback port.
func listenDNSPair(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		tcheck(t, err, "listen udp")
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		lastErr = err
		pc.Close()
	}
	t.Fatalf("no loopback port free for both udp and tcp: %v", lastErr)
	return nil, nil
}

func (z *testZone) add(t testing.TB, rrs ...string) {
	t.Helper()
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		tcheck(t, err, "parse rr "+s)
		z.addRR(rr)
	}
}

func (z *testZone) addRR(rr dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	k := strings.ToLower(rr.Header().Name)
	z.rrs[k] = append(z.rrs[k], rr)
}

func (z *testZone) addCERT(name string, certType uint16, data []byte) {
	z.addRR(&dns.CERT{
		Hdr:         dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeCERT, Class: dns.ClassINET, Ttl: 300},
		Type:        certType,
		Certificate: base64.StdEncoding.EncodeToString(data),
	})
}

func (z *testZone) addSRV(domain string, prio, weight uint16, port int, target string) {
	z.addRR(&dns.SRV{
		Hdr:      dns.RR_Header{Name: "_ldap._tcp." + dns.Fqdn(domain), Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 300},
		Priority: prio, Weight: weight, Port: uint16(port), Target: dns.Fqdn(target),
	})
}

// sawQuery reports whether a query of type qtype for name came in over
// network ("" for either).
func (z *testZone) sawQuery(network, qtype, name string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.ContainsFunc(z.queries, func(q string) bool {
		n, rest, _ := strings.Cut(q, " ")
		return (network == "" || n == network) && rest == qtype+" "+strings.ToLower(dns.Fqdn(name))
	})
}

func (z *testZone) queryCount() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return len(z.queries)
}

func (z *testZone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	if len(r.Question) != 1 {
		m.SetRcode(r, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	network := w.LocalAddr().Network()
	z.mu.Lock()
	z.queries = append(z.queries, network+" "+dns.TypeToString[q.Qtype]+" "+strings.ToLower(q.Name))
	all, exists := z.rrs[strings.ToLower(q.Name)]
	var ans []dns.RR
	for _, rr := range all {
		if rr.Header().Rrtype == q.Qtype {
			ans = append(ans, dns.Copy(rr))
		}
	}
	z.mu.Unlock()
	m.SetReply(r)
	m.Authoritative = true
	m.Answer = ans
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = min(int(opt.UDPSize()), 1232)
		m.SetEdns0(1232, false)
	}
	if network == "udp" {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}
