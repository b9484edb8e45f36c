// Package loginlimit slows down password guessing without locking owners
// out. IMAP, SMTP submission and the admin page use one Limiter.
//
// A failed login is answered after a delay that doubles with the recent
// failures of its name and of its client IP (Fail). Before a password is
// checked, the attempt books its turn (Book) at up to three gates, each
// letting one attempt through per earned delay, whatever the number of
// connections the attempts come over, the right password included (so a
// guesser learns nothing sooner):
//
//   - the name from this IP, after failures of that pair;
//   - the name from anywhere, after failures of the name: guesses at one
//     account from many IPs take turns too;
//   - the IP for any name, after IPGateFailures failures from it: spraying
//     many names from one IP is slowed as well.
//
// The owner is not locked out by guesses from elsewhere: an IP where the
// name logged in successfully within KnownGoodFor (a known-good IP), and
// an attempt the caller trusts (a verified TLS client certificate), skip
// the name and IP gates and wait only for failures of their own pair.
// The caller may keep the known-good IPs across restarts and nodes
// (Remember, KnownGood).
// At most MaxWaiters attempts wait at a gate; more are answered at once as
// busy (try again later) without checking their password, so a flood
// neither queues for hours nor holds sockets. An attempt whose client
// leaves gives its turn back (Ticket.Abandon).
package loginlimit

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hisp-project/hisp/internal/clientip"
)

// Login delays: the first failure waits DelayBase, each further recent
// failure of the same name or client IP doubles it, up to DelayMax.
// Failures are forgotten Forget after the last one.
const (
	DelayBase  = 500 * time.Millisecond
	DelayMax   = 30 * time.Second
	Forget     = 15 * time.Minute
	MaxEntries = 100000 // tracked names, IPs and pairs of them
	// MaxWaiters is how many attempts may wait at one gate.
	MaxWaiters = 4
	// IPGateFailures is how many recent failures from one IP make its
	// attempts at names it has not logged in as take turns; they are let
	// through one per IPGateDelay at most (doubling from DelayBase), and up
	// to IPGateWaiters may wait: many users behind one NAT, one of them
	// failing, are slowed a little, not locked out.
	IPGateFailures = 5
	IPGateDelay    = 4 * time.Second
	IPGateWaiters  = 16
	// KnownGoodFor is how long an IP stays known-good for a name after a
	// successful login from it; KnownGoodPerName IPs are kept per name.
	KnownGoodFor     = 30 * 24 * time.Hour
	KnownGoodPerName = 16
	maxUsername      = 320
)

// ErrBusy is Book's answer when too many attempts already wait at a gate
// the attempt must pass: tell the client to try again later.
var ErrBusy = errors.New("too many login attempts waiting, try again later")

// Limiter counts recent failed logins per name, per client IP and per
// pair of them, and remembers the IPs each name logged in from. It is safe
// for concurrent use.
type Limiter struct {
	now func() time.Time
	// remember, when set (Remember), is told of a name's login from an IP
	// that was not known-good, or was last known-good a RememberEvery ago:
	// to keep the known-good IPs across restarts and share them between
	// nodes.
	remember func(name, ip string, at time.Time) bool

	mu      sync.Mutex
	entries map[string]*gate
	good    map[string]map[string]goodIP // name -> IP -> its last good login
}

// goodIP is a known-good IP of a name: its last good login, and the time
// of the last one told to the Remember function.
type goodIP struct{ at, told time.Time }

// RememberEvery is how often a name's login from a known-good IP is
// passed on to the Remember function again (its time refreshed).
const RememberEvery = 24 * time.Hour

// Remember has the limiter call f for a successful login that makes an IP
// known-good for a name, or refreshes one last passed on RememberEvery ago;
// ip is the client's key (an IPv4 address, or an IPv6 /64 by its first
// address). f reports whether it took the login (false: it is offered
// again at the next login). Set it before the limiter is used; f is called
// under the limiter's lock and must not block.
func (l *Limiter) Remember(f func(name, ip string, at time.Time) bool) { l.remember = f }

// KnownGood makes ip (a client key as Remember gives it) known-good for
// name as of at, unless the limiter knows of a later login: what was
// remembered before a restart, or by another node.
func (l *Limiter) KnownGood(name, ip string, at time.Time) {
	now := l.now()
	if now.Sub(at) > KnownGoodFor {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.markGoodLocked(normalName(name), client(ip), goodIP{at: at, told: at}, now)
}

// gate is the failure count and turn schedule of a name, an IP or a pair.
type gate struct {
	ip   bool // an IP's gate (ipKey), gentler than the others
	n    int
	last time.Time
	// free is when the next attempt through this gate may run.
	free    time.Time
	waiting int
}

// spacing is how far apart the gate lets attempts through.
func (g *gate) spacing() time.Duration {
	if g.ip {
		return min(Delay(g.n-IPGateFailures+1), IPGateDelay)
	}
	return Delay(g.n)
}

// maxWaiting is how many attempts may wait at the gate.
func (g *gate) maxWaiting() int {
	if g.ip {
		return IPGateWaiters
	}
	return MaxWaiters
}

// New returns a Limiter on a clock (nil: time.Now).
func New(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, entries: make(map[string]*gate), good: make(map[string]map[string]goodIP)}
}

