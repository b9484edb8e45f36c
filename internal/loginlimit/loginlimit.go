// Package loginlimit slows down password guessing. A failed login is
// answered after a delay that doubles with the recent failures of its name
// and of its client IP; and the next attempts at that name from that IP
// take turns, each the earned delay after the previous one, whatever the
// number of connections they come over, the right password included (so a
// guesser learns nothing sooner). Logins of the same name from other IPs,
// its owner's, are not held up. IMAP, SMTP submission and the admin page
// use it.
package loginlimit

import (
	"context"
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
	MaxEntries  = 100000 // tracked names, IPs and pairs of them
	maxUsername = 320
)

// Limiter counts recent failed logins per name, per client IP and per
// pair of them. It is safe for concurrent use.
type Limiter struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*loginFailures
}

type loginFailures struct {
	n    int
	last time.Time
	// free is, for a name and IP pair, when its next attempt may run.
	free time.Time
}

// New returns a Limiter on a clock (nil: time.Now).
func New(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, entries: make(map[string]*loginFailures)}
}

// normalName is the form of a login name the counts are kept under: an
// address's case and a final dot of its domain do not make another name.
func normalName(username string) string {
	u := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(username)), ".")
	if len(u) > maxUsername {
		u = u[:maxUsername]
	}
	return u
}

func nameKey(username string) string { return "user:" + normalName(username) }
func ipKey(ip string) string         { return "ip:" + ip }
func pairKey(username, ip string) string {
	return "pair:" + normalName(username) + "\x00" + ip
}

// recentLocked returns the entry of key if its failures are recent.
func (l *Limiter) recentLocked(key string, now time.Time) *loginFailures {
	e := l.entries[key]
	if e == nil || now.Sub(e.last) > Forget {
		return nil
	}
	return e
}

// Turn books the next attempt at username from ip and returns how long it
// must wait before its password is checked: nothing without recent
// failures of the pair; otherwise until the pair's next free slot, and
// the slot after it moves on by the earned delay.
func (l *Limiter) Turn(username, ip string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.recentLocked(pairKey(username, ip), now)
	if e == nil {
		return 0
	}
	slot := now
	if e.free.After(slot) {
		slot = e.free
	}
	e.free = slot.Add(Delay(e.n))
	return slot.Sub(now)
}

// Fail records a failed login and returns how long to wait before
// answering it.
func (l *Limiter) Fail(username, ip string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	count := func(k string) *loginFailures {
		e := l.recentLocked(k, now)
		if e == nil {
			l.makeRoomLocked(now)
			e = &loginFailures{}
			l.entries[k] = e
		}
		e.n++
		e.last = now
		return e
	}
	n := max(count(nameKey(username)).n, count(ipKey(ip)).n)
	// The pair's next attempt waits the delay it has now earned.
	pair := count(pairKey(username, ip))
	if free := now.Add(Delay(pair.n)); free.After(pair.free) {
		pair.free = free
	}
	return Delay(n)
}

// makeRoomLocked keeps the table within MaxEntries: when it is full, old
// entries go, and under a flood of fresh names random ones (Go's map
// order) down to 99% of the room, so that a flood cannot keep a name it
// attacks from being counted, and the sweep happens once per hundredth of
// the room.
func (l *Limiter) makeRoomLocked(now time.Time) {
	if len(l.entries) < MaxEntries {
		return
	}
	for k, e := range l.entries {
		if now.Sub(e.last) > Forget {
			delete(l.entries, k)
		}
	}
	for k := range l.entries {
		if len(l.entries) < MaxEntries-MaxEntries/100 {
			return
		}
		delete(l.entries, k)
	}
}

// Succeed forgets the failures of a name, and of the name from that IP
// (not those of the IP: one good login must not reset the count of guesses
// at other names).
func (l *Limiter) Succeed(username, ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, nameKey(username))
	delete(l.entries, pairKey(username, ip))
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

// Sleep waits out a login delay: d, or less if ctx ends first, which it
// reports with false.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
