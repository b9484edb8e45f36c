package main

import (
	"context"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/certs/devca"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/store"
)

// startCheckedHISP runs a hisp for domain in dir with every listener a
// partner uses (backbone SMTP, DNS, LDAP, admin for the CRL) on loopback
// ports, and returns their addresses by listener name.
func startCheckedHISP(t *testing.T, dir, domain string) map[string]string {
	t.Helper()
	cfg := config.Default()
	cfg.Data = dir
	cfg.Hostname = "hisp." + domain
	cfg.Listen = config.Listen{SMTP: "127.0.0.1:0", Submission: "127.0.0.1:0", IMAP: "127.0.0.1:0",
		DNS: "127.0.0.1:0", Admin: "127.0.0.1:0", LDAP: "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	var out testbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- gateway.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), &out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "hisp ready"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hisp did not start:\n%s", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("hisp ended: %v\n%s", err, out.String())
		default:
		}
	}
	addrs := map[string]string{}
	re := regexp.MustCompile(`(?m)^  (\w+) \(.*\): (?:https?://)?([0-9.:]+)/?$`)
	for _, m := range re.FindAllStringSubmatch(out.String(), -1) {
		addrs[m[1]] = m[2]
	}
	for _, n := range []string{"smtp", "dns", "ldap", "admin"} {
		if addrs[n] == "" {
			t.Fatalf("no %s listener printed:\n%s", n, out.String())
		}
	}
	return addrs
}

// hidingSource publishes a data directory's certificates like hisp's own
// DNS listener, except at the names in hide: a zone hosted elsewhere from
// which a record was removed.
type hidingSource struct {
	st   *store.Store
	hide map[string]bool
}

func (h hidingSource) Domains(ctx context.Context) ([]string, error) {
	ds, err := h.st.Domains(ctx)
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out, err
}

func (h hidingSource) Certificates(ctx context.Context, name string) ([][]byte, error) {
	if h.hide[name] {
		return nil, nil
	}
	ds, err := h.Domains(ctx)
	if err != nil {
		return nil, err
	}
	owner := certs.OwnerOfName(name, ds)
	if owner == "" {
		return nil, nil
	}
	list, err := h.st.Certificates(ctx, store.CertFilter{Owner: owner})
	var out [][]byte
	for _, c := range list {
		if time.Now().Before(c.NotAfter) {
			out = append(out, c.DER)
		}
	}
	return out, err
}

// checkLines runs hisp check and returns its exit code and output.
func checkLines(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, out, stderr := runCLI(t, nil, append([]string{"check"}, args...)...)
	if stderr != "" {
		t.Logf("stderr: %s", stderr)
	}
	return code, out
}

// wantLine asserts that out has a line starting with prefix (status and
// check name) that contains each of parts.
func wantLine(t *testing.T, out, prefix string, parts ...string) {
	t.Helper()
lines:
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		return
	}
	t.Errorf("no line %q... with %q in:\n%s", prefix, parts, out)
}

