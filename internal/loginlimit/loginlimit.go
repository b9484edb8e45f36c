// Package loginlimit slows down password guessing: each failed login of an
// account name or from a client IP waits longer before it is answered, so
// that guesses at one account, or from one client, come slowly while other
// users log in at once. IMAP, SMTP submission and the admin page share it.
package loginlimit

import (
	"strings"
	"sync"
	"time"
)

// Login delays: the first failure waits DelayBase, each further recent
// failure of the same name or client IP doubles it, up to DelayMax.
// Failures are forgotten Forget after the last one.
const (
	DelayBase   = 500 * time.Millisecond
	DelayMax    = 30 * time.Second
	Forget      = 15 * time.Minute
	MaxEntries  = 100000 // tracked names and IPs
	maxUsername = 320
)

// Limiter counts recent failed logins per name and per client IP. It is
// safe for concurrent use.
type Limiter struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*loginFailures
}

type loginFailures struct {
	n    int
	last time.Time
}

// New returns a Limiter on a clock (nil: time.Now).
func New(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, entries: make(map[string]*loginFailures)}
}

// limiterKeys returns the keys of a login attempt.
func limiterKeys(username, ip string) []string {
	u := strings.ToLower(strings.TrimSpace(username))
	if len(u) > maxUsername {
		u = u[:maxUsername]
	}
	return []string{"user:" + u, "ip:" + ip}
}

// Fail records a failed login and returns how long to wait before
// answering it.
func (l *Limiter) Fail(username, ip string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= MaxEntries {
		l.pruneLocked(now)
	}
	n := 0
	for _, k := range limiterKeys(username, ip) {
		e := l.entries[k]
		if e == nil || now.Sub(e.last) > Forget {
			if len(l.entries) >= MaxEntries {
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
	return Delay(n)
}

// Pending is how long a login attempt for username waits before its
// password is even checked: the delay its name's recent failures earned.
// Guesses at one name then come no faster than the delays, over any number
// of connections, and a right guess is answered no sooner than a wrong one.
// (The client IP's failures slow only its failures, so that other users
// behind the same address are not held up.)
func (l *Limiter) Pending(username string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[limiterKeys(username, "")[0]]
	if e == nil || now.Sub(e.last) > Forget {
		return 0
	}
	return Delay(e.n)
}

// Succeed forgets the failures of a name (not of the client IP: one good
// login must not reset the count of guesses at other names).
func (l *Limiter) Succeed(username string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, limiterKeys(username, "")[0])
}

func (l *Limiter) pruneLocked(now time.Time) {
	for k, e := range l.entries {
		if now.Sub(e.last) > Forget {
			delete(l.entries, k)
		}
	}
}

// Delay is the wait after the nth recent failure.
func Delay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := DelayBase
	for i := 1; i < n && d < DelayMax; i++ {
		d *= 2
	}
	return min(d, DelayMax)
}
