// Package lograte keeps per-connection log lines from flooding the log
// when many connections fail at once (a flood, a network outage): a few
// lines per interval get through, and the next line that does says how
// many were left out.
package lograte

import (
	"sync"
	"time"
)

// Limiter lets Burst lines through per Every. It is safe for concurrent
// use; the zero value lets every line through.
type Limiter struct {
	Every time.Duration
	Burst int

	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

// Allow reports whether a line may be logged now, and how many lines were
// left out since the last one that was.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed int) {
	if l.Every <= 0 || l.Burst <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.Every {
		l.start, l.n = now, 0
	}
	if l.n >= l.Burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
