package smtp

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/testnet"
)

// TestAbandonedLogins: a hundred clients waiting their turn to guess a
// made-up login from one IP close their connections; the server lets go of
// their sockets and goroutines within seconds, and the owner of an
// address, known-good at that IP, logs in from it at once. A shutdown does
// not wait for login waits either.
func TestAbandonedLogins(t *testing.T) {
	st := testStore(t)
	logins := loginlimit.New(nil)
	s, _ := newSubmission(t, SubmissionConfig{Logins: logins,
		LoginSleep: func(ctx context.Context, d time.Duration) { loginlimit.Sleep(ctx, d) }}, st)
	addr := serve(t, s)
	owner, err := gosmtp.Dial(addr)
	tcheck(t, err, "dial")
	tcheck(t, owner.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), "owner's first login")
	owner.Close()
	for range 10 {
		logins.Fail("guess@a.example", "127.0.0.1")
	}
	base := testnet.Held()
	const n = 100
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		tcheck(t, err, "dial")
		conns[i] = c
		resp := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "\x00guess@a.example\x00guess %d", i))
		fmt.Fprintf(c, "EHLO client.example\r\nAUTH PLAIN %s\r\n", resp)
	}
	time.Sleep(500 * time.Millisecond)
	for _, c := range conns {
		c.Close()
	}
	after := testnet.WaitReleased(t, base, 2, 5*time.Second)
	t.Logf("before %+v, after the clients left %+v", base, after)

	start := time.Now()
	c, err := gosmtp.Dial(addr)
	tcheck(t, err, "dial")
	defer c.Close()
	tcheck(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), "owner's login after the flood")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the owner's login took %v", d)
	}

	// A client waiting its turn does not hold up a shutdown.
	w := dialRaw(t, addr)
	w.write("EHLO client.example\r\nAUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00guess@a.example\x00again")) + "\r\n")
	time.Sleep(200 * time.Millisecond)
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v after %v", err, time.Since(start))
	}
}
