package store

import (
	"math/rand/v2"
	"time"
)

// The retry schedule of the outbound queue.
// Backoff is the retry schedule: the first attempt is immediate, the next
// after First, then each delay doubles up to Max, with a random spread of
// ±Jitter (a fraction). After Attempts attempts a recipient fails for good.
type Backoff struct {
	First    time.Duration // 0: 7.5 minutes
	Max      time.Duration // 0: 16 hours
	Attempts int           // 0: 9 (about 32 hours of trying)
	Jitter   float64       // 0: none; DefaultBackoff has 0.1
}

// DefaultBackoff is 7.5 minutes doubling to 16 hours, ±10 %, 9 attempts.
func DefaultBackoff() Backoff {
	return Backoff{First: 7*time.Minute + 30*time.Second, Max: 16 * time.Hour, Attempts: 9, Jitter: 0.1}
}

func (b Backoff) withDefaults() Backoff {
	d := DefaultBackoff()
	if b.First <= 0 {
		b.First = d.First
	}
	if b.Max <= 0 {
		b.Max = d.Max
	}
	if b.Attempts <= 0 {
		b.Attempts = d.Attempts
	}
	if b.Jitter < 0 {
		b.Jitter = 0
	}
	return b
}

// MaxAttempts returns the number of attempts before giving up.
func (b Backoff) MaxAttempts() int { return b.withDefaults().Attempts }

// Delay returns the wait after attempt number attempt (1 for the first)
// before the next one.
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
	d := b.First
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d += time.Duration(float64(d) * b.Jitter * (2*rand.Float64() - 1))
	}
	return d
}
