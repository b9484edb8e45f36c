package loginlimit

import (
	"fmt"
	"slices"
	"testing"
	"time"
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

// TestTurns: after failures, attempts at a name from one IP take turns, each
// the earned delay after the previous one, however many come at once; the
// name from another IP (its owner) waits for nothing; a good login clears
// the turns.
func TestTurns(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	const name, attacker, owner = "Alice@Clinic.Example.", "192.0.2.1", "198.51.100.7"
	if d := l.Turn(name, attacker); d != 0 {
		t.Fatalf("first attempt waits %v", d)
	}
	l.Fail(name, attacker)
	l.Fail("alice@clinic.example", attacker) // the same name
	// Ten attempts at once: one slot each, 2 delays apart (two failures).
	var got []time.Duration
	for range 10 {
		got = append(got, l.Turn(name, attacker))
	}
	for i, d := range got {
		if want := time.Duration(i+1) * 2 * DelayBase; d != want {
			t.Fatalf("attempt %d waits %v, want %v (all %v)", i, d, want, got)
		}
	}
	if d := l.Turn(name, owner); d != 0 {
		t.Fatalf("the owner from another address waits %v", d)
	}
	l.Succeed(name, attacker)
	if d := l.Turn(name, attacker); d != 0 {
		t.Fatalf("after a good login: %v", d)
	}
	// Turns are forgotten with the failures.
	l.Fail(name, attacker)
	now = now.Add(Forget + time.Second)
	if d := l.Turn(name, attacker); d != 0 {
		t.Fatalf("after the forget time: %v", d)
	}
}
