package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, s string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hisp.toml")
	if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadDesignExample(t *testing.T) {
	c, err := Load(write(t, `
data = "/var/lib/hisp"
hostname = "hisp.hospital.example"
[listen]
smtp = "0.0.0.0:25"
submission = "0.0.0.0:587"
imap = "0.0.0.0:143"
dns = ""
admin = "127.0.0.1:8080"
[dns]
resolver = "127.0.0.1:53"
timeout = "2s"
[outbound]
port = 2525
[outbound.routes]
"partner.example" = "10.0.0.5:25"
[tls]
cert = "/etc/hisp/tls.pem"
key = "/etc/hisp/tls.key"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "/var/lib/hisp" || c.Listen.DNS != "" || c.Listen.SMTP != "0.0.0.0:25" || c.Outbound.Port != 2525 ||
		c.Outbound.Routes["partner.example"].Addr != "10.0.0.5:25" || c.DNS.Timeout.Duration != 2*time.Second ||
		c.DNS.LDAPTimeout.Duration != 5*time.Second || c.Trust.Revocation != "defer" {
		t.Fatalf("%+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ toml, want string }{
		{"[listen]\nsmpt = \"x\"\n", "unknown keys: listen.smpt"},
		{"[listen]\nsmtp = \"nocolon\"\n", "listen.smtp"},
		{"[outbound]\nport = 0\n", "outbound.port"},
		{"[tls]\ncert = \"a\"\n", "go together"},
		{"[trust]\nrevocation = \"maybe\"\n", "trust.revocation"},
		{"[log]\nformat = \"xml\"\n", "log.format"},
		{"[log]\nlevel = \"loud\"\n", "log.level"},
		{"data = [", "hisp.toml"},
		{"[outbound]\ntls = \"always\"\n", "outbound.tls"},
		{"[outbound.routes]\n\"p.example\" = { addr = \"10.0.0.5:25\", tls = \"maybe\" }\n", "outbound.routes.p.example.tls"},
		{"[outbound.routes]\n\"p.example\" = { addr = \"10.0.0.5:25\", tsl = \"verify\" }\n", "unknown keys: tsl"},
		{"[outbound.routes]\n\"p.example\" = { tls = \"verify\" }\n", "addr is missing"},
		{"[outbound.routes]\n\"p.example\" = 25\n", "route"},
		{"[limits]\nmessage_size = \"12 parsecs\"\n", "size"},
		{"[limits]\nmessage_size = 1000\n", "limits.message_size"},
		{"[limits]\nmailbox_quota = -5\n", "negative"},
		{"[limits]\nmessage_sise = 5\n", "unknown keys: limits.message_sise"},
		{"[store]\nurl = \"mysql://x/y\"\n", "store.url"},
		{"[store]\nurl = \"postgres://hisp:pw@/hisp\"\n", "store.url"},
		{"[store]\nlease = \"10ms\"\n", "store.lease"},
		{"[store]\nnode = \"a\\nb\"\n", "store.node"},
		{"[store]\nnodes = \"a\"\n", "unknown keys: store.nodes"},
	} {
		if _, err := Load(write(t, tc.toml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.toml, err, tc.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestDefaultsAreLoopback(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{c.Listen.SMTP, c.Listen.Submission, c.Listen.IMAP, c.Listen.DNS, c.Listen.Admin} {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("default listener %s is not on loopback", a)
		}
	}
}

// TestLogHandler: [log] picks JSON or text lines and the level.
func TestLogHandler(t *testing.T) {
	c, err := Load(write(t, "[log]\nformat = \"json\"\nlevel = \"warn\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	log := slog.New(c.Log.Handler(&b))
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil || line["msg"] != "shown" || line["k"] != "v" {
		t.Fatalf("log %q: %v", b.String(), err)
	}
	b.Reset()
	slog.New(Default().Log.Handler(&b)).Info("text line", "k", "v")
	if got := b.String(); !strings.Contains(got, `msg="text line" k=v`) {
		t.Fatalf("default log line %q", got)
	}
}

// TestOutboundTLSAndRoutes: [outbound] tls and both forms of a route.
func TestOutboundTLSAndRoutes(t *testing.T) {
	c, err := Load(write(t, `
[outbound]
tls = "required"
[outbound.routes]
"plain.example" = "10.0.0.4:25"
"partner.example" = { addr = "10.0.0.5:25", tls = "verify" }
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbound.TLS != "required" || c.Outbound.Routes["plain.example"] != (Route{Addr: "10.0.0.4:25"}) ||
		c.Outbound.Routes["partner.example"] != (Route{Addr: "10.0.0.5:25", TLS: "verify"}) {
		t.Fatalf("%+v", c.Outbound)
	}
	if Default().Outbound.TLS != "opportunistic" {
		t.Fatal("default outbound TLS is not opportunistic")
	}
}

// TestLimits: [limits] sizes as bytes or with a unit, and their defaults.
func TestLimits(t *testing.T) {
	d := Default().Limits
	if d.MessageSize != 64<<20 || d.MailboxQuota != 1<<30 {
		t.Fatalf("defaults %+v", d)
	}
	c, err := Load(write(t, "[limits]\nmessage_size = \"32MB\"\nmailbox_quota = 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.MessageSize != 32<<20 || c.Limits.MailboxQuota != 0 {
		t.Fatalf("%+v", c.Limits)
	}
	c, err = Load(write(t, "[limits]\nmessage_size = 20000000\nmailbox_quota = \"2 GB\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.MessageSize != 20000000 || c.Limits.MailboxQuota != 2<<30 {
		t.Fatalf("%+v", c.Limits)
	}
}

// TestBaseURL: public_url wins; without it the admin listener's address,
// an unspecified host replaced by hostname; a malformed one is refused.
func TestBaseURL(t *testing.T) {
	c := Default()
	if got := c.BaseURL(); got != "http://127.0.0.1:8080" {
		t.Errorf("default: %s", got)
	}
	c, err := Load(write(t, "hostname = \"hisp.example.org\"\n[listen]\nadmin = \"0.0.0.0:9080\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BaseURL(); got != "http://hisp.example.org:9080" {
		t.Errorf("unspecified host: %s", got)
	}
	c, err = Load(write(t, "public_url = \"https://crl.example.org/hisp/\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BaseURL(); got != "https://crl.example.org/hisp" {
		t.Errorf("public_url: %s", got)
	}
	c, err = Load(write(t, "[listen]\nadmin = \"\"\nadmin_https = \"[::]:8443\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BaseURL(); got != "https://localhost:8443" {
		t.Errorf("admin_https only: %s", got)
	}
	for _, bad := range []string{"ftp://x", "localhost:8080", "http://", "http://x/?a=b"} {
		if _, err := Load(write(t, "public_url = \""+bad+"\"\n")); err == nil || !strings.Contains(err.Error(), "public_url") {
			t.Errorf("public_url %q: %v", bad, err)
		}
	}
}

// TestPublishedMX: the MX the DNS listener publishes is hostname unless it
// is local, [dns] mx when set, none for "none"; a malformed mx is refused.
func TestPublishedMX(t *testing.T) {
	for _, c := range []struct{ hostname, mx, want string }{
		{"hisp.hospital.example", "", "hisp.hospital.example"},
		{"localhost", "", ""},
		{"hisp.localhost", "", ""},
		{"127.0.0.1", "", ""},
		{"hisp.hospital.example", "mx.hospital.example", "mx.hospital.example"},
		{"hisp.hospital.example", "none", ""},
	} {
		cfg := Default()
		cfg.Hostname, cfg.DNS.MX = c.hostname, c.mx
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if got := cfg.PublishedMX(); got != c.want {
			t.Errorf("hostname %q, mx %q: published %q, want %q", c.hostname, c.mx, got, c.want)
		}
	}
	for _, bad := range []string{"10.0.0.5", "mx", "a b.example", "mx.example:25"} {
		cfg := Default()
		cfg.DNS.MX = bad
		if err := cfg.Validate(); err == nil {
			t.Errorf("mx %q accepted", bad)
		}
	}
}
