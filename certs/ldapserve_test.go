package certs

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/internal/connlimit"
)

// startLDAPServer serves src over LDAP on loopback until the test ends.
func startLDAPServer(t *testing.T, src CertSource) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveLDAP(t, src, l)
	return l.Addr().String()
}

// serveLDAP serves src over LDAP on l until the test ends, or until the
// returned stop, which returns Serve's error.
func serveLDAP(t *testing.T, src CertSource, l net.Listener) (stop func() error) {
	t.Helper()
	s, err := NewLDAPServer(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			serveErr = <-done
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("ldap server: %v", err)
		}
	})
	return stop
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

// TestLDAPServeRelay: the LDAP server behind a listener of ours (one
// under connection limits here) answers a client that half-closes after
// its request, frees each connection's place when its client goes, and
// its stop closes the connections still open and returns.
func TestLDAPServeRelay(t *testing.T) {
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := connlimit.New(nl, connlimit.Options{Name: "ldap", Max: 10, PerIP: 3,
		Busy: LDAPNoticeOfDisconnection(ldap.LDAPResultBusy, "Too many connections, try again later")})
	stop := serveLDAP(t, &memSource{domains: []string{"b.example"}}, cl)
	addr := nl.Addr().String()

	// A bind, then the client's half-close: the answer still comes, then
	// the end.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	bind := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	bind.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 1, "messageID"))
	req := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationBindRequest, nil, "BindRequest")
	req.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 3, "version"))
	req.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "name"))
	req.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, "", "simple"))
	bind.AppendChild(req)
	if _, err := c.Write(bind.Bytes()); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	p, err := ber.ReadPacket(c)
	if err != nil {
		t.Fatalf("bind response after the half-close: %v", err)
	}
	if err := ldap.GetLDAPError(p); err != nil || p.Children[1].Tag != ldap.ApplicationBindResponse {
		t.Fatalf("bind response %v: %v", p.Children[1].Tag, err)
	}
	if _, err := ber.ReadPacket(c); err != io.EOF {
		t.Errorf("after the answer: %v, want the end", err)
	}
	c.Close()
	// Its place is freed just after the server's end of it is closed.
	for deadline := time.Now().Add(10 * time.Second); cl.Open() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections held after the first one ended", cl.Open())
		}
	}

	// Three clients fill the address's share, the fourth is told busy.
	var clients []*ldap.Conn
	for i := range 3 {
		lc, err := ldap.DialURL("ldap://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		defer lc.Close()
		lc.SetTimeout(10 * time.Second)
		if err := lc.UnauthenticatedBind(""); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		clients = append(clients, lc)
	}
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.SetDeadline(time.Now().Add(10 * time.Second))
	if p, err := ber.ReadPacket(busy); err != nil || !ldap.IsErrorWithCode(ldap.GetLDAPError(p), ldap.LDAPResultBusy) {
		t.Fatalf("over the limit: %v", err)
	}

	// The server stops: the clients' connections are closed, their
	// places freed.
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for i, lc := range clients {
		if err := lc.UnauthenticatedBind(""); err == nil {
			t.Errorf("client %d still served after the stop", i)
		}
	}
	if open := cl.Open(); open != 0 {
		t.Errorf("%d connections held after the stop", open)
	}
}

// TestLDAPNoticeOfDisconnection: the busy answer is the RFC 4511 notice,
// as go-ldap decodes it.
func TestLDAPNoticeOfDisconnection(t *testing.T) {
	b := LDAPNoticeOfDisconnection(ldap.LDAPResultBusy, "Too many connections, try again later")
	p, err := ber.ReadPacket(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := p.Children[0].Value.(int64); id != 0 || len(p.Children) != 2 {
		t.Fatalf("messageID %v, %d children", p.Children[0].Value, len(p.Children))
	}
	r := p.Children[1]
	if r.ClassType != ber.ClassApplication || r.Tag != ldap.ApplicationExtendedResponse || len(r.Children) != 4 {
		t.Fatalf("not an ExtendedResponse: class %v tag %v", r.ClassType, r.Tag)
	}
	err = ldap.GetLDAPError(p)
	var le *ldap.Error
	if !errors.As(err, &le) || le.ResultCode != ldap.LDAPResultBusy || le.MatchedDN != "" ||
		!strings.Contains(err.Error(), "Too many connections, try again later") {
		t.Errorf("decoded as %v", err)
	}
	if n := r.Children[3]; n.ClassType != ber.ClassContext || n.Tag != 10 || n.Data.String() != "1.3.6.1.4.1.1466.20036" {
		t.Errorf("responseName %q", n.Data.String())
	}
}
