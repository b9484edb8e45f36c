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

func TestPending(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := New(func() time.Time { return now })
	if d := l.Pending("x@y.example"); d != 0 {
		t.Fatalf("no failures: %v", d)
	}
	l.Fail("X@y.example", "192.0.2.1")
	l.Fail("x@y.example", "192.0.2.2")
	if d := l.Pending("x@Y.example"); d != 2*DelayBase {
		t.Fatalf("after two failures: %v", d)
	}
	if d := l.Pending("z@y.example"); d != 0 {
		t.Fatalf("another name: %v", d)
	}
	l.Succeed("x@y.example")
	if d := l.Pending("x@y.example"); d != 0 {
		t.Fatalf("after a good login: %v", d)
	}
	l.Fail("x@y.example", "192.0.2.1")
	now = now.Add(Forget + time.Second)
	if d := l.Pending("x@y.example"); d != 0 {
		t.Fatalf("after the forget time: %v", d)
	}
}
