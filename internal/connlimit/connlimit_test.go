package connlimit

import (
	"bufio"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/metrics"
)

// serveGreeting accepts on l and greets every accepted connection, keeping
// it open until the test ends.
func serveGreeting(t *testing.T, l net.Listener) {
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			c.Write([]byte("220 hello\r\n"))
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
}

func dialFrom(t *testing.T, local, addr string) (net.Conn, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", local, err)
	}
	return c, strings.TrimSpace(line)
}

// TestLimits: one IP gets PerIP connections and then the busy answer;
// another IP is still served; at Max everyone gets the busy answer; a
// closed connection frees its place; refusals are counted and logged
// once per interval.
func TestLimits(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := metrics.NewCounter("refused_total", "refused", "listener", "reason")
	var logs testbuf.Buffer
	l := New(inner, Options{Name: "smtp", Max: 8, PerIP: 5, Busy: []byte("421 4.7.0 Too busy\r\n"),
		Refused: refused, Logger: slog.New(slog.NewTextHandler(&logs, nil)), LogEvery: time.Hour})
	serveGreeting(t, l)
	addr := inner.Addr().String()

	for range 5 {
		if _, got := dialFrom(t, "127.0.0.1", addr); got != "220 hello" {
			t.Fatalf("within the per-IP limit: %q", got)
		}
	}
	for range 20 {
		if _, got := dialFrom(t, "127.0.0.1", addr); !strings.HasPrefix(got, "421 ") {
			t.Fatalf("over the per-IP limit: %q", got)
		}
	}
	for range 3 {
		if _, got := dialFrom(t, "127.0.0.2", addr); got != "220 hello" {
			t.Fatalf("another IP during a flood: %q", got)
		}
	}
	if _, got := dialFrom(t, "127.0.0.3", addr); !strings.HasPrefix(got, "421 ") {
		t.Fatalf("over the total: %q", got)
	}
	if n := l.Open(); n != 8 {
		t.Fatalf("open %d", n)
	}
	if n := refused.Value("smtp", ReasonPerIP); n != 20 {
		t.Fatalf("per-IP refusals counted: %d", n)
	}
	if n := refused.Value("smtp", ReasonTotal); n != 1 {
		t.Fatalf("total refusals counted: %d", n)
	}
	if n := strings.Count(logs.String(), "connections refused"); n != 1 {
		t.Fatalf("%d log lines for 21 refusals:\n%s", n, logs.String())
	}
}

// TestRelease: closing an accepted connection frees its place.
func TestRelease(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, Options{Name: "imap", Max: 1, Busy: []byte("* BYE Too busy\r\n")})
	defer l.Close()
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("* OK hello\r\n"))
			if i == 0 {
				c.Close() // the first goes at once
			}
		}
	}()
	addr := inner.Addr().String()
	if _, got := dialFrom(t, "127.0.0.1", addr); got != "* OK hello" {
		t.Fatalf("first: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, got := dialFrom(t, "127.0.0.1", addr); got != "* OK hello" {
		t.Fatalf("after the first closed: %q", got)
	}
	if _, got := dialFrom(t, "127.0.0.1", addr); got != "* BYE Too busy" {
		t.Fatalf("over the limit: %q", got)
	}
}

// TestIPv6PerNetwork: IPv6 clients count per /64, so one host cannot take
// more than its share by changing its address.
func TestIPv6PerNetwork(t *testing.T) {
	inner, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	l := New(inner, Options{Name: "smtp", PerIP: 1, Busy: []byte("421 busy\r\n")})
	serveGreeting(t, l)
	if _, got := dialFrom(t, "::1", inner.Addr().String()); got != "220 hello" {
		t.Fatalf("first: %q", got)
	}
	if _, got := dialFrom(t, "::1", inner.Addr().String()); got != "421 busy" {
		t.Fatalf("second from the same /64: %q", got)
	}
	for _, c := range []struct{ addr, want string }{
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::"},
		{"2001:db8:1:2:bbbb::7", "2001:db8:1:2::"},
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
	} {
		conn := fakeConn{remote: &net.TCPAddr{IP: net.ParseIP(c.addr), Port: 1}}
		if got := remoteIP(conn).String(); got != c.want {
			t.Errorf("%s counts as %s, want %s", c.addr, got, c.want)
		}
	}
}

type fakeConn struct {
	net.Conn
	remote net.Addr
}

func (f fakeConn) RemoteAddr() net.Addr { return f.remote }
