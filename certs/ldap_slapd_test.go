package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/hisp-project/hisp/internal/testbuf"
)

// testSlapd is a real OpenLDAP server for the LDAP discovery tests, listening
// on two loopback ports (so that SRV tests can tell servers apart), with the
// databases dc=one and dc=two of testdata/slapd.conf.
type testSlapd struct {
	ports [2]int
	cmd   *exec.Cmd
	log   *testbuf.Buffer
}

// lookSlapd returns the path of slapd, or an error saying how to get it: the
// LDAP tests need a real server, and fail (not skip) without one.
func lookSlapd() (string, error) {
	if p, err := exec.LookPath("slapd"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/slapd"); err == nil {
		return "/usr/sbin/slapd", nil
	}
	return "", errors.New("slapd not found (looked in PATH and /usr/sbin/slapd): the LDAP discovery tests need a real OpenLDAP server; " +
		"`make test` installs it (scripts/test-deps.sh: apt-get install slapd ldap-utils)")
}

// freePort returns a loopback TCP port that was free a moment ago. slapd
// cannot listen on port 0, so the port is chosen here.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startSlapd(t testing.TB) *testSlapd {
	t.Helper()
	bin, err := lookSlapd()
	tcheck(t, err, "slapd")
	tmpl, err := os.ReadFile("testdata/slapd.conf")
	tcheck(t, err, "read slapd.conf")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		for _, sub := range []string{"one", "two"} {
			tcheck(t, os.Mkdir(filepath.Join(dir, sub), 0o700), "mkdir")
		}
		conf := strings.ReplaceAll(string(tmpl), "@DIR@", dir)
		if _, err := os.Stat("/usr/lib/ldap/back_mdb.so"); err != nil {
			// Not Debian's modular build: mdb is compiled in.
			conf = strings.ReplaceAll(conf, "modulepath /usr/lib/ldap\nmoduleload back_mdb\n", "")
		}
		confPath := filepath.Join(dir, "slapd.conf")
		tcheck(t, os.WriteFile(confPath, []byte(conf), 0o600), "write slapd.conf")

		s := &testSlapd{ports: [2]int{freePort(t), freePort(t)}, log: &testbuf.Buffer{}}
		urls := fmt.Sprintf("ldap://127.0.0.1:%d/ ldap://127.0.0.1:%d/", s.ports[0], s.ports[1])
		// -d 0: stay in the foreground, so the test owns the process.
		s.cmd = exec.Command(bin, "-f", confPath, "-h", urls, "-d", "0")
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start slapd: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- s.cmd.Wait() }()
		t.Cleanup(func() {
			s.cmd.Process.Kill()
			<-exited
		})
		if err := s.waitReady(exited); err != nil {
			lastErr = err
			s.cmd.Process.Kill()
			continue // probably a port taken meanwhile: try others
		}
		s.loadBase(t)
		return s
	}
	t.Fatalf("slapd did not start: %v", lastErr)
	return nil
}

// waitReady polls until both ports accept an anonymous bind, or slapd
// exits.
func (s *testSlapd) waitReady(exited chan error) error {
	deadline := time.Now().Add(15 * time.Second)
	for _, port := range s.ports {
		for {
			c, err := ldap.DialURL("ldap://127.0.0.1:" + strconv.Itoa(port))
			if err == nil {
				err = c.UnauthenticatedBind("")
				c.Close()
				if err == nil {
					break
				}
			}
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("slapd exited: %v\n%s", err, s.log.String())
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("slapd not answering on port %d: %v\n%s", port, err, s.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// admin connects as the rootdn of suffix ("one" or "two").
func (s *testSlapd) admin(t testing.TB, suffix string) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL("ldap://127.0.0.1:" + strconv.Itoa(s.ports[0]))
	tcheck(t, err, "dial slapd")
	tcheck(t, c.Bind("cn=admin,dc="+suffix, "secret"), "bind as admin")
	return c
}

func (s *testSlapd) loadBase(t testing.TB) {
	t.Helper()
	for _, sfx := range []string{"one", "two"} {
		c := s.admin(t, sfx)
		req := ldap.NewAddRequest("dc="+sfx, nil)
		req.Attribute("objectClass", []string{"dcObject", "organization"})
		req.Attribute("dc", []string{sfx})
		req.Attribute("o", []string{sfx})
		tcheck(t, c.Add(req), "add dc="+sfx)
		c.Close()
	}
}

// ldapValue is one certificate attribute value of a test entry.
type ldapValue struct {
	attr  string // "userCertificate;binary" or "userSMIMECertificate"
	value []byte
}

// addEntry adds an inetOrgPerson with the given mail and certificate values
// under dc=<suffix>.
func (s *testSlapd) addEntry(t testing.TB, suffix, cn, mail string, values ...ldapValue) {
	t.Helper()
	c := s.admin(t, suffix)
	defer c.Close()
	req := ldap.NewAddRequest("cn="+ldap.EscapeDN(cn)+",dc="+suffix, nil)
	req.Attribute("objectClass", []string{"inetOrgPerson"})
	req.Attribute("cn", []string{cn})
	req.Attribute("sn", []string{cn})
	req.Attribute("mail", []string{mail})
	byAttr := map[string][]string{}
	var order []string
	for _, v := range values {
		if _, ok := byAttr[v.attr]; !ok {
			order = append(order, v.attr)
		}
		byAttr[v.attr] = append(byAttr[v.attr], string(v.value))
	}
	for _, a := range order {
		req.Attribute(a, byAttr[a])
	}
	tcheck(t, c.Add(req), "add entry "+cn)
}

func userCert(c *x509.Certificate) ldapValue {
	return ldapValue{"userCertificate;binary", c.Raw}
}

func smimeCert(c *x509.Certificate) ldapValue {
	return ldapValue{"userSMIMECertificate", c.Raw}
}

func smimePKCS7(certs ...*x509.Certificate) ldapValue {
	return ldapValue{"userSMIMECertificate", certsOnlyPKCS7(certs...)}
}
