package loginlimit

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hisp-project/hisp/store"
)

func TestLoginLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	var got []time.Duration
	for range 10 {
		got = append(got, l.Fail("x@y.example", "192.0.2.1"))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60, 60}
	for i := range want {
		if want[i] == 60 {
			want[i] = DelayMax
		} else {
			want[i] *= DelayBase
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	// Another address from another IP is not slowed.
	if d := l.Fail("z@y.example", "192.0.2.2"); d != DelayBase {
		t.Fatalf("unrelated login: %v", d)
	}
	// Failures are forgotten after a while.
	now = now.Add(Forget + time.Second)
	if d := l.Fail("x@y.example", "192.0.2.1"); d != DelayBase {
		t.Fatalf("after the forget time: %v", d)
	}
	// The table is bounded.
	for i := range MaxEntries + 10 {
		l.Fail(fmt.Sprintf("u%d", i), "192.0.2.9")
	}
	if n := len(l.entries); n > MaxEntries {
		t.Fatalf("%d entries", n)
	}
}

// book books an attempt's turn and ends its wait at once.
func book(t *testing.T, l *Limiter, name, ip string) time.Duration {
	t.Helper()
	tk, err := l.Book(Attempt{Name: name, IP: ip})
	if err != nil {
		t.Fatalf("book %s from %s: %v", name, ip, err)
	}
	tk.Done()
	return tk.Wait
}

// TestTurns: after failures, attempts at a name from one IP take turns, each
// the earned delay after the previous one, however many come at once; the
// name from a known-good IP (its owner) waits for nothing; a good login
// clears the turns.
func TestTurns(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	const name, attacker, owner = "Alice@Clinic.Example.", "192.0.2.1", "198.51.100.7"
	l.Succeed(name, owner) // the owner logged in from there before
	if d := book(t, l, name, attacker); d != 0 {
		t.Fatalf("first attempt waits %v", d)
	}
	l.Fail(name, attacker)
	l.Fail("alice@clinic.example", attacker) // the same name
	// Attempts at once: one slot each, 2 delays apart (two failures).
	var got []time.Duration
	for range 10 {
		got = append(got, book(t, l, name, attacker))
	}
	for i, d := range got {
		if want := time.Duration(i+1) * 2 * DelayBase; d != want {
			t.Fatalf("attempt %d waits %v, want %v (all %v)", i, d, want, got)
		}
	}
	if d := book(t, l, name, owner); d != 0 {
		t.Fatalf("the owner from a known-good address waits %v", d)
	}
	l.Succeed(name, attacker)
	if d := book(t, l, name, attacker); d != 0 {
		t.Fatalf("after a good login: %v", d)
	}
	// Turns are forgotten with the failures.
	l.Fail(name, "192.0.2.2")
	now = now.Add(Forget + time.Second)
	if d := book(t, l, name, "192.0.2.2"); d != 0 {
		t.Fatalf("after the forget time: %v", d)
	}
}

// TestAccountAcrossIPs: guesses at one name from many IPs take turns at the
// name's gate; its owner's known-good IP and a trusted attempt skip it.
func TestAccountAcrossIPs(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	const name, owner = "bob@clinic.example", "198.51.100.7"
	l.Succeed(name, owner)
	for i := range 3 {
		l.Fail(name, fmt.Sprintf("203.0.113.%d", i))
	}
	// Fresh IPs: each waits at the name's gate, 3 failures = 4 delays apart.
	var got []time.Duration
	for i := range MaxWaiters {
		tk, err := l.Book(Attempt{Name: name, IP: fmt.Sprintf("203.0.114.%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tk.Wait)
	}
	for i, d := range got {
		if want := time.Duration(i+1) * 4 * DelayBase; d != want {
			t.Fatalf("attempt %d waits %v, want %v (all %v)", i, d, want, got)
		}
	}
	// The gate is full: the next is busy, without a password check.
	if _, err := l.Book(Attempt{Name: name, IP: "203.0.115.1"}); err != ErrBusy {
		t.Fatalf("over MaxWaiters: %v", err)
	}
	if d := book(t, l, name, owner); d != 0 {
		t.Fatalf("owner from a known-good IP waits %v", d)
	}
	if tk, err := l.Book(Attempt{Name: name, IP: "203.0.116.1", Trusted: true}); err != nil || tk.Wait != 0 {
		t.Fatalf("trusted attempt: %v %v", tk, err)
	}
	// The owner's client logging in again does not reset the pace of the
	// guesses from elsewhere.
	l.Succeed(name, owner)
	if tk, err := l.Book(Attempt{Name: name, IP: "203.0.117.1"}); err == nil && tk.Wait == 0 {
		t.Fatal("a good login of the owner let a guess from a new IP through at once")
	}
}

// TestAbandon: an attempt whose client leaves gives its turn back, so a
// flood of abandoned attempts books no hours of turns.
func TestAbandon(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	const name, ip = "carol@clinic.example", "192.0.2.5"
	l.Fail(name, ip)
	for range 100 {
		tk, err := l.Book(Attempt{Name: name, IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		if tk.Wait != DelayBase {
			t.Fatalf("wait %v, want %v", tk.Wait, DelayBase)
		}
		tk.Abandon()
	}
	// A wait that sleeps on a context that ends returns its error and
	// gives the turn back.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, Attempt{Name: name, IP: ip}, func(context.Context, time.Duration) {}); err != context.Canceled {
		t.Fatalf("wait on an ended context: %v", err)
	}
	if d := book(t, l, name, ip); d != DelayBase {
		t.Fatalf("after abandoned turns: %v", d)
	}
}

// TestSpraying: many names from one IP take turns at the IP's gate after
// IPGateFailures failures, except names known-good there.
func TestSpraying(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	const ip = "192.0.2.77"
	l.Succeed("dave@clinic.example", ip)
	for i := range IPGateFailures - 1 {
		l.Fail(fmt.Sprintf("n%d@clinic.example", i), ip)
	}
	if d := book(t, l, "fresh1@clinic.example", ip); d != 0 {
		t.Fatalf("below the IP gate's threshold: %v", d)
	}
	l.Fail("n9@clinic.example", ip)
	if d := book(t, l, "fresh2@clinic.example", ip); d != DelayBase {
		t.Fatalf("at the IP gate: %v, want %v", d, DelayBase)
	}
	if d := book(t, l, "dave@clinic.example", ip); d != 0 {
		t.Fatalf("a name known-good at the IP waits %v", d)
	}
}

// TestSharedIP: many users behind one address (a clinic's NAT) where one
// client keeps failing are let through the IP's gate a few seconds apart
// at most, up to IPGateWaiters at once, not locked out.
func TestSharedIP(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	const nat = "198.51.100.9"
	for range 20 {
		l.Fail("old-phone@clinic.example", nat)
	}
	var waits []time.Duration
	for i := range IPGateWaiters {
		tk, err := l.Book(Attempt{Name: fmt.Sprintf("user%d@clinic.example", i), IP: nat})
		if err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		waits = append(waits, tk.Wait)
	}
	if last := waits[len(waits)-1]; last > time.Duration(IPGateWaiters)*IPGateDelay {
		t.Fatalf("waits %v", waits)
	}
	for i := 1; i < len(waits); i++ {
		if d := waits[i] - waits[i-1]; d > IPGateDelay {
			t.Fatalf("users %d apart by %v (waits %v)", i, d, waits)
		}
	}
}

// TestSpellings: every spelling of an address the store takes as the same
// login counts as one name; IPv6 clients count per /64.
func TestSpellings(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	for range 3 {
		l.Fail("alice@x.org", "192.0.2.1")
	}
	for _, v := range []string{"alice@x.org", " ALICE@X.ORG. ", "alice@ x.org", "alice@\tx.org", "alice@\u00a0\u2003x.org"} {
		addr, _, err := store.NormalizeAddress(v)
		if err != nil || addr != "alice@x.org" {
			t.Fatalf("the store reads %q as %q, %v", v, addr, err)
		}
		if d := book(t, l, v, "203.0.113.50"); d == 0 {
			t.Errorf("%q from a new IP did not wait at the name's gate", v)
		}
	}
	l2 := New(func() time.Time { return now })
	for range 3 {
		l2.Fail("bob@x.org", "2001:db8:1:2::1")
	}
	if d := book(t, l2, "bob@x.org", "2001:db8:1:2:ffff::9"); d == 0 {
		t.Error("another address of the same /64 did not wait at the pair's gate")
	}
}

// TestRememberKnownGood: a login from an IP not known-good for the name
// is passed on once, again only a RememberEvery later; an IP made
// known-good from outside (KnownGood) skips the name's gate, unless it is
// older than KnownGoodFor.
func TestRememberKnownGood(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	var told []string
	busy := false
	l.Remember(func(name, ip string, at time.Time) bool {
		if busy {
			return false
		}
		told = append(told, name+" "+ip)
		return true
	})
	l.Succeed("Alice@A.example", "192.0.2.1")
	// Logins every hour: told again once a RememberEvery has passed since
	// the last one told, however recent the last login.
	for range 24 {
		now = now.Add(time.Hour)
		l.Succeed("alice@a.example", "192.0.2.1")
	}
	if len(told) != 2 || told[0] != "alice@a.example 192.0.2.1" {
		t.Fatalf("told %q", told)
	}
	// One known from the store (as of an hour ago) is not told again yet.
	l.KnownGood("carol@a.example", "192.0.2.3", now.Add(-time.Hour))
	l.Succeed("carol@a.example", "192.0.2.3")
	if len(told) != 2 {
		t.Fatalf("told %q", told)
	}
	// One the receiver could not take is offered again at the next login.
	busy = true
	l.Succeed("dave@a.example", "192.0.2.4")
	busy = false
	l.Succeed("dave@a.example", "192.0.2.4")
	if len(told) != 3 || told[2] != "dave@a.example 192.0.2.4" {
		t.Fatalf("told %q", told)
	}

	l.KnownGood("bob@a.example", "198.51.100.2", now.Add(-time.Hour))
	l.KnownGood("bob@a.example", "198.51.100.3", now.Add(-KnownGoodFor-time.Hour))
	for range 6 {
		l.Fail("bob@a.example", "203.0.113.9")
	}
	for ip, wait := range map[string]bool{"198.51.100.2": false, "198.51.100.3": true} {
		tk, err := l.Book(Attempt{Name: "bob@a.example", IP: ip})
		if err != nil || (tk.Wait > 0) != wait {
			t.Errorf("bob from %s: wait %v, %v", ip, tk.Wait, err)
		}
		tk.Abandon()
	}
}
