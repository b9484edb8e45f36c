package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// discoveryEnv holds the servers of the discovery suite: a DNS zone, a web
// server for IPKIX URLs and, when installed, slapd.
type discoveryEnv struct {
	pki      *testPKI
	zone     *testZone
	web      *httptest.Server
	slapd    *testSlapd
	slapdErr error
	downPort int // a loopback port where no LDAP server listens

	mu       sync.Mutex
	webFiles map[string][]byte
}

func newDiscoveryEnv(t *testing.T, withLDAP bool) *discoveryEnv {
	t.Helper()
	env := &discoveryEnv{pki: newTestPKI(t), zone: startTestZone(t), webFiles: map[string][]byte{}}
	env.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env.mu.Lock()
		b, ok := env.webFiles[r.URL.Path]
		env.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(env.web.Close)
	env.downPort = freePort(t)
	if withLDAP {
		if _, err := lookSlapd(); err != nil {
			env.slapdErr = err
		} else {
			env.slapd = startSlapd(t)
		}
	}
	return env
}

// needLDAP fails the test when slapd is not there.
func (env *discoveryEnv) needLDAP(t *testing.T) *testSlapd {
	t.Helper()
	if env.slapd == nil {
		t.Fatal(env.slapdErr)
	}
	return env.slapd
}

func (env *discoveryEnv) discoverer() *Discoverer {
	return NewDiscoverer(DiscoveryOptions{
		Resolver:    env.zone.addr,
		DNSTimeout:  2 * time.Second,
		LDAPTimeout: 2 * time.Second,
		HTTPClient:  env.web.Client(),
	})
}

// ldapSRV publishes an SRV record for domain pointing at target:port, with
// an A record 127.0.0.1 for target.
func (env *discoveryEnv) ldapSRV(t *testing.T, domain string, prio, weight uint16, target string, port int) {
	t.Helper()
	env.zone.addSRV(domain, prio, weight, port, target)
	env.zone.add(t, dns.Fqdn(target)+" 300 IN A 127.0.0.1")
}

func (env *discoveryEnv) serve(path string, body []byte) string {
	env.mu.Lock()
	env.webFiles[path] = body
	env.mu.Unlock()
	return env.web.URL + path
}

func discover(t *testing.T, d *Discoverer, address string, validate ValidateFunc) (*Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := d.Discover(ctx, address, validate)
	if res == nil {
		t.Fatalf("discover %s: nil result, err %v", address, err)
	}
	t.Logf("discover %s: step %s stopped %v err %v", address, res.Step, res.Stopped, err)
	for _, s := range res.Steps {
		t.Logf("  %s %s: note %q err %v", s.Step, s.Name, s.Note, s.Err)
		for _, c := range s.Candidates {
			t.Logf("    %s trusted=%v %s", c.Source, c.Trusted, c.Reason)
		}
	}
	return res, err
}

// wantCerts checks that res decided at step with exactly the given
// certificates.
func wantCerts(t *testing.T, res *Result, step Step, want ...*x509.Certificate) {
	t.Helper()
	if res.Step != step {
		t.Errorf("deciding step %s, want %s", res.Step, step)
	}
	if res.Stopped {
		t.Errorf("stopped, want certificates")
	}
	if len(res.Certs) != len(want) {
		t.Fatalf("%d certificates, want %d", len(res.Certs), len(want))
	}
	for _, w := range want {
		found := false
		for _, c := range res.Certs {
			found = found || c.Equal(w)
		}
		if !found {
			t.Errorf("certificate %s missing", w.Subject.CommonName)
		}
	}
}

func wantNoCerts(t *testing.T, res *Result) {
	t.Helper()
	if len(res.Certs) != 0 {
		t.Fatalf("%d certificates, want none", len(res.Certs))
	}
}