// TestCheck: hisp check passes on a hisp set up like the sandbox (local CA,
// an address-bound and an organization-bound certificate, DNS, LDAP, CRL,
// STARTTLS), from the server and from outside, and fails with the line
// that names the problem when a DNS record is removed, when a certificate's
// CRL is unreachable and when a certificate expired or is about to.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	const domain = "hospital.example"
	pwFile := filepath.Join(dir, "pw.txt")
	if err := os.WriteFile(pwFile, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := startCheckedHISP(t, dir, domain)
	crl := "http://" + addrs["admin"]
	for _, args := range [][]string{
		{"domain", "add", domain, data},
		{"address", "add", "alice@" + domain, "--password-file", pwFile, data},
		{"cert", "issue", "alice@" + domain, "--crl-url", crl, data},
		{"cert", "issue", domain, "--crl-url", crl, data},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	base := []string{domain, "--resolver", addrs["dns"], "--backbone", addrs["smtp"]}

	// On the server: everything passes.
	code, out := checkLines(t, append(base, data)...)
	if code != 0 || strings.Contains(out, "FAIL") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantLine(t, out, "SKIP mx:", "--backbone")
	wantLine(t, out, "PASS backbone "+addrs["smtp"]+":", "EHLO")
	wantLine(t, out, "PASS starttls "+addrs["smtp"]+":", "TLS", "not verified")
	wantLine(t, out, "PASS dns-cert address alice@"+domain+":", "1 certificate(s) at alice."+domain+".", "as the data directory holds")
	wantLine(t, out, "PASS dns-cert domain "+domain+":", "1 certificate(s) at "+domain+".")
	wantLine(t, out, "PASS dns-tcp:", "CERT record(s) at alice."+domain+". over TCP too")
	wantLine(t, out, "PASS ldap-srv:", "_ldap._tcp."+domain+". announces "+addrs["ldap"])
	wantLine(t, out, "PASS ldap address alice@"+domain+":", "ldap://"+addrs["ldap"])
	wantLine(t, out, "PASS ldap domain "+domain+":", "1 certificate(s)")
	wantLine(t, out, "PASS published:", "2 certificate(s): 1 address-bound (alice@"+domain+"), 1 domain-bound")
	wantLine(t, out, "PASS cert alice@"+domain+" ", "binding", "address-bound")
	for _, rule := range []string{"binding", "key usage", "key size", "chain", "crl", "expiry"} {
		if n := regexp.MustCompile(`(?m)^PASS cert \S+ [0-9a-f]{8} `+rule+`:`).FindAllStringIndex(out, -1); len(n) != 2 {
			t.Errorf("%d PASS lines for rule %s, want 2 (one per certificate):\n%s", len(n), rule, out)
		}
	}
	wantLine(t, out, "PASS cert alice@"+domain, "crl: reachable, signed by the issuer and current", crl+"/crl/"+domain+".crl")
	wantLine(t, out, "PASS loopback alice@"+domain+" ", "opened with the domain's key", "verified and trusted")
	wantLine(t, out, "PASS loopback "+domain+" ")
	if !strings.Contains(out, "0 failed, 1 skipped") {
		t.Errorf("summary:\n%s", out)
	}
	// --strict: the skipped MX check fails the run.
	if code, _ := checkLines(t, append(base, data, "--strict")...); code != 1 {
		t.Errorf("--strict with a skip: exit %d, want 1", code)
	}

	// From outside (no data directory): the address and the anchor are
	// given, the loopback probe is skipped and says why.
	var caPEM strings.Builder
	if code, _, stderr := runCLI(t, nil, "cert", "ca", domain, data); code != 0 {
		t.Fatal(stderr)
	} else {
		_, caOut, _ := runCLI(t, nil, "cert", "ca", domain, data)
		caPEM.WriteString(caOut)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(caPEM.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	nowhere := "--data=" + filepath.Join(t.TempDir(), "none")
	code, out = checkLines(t, append(base, "--address", "alice@"+domain, "--anchor", caFile, nowhere)...)
	if code != 0 {
		t.Fatalf("from outside: exit %d:\n%s", code, out)
	}
	wantLine(t, out, "PASS dns-cert address alice@"+domain+":", "1 certificate(s)")
	wantLine(t, out, "PASS cert alice@"+domain+" ", "chain")
	wantLine(t, out, "SKIP loopback:", "no data directory at", "runs on the server")
	if _, err := os.Stat(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("hisp check made a data directory")
	}
	// From outside without an anchor: chain and CRL are skipped, not failed.
	code, out = checkLines(t, append(base, nowhere)...)
	if code != 0 {
		t.Fatalf("from outside, no anchor: exit %d:\n%s", code, out)
	}
	wantLine(t, out, "SKIP dns-cert address:", "--address")
	wantLine(t, out, "SKIP cert "+domain+" ", "chain: no anchor")

	st, err := store.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// A DNS record removed: the zone, served elsewhere, lost alice's CERT
	// record.
	hidden := startDNS(t, hidingSource{st: st, hide: map[string]bool{"alice." + domain: true}})
	code, out = checkLines(t, domain, "--resolver", hidden, "--backbone", addrs["smtp"], data)
	if code != 1 {
		t.Errorf("record removed: exit %d, want 1:\n%s", code, out)
	}
	wantLine(t, out, "FAIL dns-cert address alice@"+domain+":", "not published at alice."+domain+".", "found: none")
	wantLine(t, out, "PASS dns-cert domain "+domain+":")

	// A certificate whose CRL cannot be fetched.
	if code, _, stderr := runCLI(t, nil, "address", "add", "bob@"+domain, "--password-file", pwFile, data); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := runCLI(t, nil, "cert", "issue", "bob@"+domain, "--crl-url", "http://127.0.0.1:1", data); code != 0 {
		t.Fatal(stderr)
	}
	code, out = checkLines(t, append(base, data)...)
	if code != 1 {
		t.Errorf("CRL unreachable: exit %d, want 1:\n%s", code, out)
	}
	wantLine(t, out, "FAIL cert bob@"+domain+" ", "crl:", "unavailable", "http://127.0.0.1:1/crl/"+domain+".crl")
	wantLine(t, out, "PASS cert alice@"+domain, "crl: reachable")
	if n := strings.Count(out, "\nFAIL "); n != 1 {
		t.Errorf("%d failures, want only the CRL's:\n%s", n, out)
	}
	bobs, err := st.Certificates(context.Background(), store.CertFilter{Owner: "bob@" + domain})
	if err != nil || len(bobs) != 1 {
		t.Fatal(bobs, err)
	}
	if _, err := st.RemoveCertificate(context.Background(), bobs[0].ID); err != nil {
		t.Fatal(err)
	}

	// A certificate that expired, and one about to.
	caRec, err := st.LocalCA(context.Background(), domain)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := st.LocalCAKey(context.Background(), domain)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devca.Load(domain, caRec.DER, caKey)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(owner string, notAfter time.Time, serial int64) {
		c, k, err := ca.Issue(devca.Request{Owner: owner, Serial: big.NewInt(serial), BaseURL: crl, Now: notAfter.Add(-devca.CertValidity)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.AddCertificate(context.Background(), owner, c, nil, k); err != nil {
			t.Fatal(err)
		}
	}
	issue("carol@"+domain, time.Now().Add(-time.Minute), 9001)
	issue("dave@"+domain, time.Now().Add(10*24*time.Hour), 9002)
	code, out = checkLines(t, append(base, data)...)
	if code != 1 {
		t.Errorf("expired: exit %d, want 1:\n%s", code, out)
	}
	wantLine(t, out, "FAIL cert carol@"+domain+" ", "expiry:", "expired on", "no longer publishes it")
	wantLine(t, out, "PASS dns-cert address carol@"+domain+":", "only expired")
	wantLine(t, out, "FAIL cert dave@"+domain+" ", "expiry:", "in 9 days", "horizon of 30 days")
	wantLine(t, out, "PASS loopback dave@"+domain+" ")
	// A horizon of 5 days lets dave's certificate pass.
	_, out = checkLines(t, append(base, data, "--horizon", "5d")...)
	wantLine(t, out, "PASS cert dave@"+domain+" ", "expiry:", "horizon 5 days")

	// Usage errors.
	for _, args := range [][]string{
		{},
		{"not a domain!"},
		{domain, "--horizon", "soon"},
		{domain, "--address", "eve@elsewhere.example"},
	} {
		if code, _ := checkLines(t, append(args, nowhere)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
