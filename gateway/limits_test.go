package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

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

// TestResumptionAndCredentialCache: every TLS listener resumes sessions
// (tickets), and a client that opens a connection per message pays for
// one password hash: later logins are answered from the credential cache.
func TestResumptionAndCredentialCache(t *testing.T) {
	in := newInstance(t, "hospital.example", "drjones")
	in.start(t, "", nil, func(c *config.Config) {
		c.Listen.IMAPS = "127.0.0.1:0"
		c.Listen.AdminHTTPS = "127.0.0.1:0"
	})
	sessions := tls.NewLRUClientSessionCache(16)
	clientTLS := &tls.Config{InsecureSkipVerify: true, ClientSessionCache: sessions}

	// Submission: STARTTLS and AUTH, three connections.
	for i := range 3 {
		c, err := gosmtp.DialStartTLS(in.addrs["submission"], clientTLS)
		if err != nil {
			t.Fatalf("STARTTLS %d: %v", i, err)
		}
		if err := c.Auth(sasl.NewPlainClient("", in.user, in.password)); err != nil {
			t.Fatalf("AUTH %d: %v", i, err)
		}
		st, _ := c.TLSConnectionState()
		if resumed := st.DidResume; resumed != (i > 0) {
			t.Errorf("submission connection %d: resumed %v", i, resumed)
		}
		c.Quit()
	}
	// IMAPS: implicit TLS.
	for i := range 2 {
		conn, err := tls.Dial("tcp", in.addrs["imaps"], clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(conn)
		r.ReadString('\n')
		// The ticket comes after the handshake; a command's answer makes
		// sure the client has read it.
		fmt.Fprintf(conn, "a LOGIN %s %q\r\n", in.user, in.password)
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "a OK") {
			t.Fatalf("imaps login: %q", line)
		}
		if resumed := conn.ConnectionState().DidResume; resumed != (i > 0) {
			t.Errorf("imaps connection %d: resumed %v", i, resumed)
		}
		conn.Close()
	}
	// The admin listener over TLS.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS, DisableKeepAlives: true}}
	for i := range 2 {
		resp, err := hc.Get("https://" + in.addrs["admin_https"] + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resumed := resp.TLS.DidResume; resumed != (i > 0) {
			t.Errorf("admin_https connection %d: resumed %v", i, resumed)
		}
	}
	// Five logins, one bcrypt.
	resp, err := http.Get("http://" + in.addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	s := parseMetrics(t, string(body))
	s.want(t, `hisp_password_checks_total{result="hashed"}`, 1)
	s.want(t, `hisp_password_checks_total{result="cached"}`, 4)
}
