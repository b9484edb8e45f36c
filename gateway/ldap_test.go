package gateway

import (
	"bytes"
	"encoding/base64"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"

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