func wantSteps(t *testing.T, res *Result, steps ...Step) {
	t.Helper()
	var got []Step
	for _, s := range res.Steps {
		got = append(got, s.Step)
	}
	if len(got) != len(steps) {
		t.Fatalf("steps %v, want %v", got, steps)
	}
	for i := range got {
		if got[i] != steps[i] {
			t.Fatalf("steps %v, want %v", got, steps)
		}
	}
}

func lastCandidates(res *Result) []Candidate {
	if len(res.Steps) == 0 {
		return nil
	}
	return res.Steps[len(res.Steps)-1].Candidates
}

// TestDiscovery mirrors the ONC DCDT discovery cases (D1–D17) and the
// DirectTrust certificate discovery cases on loopback servers.
func TestDiscovery(t *testing.T) {
	env := newDiscoveryEnv(t, true)
	pki := env.pki
	z := env.zone
	p := func(i int) int {
		if env.slapd == nil {
			return 1
		}
		return env.slapd.ports[i]
	}

	t.Run("D1 DNS address-bound valid", func(t *testing.T) {
		ab := pki.leaf(t, leafOpts{email: "d1@d1.test"})
		z.addCERT("d1.d1.test", dns.CertPKIX, ab.Raw)
		// Background: an invalid domain-bound certificate and an LDAP
		// server that must not be asked.
		z.addCERT("d1.test", dns.CertPKIX, pki.leaf(t, leafOpts{dnsName: "d1.test", expired: true}).Raw)
		env.ldapSRV(t, "d1.test", 0, 0, "ldap.d1.test", env.downPort)
		res, err := discover(t, env.discoverer(), "d1@d1.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, ab)
		wantSteps(t, res, DNSAddress)
		if got := res.Steps[0].Candidates[0].Source; got != "CERT PKIX at d1.d1.test." {
			t.Errorf("source %q", got)
		}
		if z.sawQuery("", "SRV", "_ldap._tcp.d1.test") {
			t.Error("LDAP was looked up after an address-bound DNS certificate was found")
		}
	})

	t.Run("D2 DNS domain-bound valid", func(t *testing.T) {
		db := pki.leaf(t, leafOpts{dnsName: "d2.test"})
		z.addCERT("d2.test", dns.CertPKIX, db.Raw)
		res, err := discover(t, env.discoverer(), "d2@d2.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSDomain, db)
		wantSteps(t, res, DNSAddress, DNSDomain)
		if res.Steps[0].Note != "no CERT records" {
			t.Errorf("address step note %q", res.Steps[0].Note)
		}
	})

	t.Run("D3 LDAP address-bound valid", func(t *testing.T) {
		s := env.needLDAP(t)
		ab := pki.leaf(t, leafOpts{email: "d3@d3.test"})
		s.addEntry(t, "two", "d3", "d3@d3.test", userCert(ab))
		env.ldapSRV(t, "d3.test", 0, 0, "ldap.d3.test", p(0))
		res, err := discover(t, env.discoverer(), "d3@d3.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, LDAPAddress, ab)
		wantSteps(t, res, DNSAddress, DNSDomain, LDAPAddress)
		want := "ldap://ldap.d3.test:" + strconv.Itoa(p(0)) + " cn=d3,dc=two userCertificate;binary"
		if got := lastCandidates(res)[0].Source; got != want {
			t.Errorf("source %q, want %q", got, want)
		}
	})

	t.Run("D4 LDAP domain-bound valid", func(t *testing.T) {
		s := env.needLDAP(t)
		db := pki.leaf(t, leafOpts{dnsName: "d4.test"})
		// userSMIMECertificate as a PKCS#7 certs-only blob, with the CA
		// certificate beside the leaf.
		s.addEntry(t, "one", "d4.test", "d4.test", smimePKCS7(db, pki.ca))
		env.ldapSRV(t, "d4.test", 0, 0, "ldap.d4.test", p(0))
		res, err := discover(t, env.discoverer(), "d4@d4.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, LDAPDomain, db)
		wantSteps(t, res, DNSAddress, DNSDomain, LDAPAddress, LDAPDomain)
		if n := len(lastCandidates(res)); n != 2 {
			t.Errorf("%d candidates, want the leaf and the CA", n)
		}
	})

	t.Run("D5 DNS address-bound expired only: stop", func(t *testing.T) {
		z.addCERT("d5.d5.test", dns.CertPKIX, pki.leaf(t, leafOpts{email: "d5@d5.test", expired: true}).Raw)
		// A valid domain-bound certificate and an LDAP server exist; the
		// stop rule must keep discovery from them (CD-08).
		z.addCERT("d5.test", dns.CertPKIX, pki.leaf(t, leafOpts{dnsName: "d5.test"}).Raw)
		env.ldapSRV(t, "d5.test", 0, 0, "ldap.d5.test", p(0))
		res, err := discover(t, env.discoverer(), "d5@d5.test", pki.validator())
		tcheck(t, err, "discover")
		wantNoCerts(t, res)
		if !res.Stopped {
			t.Error("not stopped")
		}
		wantSteps(t, res, DNSAddress)
		if c := res.Steps[0].Candidates; len(c) != 1 || c[0].Trusted || c[0].Reason != "expired" {
			t.Errorf("candidates %+v", c)
		}
		if z.sawQuery("", "CERT", "d5.test") || z.sawQuery("", "SRV", "_ldap._tcp.d5.test") {
			t.Error("discovery fell back after an untrusted address-bound certificate")
		}
	})

	t.Run("D6 DNS domain-bound expired only: stop", func(t *testing.T) {
		z.addCERT("d6.test", dns.CertPKIX, pki.leaf(t, leafOpts{dnsName: "d6.test", expired: true}).Raw)
		env.ldapSRV(t, "d6.test", 0, 0, "ldap.d6.test", p(0))
		res, err := discover(t, env.discoverer(), "d6@d6.test", pki.validator())
		tcheck(t, err, "discover")
		wantNoCerts(t, res)
		if !res.Stopped {
			t.Error("not stopped")
		}
		wantSteps(t, res, DNSAddress, DNSDomain)
		if z.sawQuery("", "SRV", "_ldap._tcp.d6.test") {
			t.Error("discovery fell back to LDAP")
		}
	})

	t.Run("D7 LDAP address-bound expired only: stop", func(t *testing.T) {
		s := env.needLDAP(t)
		s.addEntry(t, "two", "d7", "d7@d7.test", userCert(pki.leaf(t, leafOpts{email: "d7@d7.test", expired: true})))
		s.addEntry(t, "two", "d7.test", "d7.test", userCert(pki.leaf(t, leafOpts{dnsName: "d7.test"})))
		env.ldapSRV(t, "d7.test", 0, 0, "ldap.d7.test", p(0))
		res, err := discover(t, env.discoverer(), "d7@d7.test", pki.validator())
		tcheck(t, err, "discover")
		wantNoCerts(t, res)
		if !res.Stopped {
			t.Error("not stopped")
		}
		wantSteps(t, res, DNSAddress, DNSDomain, LDAPAddress)
	})

	t.Run("D9 DNS valid among expired", func(t *testing.T) {
		good := pki.leaf(t, leafOpts{email: "d9@d9.test"})
		z.addCERT("d9.d9.test", dns.CertPKIX, pki.leaf(t, leafOpts{email: "d9@d9.test", expired: true}).Raw)
		z.addCERT("d9.d9.test", dns.CertPKIX, good.Raw)
		res, err := discover(t, env.discoverer(), "d9@d9.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, good)
		if n := len(res.Steps[0].Candidates); n != 2 {
			t.Errorf("%d candidates, want 2", n)
		}
	})

	t.Run("D10 primary LDAP down, secondary used", func(t *testing.T) {
		s := env.needLDAP(t)
		ab := pki.leaf(t, leafOpts{email: "d10@d10.test"})
		s.addEntry(t, "one", "d10", "d10@d10.test", smimeCert(ab))
		env.ldapSRV(t, "d10.test", 0, 0, "down.d10.test", env.downPort)
		env.ldapSRV(t, "d10.test", 1, 0, "up.d10.test", p(1))
		res, err := discover(t, env.discoverer(), "d10@d10.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, LDAPAddress, ab)
		want := "ldap://up.d10.test:" + strconv.Itoa(p(1)) + " "
		if got := lastCandidates(res)[0].Source; !strings.HasPrefix(got, want) {
			t.Errorf("source %q, want prefix %q", got, want)
		}
	})

	t.Run("D11 no CERT and no SRV", func(t *testing.T) {
		res, err := discover(t, env.discoverer(), "d11@d11.test", pki.validator())
		tcheck(t, err, "discover")
		wantNoCerts(t, res)
		if res.Stopped {
			t.Error("stopped")
		}
		wantSteps(t, res, DNSAddress, DNSDomain, LDAPAddress, LDAPDomain)
		if n := res.Steps[2].Note; !strings.Contains(n, "no SRV records at _ldap._tcp.d11.test.") {
			t.Errorf("LDAP note %q", n)
		}
	})

	t.Run("D12 the only LDAP server down", func(t *testing.T) {
		env.ldapSRV(t, "d12.test", 0, 0, "ldap.d12.test", env.downPort)
		res, err := discover(t, env.discoverer(), "d12@d12.test", pki.validator())
		wantNoCerts(t, res)
		if err == nil {
			t.Fatal("no error, want the LDAP failure")
		}
		msg := err.Error()
		for _, w := range []string{"d12@d12.test", "ldap-address", "no LDAP server of d12.test could be used", "ldap://ldap.d12.test:" + strconv.Itoa(env.downPort), "refused"} {
			if !strings.Contains(msg, w) {
				t.Errorf("error %q lacks %q", msg, w)
			}
		}
		if res.Steps[2].Err == nil {
			t.Error("LDAP step without error")
		}
	})

	t.Run("D13 no certificates anywhere", func(t *testing.T) {
		env.needLDAP(t)
		env.ldapSRV(t, "d13.test", 0, 0, "ldap.d13.test", p(0))
		res, err := discover(t, env.discoverer(), "d13@d13.test", pki.validator())
		tcheck(t, err, "discover")
		wantNoCerts(t, res)
		wantSteps(t, res, DNSAddress, DNSDomain, LDAPAddress, LDAPDomain)
		if n := res.Steps[3].Note; n != "no entry with a certificate" {
			t.Errorf("note %q", n)
		}
	})

	t.Run("D14 certificate too large for UDP", func(t *testing.T) {
		big := pki.leaf(t, leafOpts{email: "d14@d14.test", extraSANs: 60})
		if len(big.Raw) < 1500 {
			t.Fatalf("certificate of %d bytes is not large", len(big.Raw))
		}
		z.addCERT("d14.d14.test", dns.CertPKIX, big.Raw)
		res, err := discover(t, env.discoverer(), "d14@d14.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, big)
		if !z.sawQuery("udp", "CERT", "d14.d14.test") || !z.sawQuery("tcp", "CERT", "d14.d14.test") {
			t.Error("want a UDP query and its TCP retry")
		}
	})

	t.Run("D15 SRV priority", func(t *testing.T) {
		s := env.needLDAP(t)
		ab := pki.leaf(t, leafOpts{email: "d15@d15.test"})
		s.addEntry(t, "two", "d15", "d15@d15.test", userCert(ab))
		// Listed first and sorting first by name, but of lower priority.
		env.ldapSRV(t, "d15.test", 10, 100, "a-backup.d15.test", p(1))
		env.ldapSRV(t, "d15.test", 0, 0, "z-primary.d15.test", p(0))
		res, err := discover(t, env.discoverer(), "d15@d15.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, LDAPAddress, ab)
		want := "ldap://z-primary.d15.test:" + strconv.Itoa(p(0)) + " "
		if got := lastCandidates(res)[0].Source; !strings.HasPrefix(got, want) {
			t.Errorf("source %q, want prefix %q", got, want)
		}
	})

	t.Run("D16 SRV weight", func(t *testing.T) {
		s := env.needLDAP(t)
		ab := pki.leaf(t, leafOpts{email: "d16@d16.test"})
		s.addEntry(t, "one", "d16", "d16@d16.test", smimePKCS7(ab))
		env.ldapSRV(t, "d16.test", 0, 10, "a-light.d16.test", p(1))
		env.ldapSRV(t, "d16.test", 0, 60, "z-heavy.d16.test", p(0))
		res, err := discover(t, env.discoverer(), "d16@d16.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, LDAPAddress, ab)
		want := "ldap://z-heavy.d16.test:" + strconv.Itoa(p(0)) + " "
		if got := lastCandidates(res)[0].Source; !strings.HasPrefix(got, want) {
			t.Errorf("source %q, want prefix %q", got, want)
		}
	})

	t.Run("D17 revoked and valid", func(t *testing.T) {
		revoked := pki.leaf(t, leafOpts{email: "d17@d17.test"})
		good := pki.leaf(t, leafOpts{email: "d17@d17.test"})
		z.addCERT("d17.d17.test", dns.CertPKIX, revoked.Raw)
		z.addCERT("d17.d17.test", dns.CertPKIX, good.Raw)
		res, err := discover(t, env.discoverer(), "d17@d17.test", pki.validator(revoked))
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, good)
		for _, c := range res.Steps[0].Candidates {
			if c.Cert.Equal(revoked) && (c.Trusted || c.Reason != "revoked") {
				t.Errorf("revoked candidate %+v", c)
			}
		}
	})

	t.Run("address-bound and domain-bound valid: address-bound wins", func(t *testing.T) {
		ab := pki.leaf(t, leafOpts{email: "x@both.test"})
		z.addCERT("x.both.test", dns.CertPKIX, ab.Raw)
		z.addCERT("both.test", dns.CertPKIX, pki.leaf(t, leafOpts{dnsName: "both.test"}).Raw)
		res, err := discover(t, env.discoverer(), "x@both.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, ab)
		wantSteps(t, res, DNSAddress)
	})

	t.Run("several valid: all used", func(t *testing.T) {
		a := pki.leaf(t, leafOpts{email: "m@multi.test"})
		b := pki.leaf(t, leafOpts{email: "m@multi.test"})
		z.addCERT("m.multi.test", dns.CertPKIX, a.Raw)
		z.addCERT("m.multi.test", dns.CertPKIX, b.Raw)
		res, err := discover(t, env.discoverer(), "m@multi.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, a, b)
	})

	t.Run("IPKIX URL", func(t *testing.T) {
		der := pki.leaf(t, leafOpts{email: "u@ipkix.test"})
		pemCert := pki.leaf(t, leafOpts{email: "u@ipkix.test"})
		z.addCERT("u.ipkix.test", certIPKIX, []byte(env.serve("/u.der", der.Raw)))
		z.addCERT("u.ipkix.test", certIPKIX, []byte(env.serve("/u.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pemCert.Raw}))))
		// Skipped: an unknown type and a PGP record.
		z.addCERT("u.ipkix.test", dns.CertPGP, []byte("not for us"))
		res, err := discover(t, env.discoverer(), "u@ipkix.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, der, pemCert)
		if src := res.Steps[0].Candidates[0].Source; !strings.HasPrefix(src, "CERT IPKIX at u.ipkix.test. "+env.web.URL) {
			t.Errorf("source %q", src)
		}
		if n := res.Steps[0].Note; !strings.Contains(n, "skipped CERT type PGP") {
			t.Errorf("note %q", n)
		}
	})

	t.Run("IPKIX URL not found", func(t *testing.T) {
		z.addCERT("v.ipkix.test", certIPKIX, []byte(env.web.URL+"/missing.der"))
		res, err := discover(t, env.discoverer(), "v@ipkix.test", pki.validator())
		wantNoCerts(t, res)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("error %v, want the failed fetch", err)
		}
	})

	t.Run("local part with dots", func(t *testing.T) {
		plain := pki.leaf(t, leafOpts{email: "john.doe@dots.test"})
		z.addCERT("john.doe.dots.test", dns.CertPKIX, plain.Raw)
		res, err := discover(t, env.discoverer(), "john.doe@dots.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, plain)
		if n := res.Steps[0].Name; n != "john.doe.dots.test." {
			t.Errorf("name %q", n)
		}

		// Published in the RFC 1034 mailbox form only: found at the
		// second name.
		escaped := pki.leaf(t, leafOpts{email: "jane.roe@dots.test"})
		z.addCERT(`jane\.roe.dots.test`, dns.CertPKIX, escaped.Raw)
		res, err = discover(t, env.discoverer(), "jane.roe@dots.test", pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, escaped)
		if n := res.Steps[0].Name; n != `jane.roe.dots.test., jane\.roe.dots.test.` {
			t.Errorf("name %q", n)
		}
	})

	t.Run("quoted local part", func(t *testing.T) {
		c := pki.leaf(t, leafOpts{email: `"a b"@quoted.test`})
		z.addCERT(`a\ b.quoted.test`, dns.CertPKIX, c.Raw)
		res, err := discover(t, env.discoverer(), `"a b"@quoted.test`, pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, DNSAddress, c)
	})
}

func TestDiscoverDNSDown(t *testing.T) {
	pki := newTestPKI(t)
	// A UDP port with nothing behind it: queries fail at once.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	addr := pc.LocalAddr().String()
	pc.Close()
	d := NewDiscoverer(DiscoveryOptions{Resolver: addr, DNSTimeout: time.Second})
	res, err := discover(t, d, "bob@down.test", pki.validator())
	if err == nil {
		t.Fatal("no error with the DNS server down")
	}
	wantNoCerts(t, res)
	for _, s := range res.Steps {
		if s.Err == nil {
			t.Errorf("step %s without error", s.Step)
		}
	}
	// Failures are not cached.
	res2, err := discover(t, d, "bob@down.test", pki.validator())
	if err == nil || res2 == res {
		t.Error("failed discovery was cached")
	}
}

func TestDiscoverInvalid(t *testing.T) {
	d := NewDiscoverer(DiscoveryOptions{Resolver: "127.0.0.1:1"})
	v := func(context.Context, *x509.Certificate, []*x509.Certificate, string) (bool, string) { return true, "" }
	for _, a := range []string{"", "bob", "@b.example", "bob@", "bob@b..example", "bob@bad_domain!", `"unterminated@b.example`, "bob@exämple.test"} {
		if res, err := d.Discover(context.Background(), a, v); err == nil || res != nil {
			t.Errorf("%q: result %v, err %v; want an error", a, res, err)
		}
	}
	if _, err := d.Discover(context.Background(), "bob@b.example", nil); err == nil {
		t.Error("nil validate accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Discover(ctx, "bob@b.example", v); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}

func TestAddressNames(t *testing.T) {
	for _, tc := range []struct {
		local string
		want  []string
	}{
		{"bob", []string{"bob.b.example."}},
		{"Bob.Smith", []string{"Bob.Smith.b.example.", `Bob\.Smith.b.example.`}},
		{"a b", []string{`a\ b.b.example.`}},
		{`we"ird;(x)@$`, []string{`we\"ird\;\(x\)\@$.b.example.`}},
		{"tab\there", []string{`tab\009here.b.example.`}},
		{".lead", []string{`\.lead.b.example.`}},
		{"a..b", []string{`a\.\.b.b.example.`}},
		{strings.Repeat("x", 64), nil},
	} {
		got, err := addressNames(tc.local, "b.example")
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: %q, want an error", tc.local, got)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: %q %v, want %q", tc.local, got, err, tc.want)
		}
		for _, n := range got {
			if _, ok := dns.IsDomainName(n); !ok {
				t.Errorf("%q: %q is not a domain name", tc.local, n)
			}
		}
	}
}

func TestOrderSRV(t *testing.T) {
	srv := func(prio, weight uint16, target string) *dns.SRV {
		return &dns.SRV{Priority: prio, Weight: weight, Target: target, Port: 389}
	}
	got := orderSRV([]*dns.SRV{
		srv(1, 0, "e."), srv(0, 10, "b."), srv(0, 50, "c."), srv(0, 10, "a."), srv(2, 100, "f."), srv(0, 0, "d."),
	})
	var names []string
	for _, s := range got {
		names = append(names, s.Target)
	}
	if want := "c. a. b. d. e. f."; strings.Join(names, " ") != want {
		t.Errorf("order %q, want %q", names, want)
	}
}

// hungListener accepts TCP connections and never answers, like an LDAP
// server that hangs.
func hungListener(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}

func TestDiscoverHungServers(t *testing.T) {
	env := newDiscoveryEnv(t, true)
	hung := hungListener(t)

	t.Run("hung primary LDAP: next target after the time-out", func(t *testing.T) {
		s := env.needLDAP(t)
		ab := env.pki.leaf(t, leafOpts{email: "h@hung.test"})
		s.addEntry(t, "two", "h", "h@hung.test", userCert(ab))
		env.ldapSRV(t, "hung.test", 0, 0, "hung.hung.test", hung)
		env.ldapSRV(t, "hung.test", 5, 0, "up.hung.test", s.ports[0])
		d := NewDiscoverer(DiscoveryOptions{Resolver: env.zone.addr, LDAPTimeout: 300 * time.Millisecond})
		res, err := discover(t, d, "h@hung.test", env.pki.validator())
		tcheck(t, err, "discover")
		wantCerts(t, res, LDAPAddress, ab)
	})

	t.Run("context ends while LDAP hangs", func(t *testing.T) {
		env.ldapSRV(t, "hung2.test", 0, 0, "hung.hung2.test", hung)
		d := NewDiscoverer(DiscoveryOptions{Resolver: env.zone.addr, LDAPTimeout: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		res, err := d.Discover(ctx, "h@hung2.test", env.pki.validator())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want the context's", err)
		}
		if res == nil || len(res.Certs) != 0 {
			t.Errorf("result %+v", res)
		}
	})

	t.Run("DNS server not answering", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		tcheck(t, err, "listen")
		defer pc.Close()
		d := NewDiscoverer(DiscoveryOptions{Resolver: pc.LocalAddr().String(), DNSTimeout: 100 * time.Millisecond})
		res, err := discover(t, d, "bob@silent.test", env.pki.validator())
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("error %v, want a time-out", err)
		}
		wantNoCerts(t, res)
	})
}

// TestDiscoverConcurrent runs discoveries in parallel on one Discoverer, for
// the race detector.
func TestDiscoverConcurrent(t *testing.T) {
	env := newDiscoveryEnv(t, false)
	var addrs []string
	for i := range 4 {
		a := "u" + strconv.Itoa(i) + "@conc.test"
		env.zone.addCERT("u"+strconv.Itoa(i)+".conc.test", dns.CertPKIX, env.pki.leaf(t, leafOpts{email: a}).Raw)
		addrs = append(addrs, a)
	}
	d := env.discoverer()
	v := env.pki.validator()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				a := addrs[(g+i)%len(addrs)]
				var res *Result
				var err error
				if i%2 == 0 {
					res, err = d.DiscoverKeyed(context.Background(), a, "k", v)
				} else {
					res, err = d.Discover(context.Background(), a, v)
				}
				if err != nil || len(res.Certs) != 1 {
					t.Errorf("%s: %v", a, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
