package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/config"
)

// TestLDAPListener: with [listen] ldap, hisp serve hosts the store's
// certificates over LDAP, read here by ldapsearch, and its DNS listener
// announces the server as _ldap._tcp.DOMAIN.
func TestLDAPListener(t *testing.T) {
	if _, err := exec.LookPath("ldapsearch"); err != nil {
		t.Fatal("ldapsearch not found: `make test-deps` installs ldap-utils")
	}
	b := newInstance(t, "clinic.example", "bob")
	b.start(t, "", nil, func(c *config.Config) {
		c.Listen.LDAP = "127.0.0.1:0"
		c.Listen.DNS = "127.0.0.1:0"
	})
	addr := b.addrs["ldap"]
	if addr == "" {
		t.Fatalf("no ldap listener printed: %v", b.addrs)
	}

	cmd := exec.Command("ldapsearch", "-o", "ldif-wrap=no", "-LLL", "-x", "-H", "ldap://"+addr, "-b", "dc=clinic,dc=example",
		"(mail="+b.user+")", "userCertificate;binary")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("userCertificate;binary:: "+base64.StdEncoding.EncodeToString(b.userID.Cert.Raw))) {
		t.Fatalf("ldapsearch: %v\n%s", err, out)
	}

	m := new(dns.Msg)
	m.SetQuestion("_ldap._tcp.clinic.example.", dns.TypeSRV)
	in, err := dns.Exchange(m, b.addrs["dns"])
	if err != nil || len(in.Answer) != 1 {
		t.Fatalf("SRV: %v %v", in, err)
	}
	host, port, _ := net.SplitHostPort(addr)
	if srv := in.Answer[0].(*dns.SRV); !strings.EqualFold(srv.Target, host+".") || strconv.Itoa(int(srv.Port)) != port {
		t.Errorf("SRV %v, want %s", srv, addr)
	}
}

// ldapClient opens an LDAP connection to addr from the loopback address
// local, bound anonymously.
func ldapClient(t *testing.T, local, addr string) (*ldap.Conn, error) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := ldap.DialURL("ldap://"+addr, ldap.DialWithDialer(d))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(10 * time.Second)
	if err := c.UnauthenticatedBind(""); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// searchCert reads the certificate of mail under base over c.
func searchCert(c *ldap.Conn, base, mail string) ([]byte, error) {
	res, err := c.Search(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 10, false,
		"(mail="+ldap.EscapeFilter(mail)+")", []string{"userCertificate;binary"}, nil))
	if err != nil {
		return nil, err
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("%d entries", len(res.Entries))
	}
	return res.Entries[0].GetRawAttributeValue("userCertificate;binary"), nil
}

// ldapMetrics scrapes the instance's /metrics.
func ldapMetrics(t *testing.T, in *instance) scrape {
	t.Helper()
	resp, err := http.Get("http://" + in.addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return parseMetrics(t, string(body))
}

// TestLDAPConnectionLimits: the LDAP listener is under [limits] as the
// others are: one client address holding its share of connections gets
// a Notice of Disconnection with resultCode busy on the next one, while
// other addresses are still answered; /metrics counts the refusals, and
// the places come free when the clients close (the relay to the LDAP
// library holds nothing after them).
func TestLDAPConnectionLimits(t *testing.T) {
	in := newInstance(t, "clinic.example", "bob")
	in.start(t, "", nil, func(c *config.Config) {
		c.Listen.LDAP = "127.0.0.1:0"
		c.Limits.ConnectionsPerIP = 3
	})
	addr, base := in.addrs["ldap"], "dc=clinic,dc=example"

	// Three clients from 127.0.0.1 search and stay connected.
	var held []*ldap.Conn
	for i := range 3 {
		c, err := ldapClient(t, "127.0.0.1", addr)
		if err != nil {
			t.Fatalf("client %d within the limit: %v", i, err)
		}
		defer c.Close()
		held = append(held, c)
		if der, err := searchCert(c, base, in.user); err != nil || !bytes.Equal(der, in.userID.Cert.Raw) {
			t.Fatalf("search %d: %v", i, err)
		}
	}

	// The fourth gets the Notice of Disconnection, then the end.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	p, err := ber.ReadPacket(raw)
	if err != nil {
		t.Fatalf("read the notice: %v", err)
	}
	if id, ok := p.Children[0].Value.(int64); !ok || id != 0 || len(p.Children) != 2 ||
		p.Children[1].ClassType != ber.ClassApplication || p.Children[1].Tag != ldap.ApplicationExtendedResponse {
		t.Fatalf("not an unsolicited extended response: %s", hex.EncodeToString(p.Bytes()))
	}
	if err := ldap.GetLDAPError(p); !ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) || !strings.Contains(err.Error(), "Too many connections") {
		t.Errorf("notice: %v", err)
	}
	if name := p.Children[1].Children[3]; name.ClassType != ber.ClassContext || name.Tag != 10 || name.Data.String() != "1.3.6.1.4.1.1466.20036" {
		t.Errorf("responseName %q", name.Data.String())
	}
	if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the notice: %d bytes, %v", n, err)
	}
	// go-ldap, as a partner's client, fails the bind (it takes the notice
	// for a message it did not expect and the connection as closed).
	if c, err := ldapClient(t, "127.0.0.1", addr); err == nil {
		c.Close()
		t.Error("a client over the limit was served")
	} else {
		t.Logf("go-ldap over the limit: %v", err)
	}

	// Another address is served meanwhile.
	other, err := ldapClient(t, "127.0.0.2", addr)
	if err != nil {
		t.Fatalf("client from 127.0.0.2: %v", err)
	}
	if der, err := searchCert(other, base, in.user); err != nil || !bytes.Equal(der, in.userID.Cert.Raw) {
		t.Fatalf("search from 127.0.0.2: %v", err)
	}
	other.Close()

	s := ldapMetrics(t, in)
	s.want(t, `hisp_connections_refused_total{listener="ldap",reason="per_ip"}`, 2)
	if l := s[`hisp_connections_limit{listener="ldap"}`]; l == 0 || l != s[`hisp_connections_limit{listener="smtp"}`] {
		t.Errorf("LDAP connection limit %v, the backbone's %v", l, s[`hisp_connections_limit{listener="smtp"}`])
	}
	if open := s[`hisp_connections_open{listener="ldap"}`]; open < 3 || open > 4 {
		t.Errorf("open LDAP connections %v, want 3 (4 while 127.0.0.2's close is on its way)", open)
	}

	// The clients close: their places come free.
	for _, c := range held {
		c.Close()
	}
	for i := 0; ; i++ {
		open := ldapMetrics(t, in)[`hisp_connections_open{listener="ldap"}`]
		if open == 0 {
			break
		}
		if i == 500 {
			t.Fatalf("open LDAP connections %v after every client closed", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := ldapClient(t, "127.0.0.1", addr)
	if err != nil {
		t.Fatalf("client after the others closed: %v", err)
	}
	defer c.Close()
	if _, err := searchCert(c, base, in.user); err != nil {
		t.Fatalf("search after the others closed: %v", err)
	}
}