// normalName is the form of a login name the counts are kept under: every
// spelling the store takes for the same address (store.NormalizeAddress:
// case, white space around the whole and before the domain, a final dot
// of the domain) is one name, so that guesses cannot dodge its gates.
func normalName(username string) string {
	u := strings.TrimSpace(username)
	if i := strings.LastIndexByte(u, '@'); i >= 0 {
		u = u[:i+1] + strings.TrimSpace(u[i+1:])
	}
	u = strings.TrimSuffix(strings.ToLower(u), ".")
	if len(u) > maxUsername {
		u = u[:maxUsername]
	}
	return u
}

// client is the form of a client IP the counts are kept under: an IPv4
// address, or the /64 network of an IPv6 address (one host can pick any
// address of its /64, as connlimit counts it too).
func client(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	return clientip.Key(a).String()
}

func nameKey(username string) string { return "user:" + normalName(username) }
func ipKey(ip string) string         { return "ip:" + client(ip) }
func pairKey(username, ip string) string {
	return "pair:" + normalName(username) + "\x00" + client(ip)
}

// recentLocked returns the entry of key if its failures are recent.
func (l *Limiter) recentLocked(key string, now time.Time) *gate {
	e := l.entries[key]
	if e == nil || now.Sub(e.last) > Forget {
		return nil
	}
	return e
}

// Attempt is a login attempt about to check its password.
type Attempt struct {
	Name, IP string
	// Trusted skips the name and IP gates, as a known-good IP does: the
	// client proved itself otherwise (a verified TLS client certificate).
	Trusted bool
}

// Ticket is an attempt's booked turn.
type Ticket struct {
	// Wait is how long the attempt must wait before its password is
	// checked.
	Wait time.Duration

	l      *Limiter
	booked []booking
}

type booking struct {
	g          *gate
	prev, ends time.Time
}

// Book books the turn of an attempt at every gate it must pass and
// returns how long it waits; ErrBusy when a gate has MaxWaiters waiting
// already. The caller waits out Ticket.Wait, then calls Done, or Abandon
// when its client left first.
func (l *Limiter) Book(a Attempt) (*Ticket, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var gates []*gate
	add := func(key string, minFailures int) {
		if e := l.recentLocked(key, now); e != nil && e.n >= minFailures {
			gates = append(gates, e)
		}
	}
	add(pairKey(a.Name, a.IP), 1)
	if !a.Trusted && !l.knownGoodLocked(a.Name, a.IP, now) {
		add(nameKey(a.Name), 1)
		add(ipKey(a.IP), IPGateFailures)
	}
	slot := now
	for _, g := range gates {
		if g.free.After(slot) {
			slot = g.free
		}
	}
	t := &Ticket{l: l, Wait: slot.Sub(now)}
	if t.Wait <= 0 {
		t.Wait = 0
	}
	if t.Wait > 0 {
		for _, g := range gates {
			if g.waiting >= g.maxWaiting() {
				return nil, ErrBusy
			}
		}
	}
	for _, g := range gates {
		b := booking{g: g, prev: g.free, ends: slot.Add(g.spacing())}
		g.free = b.ends
		if t.Wait > 0 {
			g.waiting++
		}
		t.booked = append(t.booked, b)
	}
	return t, nil
}

// Done ends the wait of a ticket whose attempt goes on to its check.
func (t *Ticket) Done() { t.end(false) }

// Abandon ends the wait of a ticket whose client left (or whose server is
// stopping): its turn is given back where no later attempt booked after it.
func (t *Ticket) Abandon() { t.end(true) }

func (t *Ticket) end(abandon bool) {
	if t == nil || t.l == nil {
		return
	}
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	for _, b := range t.booked {
		if t.Wait > 0 && b.g.waiting > 0 {
			b.g.waiting--
		}
		if abandon && b.g.free.Equal(b.ends) {
			b.g.free = b.prev
		}
	}
	t.l = nil
}

// knownGoodLocked reports whether name logged in from ip lately.
func (l *Limiter) knownGoodLocked(username, ip string, now time.Time) bool {
	g, ok := l.good[normalName(username)][client(ip)]
	return ok && now.Sub(g.at) <= KnownGoodFor
}

