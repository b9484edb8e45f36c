package lograte

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := &Limiter{Every: time.Minute, Burst: 3}
	t0 := time.Unix(1e9, 0)
	passed := 0
	for range 100 {
		if ok, _ := l.Allow(t0); ok {
			passed++
		}
	}
	if passed != 3 {
		t.Fatalf("%d lines in one interval", passed)
	}
	ok, suppressed := l.Allow(t0.Add(time.Minute))
	if !ok || suppressed != 97 {
		t.Fatalf("next interval: %v, %d suppressed", ok, suppressed)
	}
	var zero Limiter
	if ok, _ := zero.Allow(t0); !ok {
		t.Fatal("the zero Limiter refused")
	}
}
