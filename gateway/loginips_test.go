package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/store"
)

// TestLoginIPsRemembered: an IP an address logged in from before a
// restart (or on another node) is known-good at start, so the owner's
// login from it does not wait behind guesses at the account from
// elsewhere; a login from a new IP is written to the store for the next
// start.
func TestLoginIPsRemembered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const alice = "alice@a.example"
	must(t, func() error {
		return st.RememberLoginIP(ctx, alice, "192.0.2.10", time.Now().Add(-time.Hour), time.Time{})
	})
	s := &server{st: st, log: slog.New(slog.DiscardHandler)}
	logins := loginlimit.New(nil)
	job := s.rememberLoginIPs(ctx, logins)
	done := make(chan error, 1)
	go func() { done <- job(ctx) }()

	// Guesses at alice's password from elsewhere close the name's gate.
	for range 6 {
		logins.Fail(alice, "198.51.100.7")
	}
	if tk, err := logins.Book(loginlimit.Attempt{Name: alice, IP: "203.0.113.5"}); err != nil || tk.Wait == 0 {
		t.Fatalf("an unknown IP does not wait behind the guesses: %+v, %v", tk, err)
	} else {
		tk.Abandon()
	}
	tk, err := logins.Book(loginlimit.Attempt{Name: alice, IP: "192.0.2.10"})
	if err != nil || tk.Wait != 0 {
		t.Fatalf("alice's IP remembered from before waits %v (%v)", tk.Wait, err)
	}
	tk.Done()

	// A login from a new IP is remembered in the store.
	logins.Succeed(alice, "2001:db8:1:2::99")
	mdnWait(t, "the new IP in the store", func() bool {
		list, _ := st.LoginIPs(ctx, time.Now().Add(-time.Minute))
		for _, l := range list {
			if l.Name == alice && l.IP == "2001:db8:1:2::" {
				return true
			}
		}
		return false
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