// Fail records a failed login and returns how long to wait before
// answering it.
func (l *Limiter) Fail(username, ip string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	count := func(k string) *gate {
		e := l.recentLocked(k, now)
		if e == nil {
			l.makeRoomLocked(now)
			e = &gate{ip: strings.HasPrefix(k, "ip:")}
			l.entries[k] = e
		}
		e.n++
		e.last = now
		// The gate's next attempt waits the delay it has now earned.
		if free := now.Add(e.spacing()); free.After(e.free) {
			e.free = free
		}
		return e
	}
	n := max(count(nameKey(username)).n, count(ipKey(ip)).n)
	count(pairKey(username, ip))
	return Delay(n)
}

// makeRoomLocked keeps the table within MaxEntries: when it is full, old
// entries go, and under a flood of fresh names random ones (Go's map
// order) down to 99% of the room, so that a flood cannot keep a name it
// attacks from being counted, and the sweep happens once per hundredth of
// the room. Entries with attempts waiting stay.
func (l *Limiter) makeRoomLocked(now time.Time) {
	if len(l.entries) < MaxEntries {
		return
	}
	for k, e := range l.entries {
		if now.Sub(e.last) > Forget && e.waiting == 0 {
			delete(l.entries, k)
		}
	}
	for k, e := range l.entries {
		if len(l.entries) < MaxEntries-MaxEntries/100 {
			return
		}
		if e.waiting == 0 {
			delete(l.entries, k)
		}
	}
}

// Succeed forgets the failures of the name from that IP, and makes ip
// known-good for the name. The failures of the name from anywhere stay
// (they fade after Forget): an owner whose client logs in every few
// minutes must not reset the pace of guesses at their account from other
// IPs; the owner's own known-good IPs do not wait for them. Nor do those
// of the IP go: one good login must not reset the count of guesses at
// other names.
func (l *Limiter) Succeed(username, ip string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := pairKey(username, ip)
	// A gate with attempts waiting keeps its schedule; its count goes.
	if e := l.entries[k]; e != nil && e.waiting > 0 {
		e.n = 0
	} else {
		delete(l.entries, k)
	}
	name, ip := normalName(username), client(ip)
	g := goodIP{at: now}
	if l.remember != nil && now.Sub(l.good[name][ip].told) >= RememberEvery && l.remember(name, ip, now) {
		g.told = now
	}
	l.markGoodLocked(name, ip, g, now)
}

// markGoodLocked makes ip known-good for name as of g (the later of each
// time it knows and g's), keeping at most KnownGoodPerName IPs per name
// (those of the latest logins).
func (l *Limiter) markGoodLocked(name, ip string, g goodIP, now time.Time) {
	ips := l.good[name]
	if ips == nil {
		if len(l.good) >= MaxEntries {
			l.forgetGoodLocked(now)
		}
		ips = make(map[string]goodIP)
		l.good[name] = ips
	}
	if prev, ok := ips[ip]; ok {
		if prev.at.After(g.at) {
			g.at = prev.at
		}
		if prev.told.After(g.told) {
			g.told = prev.told
		}
		ips[ip] = g
		return
	}
	if len(ips) >= KnownGoodPerName {
		oldest := ""
		for k, o := range ips {
			if oldest == "" || o.at.Before(ips[oldest].at) {
				oldest = k
			}
		}
		if !g.at.After(ips[oldest].at) {
			return // older than every one kept
		}
		delete(ips, oldest)
	}
	ips[ip] = g
}

// forgetGoodLocked makes room in the known-good table: expired names go,
// then any, down to 99%.
func (l *Limiter) forgetGoodLocked(now time.Time) {
	for name, ips := range l.good {
		for ip, g := range ips {
			if now.Sub(g.at) > KnownGoodFor {
				delete(ips, ip)
			}
		}
		if len(ips) == 0 {
			delete(l.good, name)
		}
	}
	for name := range l.good {
		if len(l.good) < MaxEntries-MaxEntries/100 {
			return
		}
		delete(l.good, name)
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

// Wait books a's turn and waits it out with sleep (which returns early
// when ctx ends): nil when the password may now be checked; ErrBusy; or
// ctx's error when ctx ended first (the client left, the server stops),
// and then the turn is given back.
func (l *Limiter) Wait(ctx context.Context, a Attempt, sleep func(context.Context, time.Duration)) error {
	t, err := l.Book(a)
	if err != nil {
		return err
	}
	if t.Wait > 0 {
		sleep(ctx, t.Wait)
	}
	if err := ctx.Err(); err != nil {
		t.Abandon()
		return err
	}
	t.Done()
	return nil
}
