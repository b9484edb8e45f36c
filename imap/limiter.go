package imap

import (
	"strings"
	"sync"
	"time"
)

// Login delays: the first failure waits loginDelayBase, each further recent
// failure of the same address or client IP doubles it, up to loginDelayMax.
// Failures are forgotten loginForget after the last one.
const (
	loginDelayBase   = 500 * time.Millisecond
	loginDelayMax    = 30 * time.Second
	loginForget      = 15 * time.Minute
	loginMaxEntries  = 100000 // tracked addresses and IPs
	loginMaxUsername = 320
)

// loginLimiter counts recent failed logins per address and per client IP.
type loginLimiter struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*loginFailures
}

type loginFailures struct {
	n    int
	last time.Time
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{now: now, entries: make(map[string]*loginFailures)}
}

// limiterKeys returns the keys of a login attempt.
func limiterKeys(username, ip string) []string {
	u := strings.ToLower(strings.TrimSpace(username))
	if len(u) > loginMaxUsername {
		u = u[:loginMaxUsername]
	}
	return []string{"user:" + u, "ip:" + ip}
}

// fail records a failed login and returns how long to wait before
// answering it.
func (l *loginLimiter) fail(username, ip string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= loginMaxEntries {
		l.pruneLocked(now)
	}
	n := 0
	for _, k := range limiterKeys(username, ip) {
		e := l.entries[k]
		if e == nil || now.Sub(e.last) > loginForget {
			if len(l.entries) >= loginMaxEntries {
				// Full of recent failures: count this one as a first.
				n = max(n, 1)
				continue
			}
			e = &loginFailures{}
			l.entries[k] = e
		}
		e.n++
		e.last = now
		n = max(n, e.n)
	}
	return loginDelay(n)
}

// succeed forgets the failures of an address (not of the client IP: one
// good login must not reset the count of guesses at other addresses).
func (l *loginLimiter) succeed(username string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, limiterKeys(username, "")[0])
}

func (l *loginLimiter) pruneLocked(now time.Time) {
	for k, e := range l.entries {
		if now.Sub(e.last) > loginForget {
			delete(l.entries, k)
		}
	}
}

// loginDelay is the wait after the nth recent failure.
func loginDelay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := loginDelayBase
	for i := 1; i < n && d < loginDelayMax; i++ {
		d *= 2
	}
	return min(d, loginDelayMax)
}
