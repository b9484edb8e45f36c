package main

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/trust"
)

// startServe runs serve on loopback ports in dir and returns the DNS and
// admin addresses it printed.
func startServe(t *testing.T, dir string) (dnsAddr, adminAddr string) {
	t.Helper()
	cfg := config.Default()
	cfg.Data = dir
	cfg.Listen.DNS = "127.0.0.1:0"
	cfg.Listen.Admin = "127.0.0.1:0"
	cfg.Listen.SMTP, cfg.Listen.Submission, cfg.Listen.IMAP = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
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
	dnsRe := regexp.MustCompile(`dns \(CERT publishing, UDP and TCP\): (\S+)`)
	adminRe := regexp.MustCompile(`admin .*: http://(\S+)/`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d, a := dnsRe.FindStringSubmatch(out.String()), adminRe.FindStringSubmatch(out.String())
		if d != nil && a != nil {
			return d[1], a[1]
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, out.String())
		default:
		}
	}
	t.Fatalf("serve did not print its listeners:\n%s", out.String())
	return "", ""
}

// TestServePublishesAndServesCRL: a running hisp publishes the local
// certificates (also ones added while it runs) over DNS, and serves the
// local CA's CRL that its certificates name, so another HISP can discover
// and fully validate them.
func TestServePublishesAndServesCRL(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	if code, _, stderr := runCLI(t, nil, "domain", "add", "local.example", data); code != 0 {
		t.Fatal(stderr)
	}
	dnsAddr, adminAddr := startServe(t, dir)
	base := "http://" + adminAddr
	// Added after the start: the server sees it without a restart.
	for _, owner := range []string{"bob@local.example", "local.example"} {
		if code, _, stderr := runCLI(t, nil, "cert", "issue", owner, "--crl-url", base, data); code != 0 {
			t.Fatalf("cert issue %s: %s", owner, stderr)
		}
	}
	code, caPEM, stderr := runCLI(t, nil, "cert", "ca", "local.example", data)
	if code != 0 {
		t.Fatal(stderr)
	}
	ca, err := certfile.ParseCertificates([]byte(caPEM))
	if err != nil {
		t.Fatal(err)
	}

	// dig, an independent DNS client, over UDP and TCP.
	for _, proto := range []string{"+notcp", "+tcp"} {
		out, err := exec.Command("dig", "@127.0.0.1", "-p", strings.Split(dnsAddr, ":")[1], "bob.local.example", "CERT", proto, "+norecurse").CombinedOutput()
		if err != nil {
			t.Fatalf("dig: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "status: NOERROR") || !strings.Contains(string(out), "IN\tCERT\tPKIX 0 0") {
			t.Fatalf("dig %s: no CERT answer:\n%s", proto, out)
		}
	}

	// The project's own discovery and validation, CRL fetched from hisp.
	v := trust.NewValidator(trust.Options{})
	d := certs.NewDiscoverer(certs.DiscoveryOptions{Resolver: dnsAddr})
	ctx := context.Background()
	res, err := d.Discover(ctx, "bob@local.example", func(ctx context.Context, c *x509.Certificate, inter []*x509.Certificate, addr string) (bool, string) {
		v := v.Validate(ctx, trust.Request{Cert: c, Intermediates: inter, Anchors: ca, Address: addr, Purpose: trust.Encryption})
		return v.Trusted, v.Reason
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Certs) != 1 || res.Step != certs.DNSAddress {
		t.Fatalf("discovery: %+v", res)
	}

	resp, err := http.Get(base + "/crl/local.example.crl")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		t.Fatalf("CRL: %v (status %s)", err, resp.Status)
	}
	if err := crl.CheckSignatureFrom(ca[0]); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if resp, err := http.Get(base + "/crl/unknown.example.crl"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown domain CRL: %v %v", resp.Status, err)
	}
}

// TestServeStoreURLFromEnv: a HISP_STORE_URL that is no PostgreSQL URL
// stops hisp serve at start, as a setup error naming the variable.
func TestServeStoreURLFromEnv(t *testing.T) {
	code, _, stderr := runCLIEnv(t, map[string]string{"HISP_STORE_URL": "mysql://db.example/hisp"}, "serve", "--data", t.TempDir())
	if code != 2 || !strings.Contains(stderr, "HISP_STORE_URL") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

// TestCPUProfile: HISP_CPUPROFILE makes hisp serve write a CPU profile of
// its run into the file it names; unset, nothing is written.
func TestCPUProfile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "cpu.out")
	stop, err := cpuProfile(&cliEnv{getenv: func(k string) string { return map[string]string{"HISP_CPUPROFILE": name}[k] }})
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if fi, err := os.Stat(name); err != nil || fi.Size() == 0 {
		t.Fatalf("profile %s: %v, %v", name, fi, err)
	}
	stop, err = cpuProfile(&cliEnv{getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	stop()
}
