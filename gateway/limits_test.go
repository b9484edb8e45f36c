package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
)

// greeting dials addr from the loopback address local and returns the
// first line the server sends.
func greeting(t *testing.T, local, addr string) (net.Conn, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatalf("read greeting of %s from %s: %v", addr, local, err)
	}
	return c, strings.TrimSpace(line)
}

// TestConnectionLimits: a flood of idle connections from one IP fills its
// share of the backbone and gets SMTP's busy answer, while clients from
// other addresses still get banners on SMTP and IMAP, the admin listener
// answers, and /metrics counts the refusals.
func TestConnectionLimits(t *testing.T) {
	in := newInstance(t, "hospital.example", "drjones")
	in.start(t, "", nil, func(c *config.Config) {
		c.Limits.Connections = 40
		c.Limits.ConnectionsPerIP = 10
	})
	smtpAddr, imapAddr := in.addrs["smtp"], in.addrs["imap"]
	for i := range 10 {
		if _, g := greeting(t, "127.0.0.1", smtpAddr); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("connection %d within the limit: %q", i, g)
		}
	}
	for i := range 30 {
		if _, g := greeting(t, "127.0.0.1", smtpAddr); !strings.HasPrefix(g, "421 4.7.0") || !strings.Contains(g, "Too many connections") {
			t.Fatalf("connection %d over the per-IP limit: %q", i, g)
		}
	}
	// Other clients are served.
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		if _, g := greeting(t, ip, smtpAddr); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("backbone from %s during the flood: %q", ip, g)
		}
		if _, g := greeting(t, ip, imapAddr); !strings.HasPrefix(g, "* OK") {
			t.Fatalf("IMAP from %s during the flood: %q", ip, g)
		}
	}
	// IMAP has its own limits: one IP's flood gets BYE.
	for range 10 {
		greeting(t, "127.0.0.4", imapAddr)
	}
	if _, g := greeting(t, "127.0.0.4", imapAddr); !strings.HasPrefix(g, "* BYE") {
		t.Fatalf("IMAP over the per-IP limit: %q", g)
	}
	resp, err := http.Get("http://" + in.addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	s := parseMetrics(t, string(body))
	s.want(t, `hisp_connections_refused_total{listener="smtp",reason="per_ip"}`, 30)
	s.want(t, `hisp_connections_refused_total{listener="imap",reason="per_ip"}`, 1)
	s.want(t, `hisp_connections_limit{listener="smtp"}`, 40)
	if open := s[`hisp_connections_open{listener="smtp"}`]; open != 12 {
		t.Errorf("open backbone connections %v, want 12", open)
	}
}
