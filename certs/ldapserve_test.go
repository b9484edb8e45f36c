package certs

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startLDAPServer serves src over LDAP on loopback until the test ends.
func startLDAPServer(t *testing.T, src CertSource) string {
	t.Helper()
	s, err := NewLDAPServer(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, addr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ldap server: %v", err)
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case err := <-done:
			t.Fatalf("ldap server ended: %v", err)
		default:
		}
		if i > 200 {
			t.Fatalf("ldap server not listening: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noCERT hides a source's certificates from DNS, so that discovery must
// use LDAP.
type noCERT struct{ CertSource }

func (noCERT) Certificates(context.Context, string) ([][]byte, error) { return nil, nil }

// TestLDAPHosting: the local certificates are hosted over LDAP with the SRV
// record in the published zone. hisp's own discovery, with no CERT records
// to find, finds the address-bound certificate by the LDAP address step and
// a domain-bound one for an address without its own; ldapsearch reads the
// RootDSE and the userCertificate;binary attribute; a bind with credentials
// is refused and nothing is listed without a mail filter.
func TestLDAPHosting(t *testing.T) {
	pki := newTestPKI(t)
	src := &memSource{domains: []string{"b.example"}, certs: map[string][][]byte{}}
	bob := pki.leaf(t, leafOpts{email: "bob@b.example"})
	org := pki.leaf(t, leafOpts{dnsName: "b.example"})
	src.add("bob.b.example", bob)
	src.add("b.example", org)
	ldapAddr := startLDAPServer(t, src)
	host, portStr, _ := net.SplitHostPort(ldapAddr)
	port, _ := strconv.Atoi(portStr)

	pc, l := listenDNSPair(t)
	p := NewPublisher(noCERT{src}, PublisherOptions{LDAPTarget: host, LDAPPort: uint16(port)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, pc, l) }()
	t.Cleanup(func() { cancel(); <-done })

	// The SRV record, as a partner's resolver sees it.
	m := new(dns.Msg)
	m.SetQuestion("_ldap._tcp.b.example.", dns.TypeSRV)
	var in *dns.Msg
	var err error
	for i := 0; i < 100; i++ {
		if in, err = dns.Exchange(m, pc.LocalAddr().String()); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || len(in.Answer) != 1 {
		t.Fatalf("SRV: %v %v", in, err)
	}
	if srv := in.Answer[0].(*dns.SRV); srv.Target != host+"." || int(srv.Port) != port {
		t.Fatalf("SRV %v, want %s:%d", srv, host, port)
	}

	// hisp's discovery, over DNS without CERT records, then LDAP.
	d := NewDiscoverer(DiscoveryOptions{Resolver: pc.LocalAddr().String()})
	res, err := d.Discover(context.Background(), "bob@b.example", pki.validator())
	if err != nil {
		t.Fatal(err)
	}
	wantCerts(t, res, LDAPAddress, bob)
	res, err = d.Discover(context.Background(), "alice@b.example", pki.validator())
	if err != nil {
		t.Fatal(err)
	}
	wantCerts(t, res, LDAPDomain, org)

	// ldapsearch, as another implementation reads it.
	if _, err := exec.LookPath("ldapsearch"); err != nil {
		t.Fatal("ldapsearch not found: `make test-deps` installs ldap-utils")
	}
	url := "ldap://" + ldapAddr
	out := ldapsearch(t, 0, "-x", "-H", url, "-b", "", "-s", "base", "namingContexts")
	if !strings.Contains(out, "namingContexts: dc=b,dc=example") {
		t.Errorf("RootDSE:\n%s", out)
	}
	out = ldapsearch(t, 0, "-x", "-H", url, "-b", "dc=b,dc=example", "(mail=Bob@B.example)", "userCertificate;binary")
	if !strings.Contains(out, "dn: mail=bob@b.example,dc=b,dc=example") ||
		!strings.Contains(strings.ReplaceAll(out, "\n ", ""), "userCertificate;binary:: "+base64.StdEncoding.EncodeToString(bob.Raw)) {
		t.Errorf("bob's entry:\n%s", out)
	}
	if out := ldapsearch(t, 0, "-x", "-H", url, "-b", "dc=b,dc=example", "(objectClass=*)"); strings.Contains(out, "dn: mail=") {
		t.Errorf("the directory was listed:\n%s", out)
	}
	if out := ldapsearch(t, 32, "-x", "-H", url, "-b", "dc=c,dc=example", "(mail=bob@c.example)"); !strings.Contains(out, "No such object") {
		t.Errorf("another domain:\n%s", out)
	}
	if out := ldapsearch(t, 49, "-x", "-H", url, "-D", "cn=admin,dc=b,dc=example", "-w", "secret", "-b", "dc=b,dc=example", "(mail=bob@b.example)"); !strings.Contains(out, "Invalid credentials") {
		t.Errorf("bind with credentials:\n%s", out)
	}
}

// ldapsearch runs ldapsearch and checks its exit code.
func ldapsearch(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	cmd := exec.Command("ldapsearch", append([]string{"-o", "ldif-wrap=no", "-LLL"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantCode {
		t.Fatalf("ldapsearch %v: exit %d, want %d\n%s", args, code, wantCode, out.String())
	}
	return out.String()
}
