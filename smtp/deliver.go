package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hisp-project/hisp/dnsclient"
	"github.com/hisp-project/hisp/metrics"
	"github.com/hisp-project/hisp/store"
)

// TLSPolicy is how delivery to a next hop uses TLS (OUT-03: the payload is
// protected end to end; STARTTLS between HISPs is good practice, and a
// partner agreement may require it).
type TLSPolicy int

const (
	// TLSOpportunistic uses STARTTLS when offered, without verifying the
	// certificate, and goes on in plain text when the partner offers none
	// or the handshake fails (RFC 3207 as most MTAs do it).
	TLSOpportunistic TLSPolicy = iota
	// TLSRequired makes STARTTLS mandatory (a partner without it, or a
	// failed handshake, is a temporary failure: the message is retried)
	// but does not verify the certificate: encryption without
	// authentication.
	TLSRequired
	// TLSVerify is TLSRequired with the certificate verified against the
	// roots (DelivererConfig.TLSConfig's, else the system's) and the next
	// hop's name: the route's host, or the MX host name.
	TLSVerify
)

// ParseTLSPolicy reads "opportunistic" (or ""), "required" or "verify".
func ParseTLSPolicy(s string) (TLSPolicy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "opportunistic":
		return TLSOpportunistic, nil
	case "required":
		return TLSRequired, nil
	case "verify":
		return TLSVerify, nil
	}
	return 0, fmt.Errorf("TLS policy %q: want opportunistic, required or verify", s)
}

func (p TLSPolicy) String() string {
	switch p {
	case TLSRequired:
		return "required"
	case TLSVerify:
		return "verify"
	}
	return "opportunistic"
}

// Route is a static next hop for a destination domain; it overrides MX.
type Route struct {
	Addr string    // host:port
	TLS  TLSPolicy // for this route, instead of DelivererConfig.TLS
}

// ParseRoutes checks static routes (domain = host:port) and returns them by
// normalized domain.
func ParseRoutes(m map[string]Route) (map[string]Route, error) {
	out := make(map[string]Route, len(m))
	for domain, r := range m {
		d, err := store.NormalizeDomain(domain)
		if err != nil {
			return nil, fmt.Errorf("route for %q: %w", domain, err)
		}
		host, port, err := net.SplitHostPort(r.Addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("route for %s: %q: want host:port", d, r.Addr)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("route for %s: %q: bad port", d, r.Addr)
		}
		out[d] = r
	}
	return out, nil
}

// Queue is the part of the store the Deliverer uses; *store.Store
// implements it.
type Queue interface {
	ClaimDue(ctx context.Context, now time.Time, limit int, b store.Backoff) ([]store.QueuedMessage, error)
	QueueMessageData(ctx context.Context, id int64) ([]byte, error)
	UpdateRecipients(ctx context.Context, now time.Time, updates []store.RecipientUpdate) error
	RecoverQueue(ctx context.Context, now time.Time, own bool) (int64, error)
	RenewClaims(ctx context.Context, now time.Time) (int64, error)
	QueueFailed(ctx context.Context, limit int) ([]store.QueuedMessage, error)
	QueueDelayed(ctx context.Context, createdBefore time.Time, limit int) ([]store.QueuedMessage, error)
	MarkDelayNotified(ctx context.Context, id int64, at time.Time) error
	PurgeQueue(ctx context.Context, createdBefore time.Time) (int64, error)
}

// DelivererConfig configures a Deliverer. Zero values take the defaults.
type DelivererConfig struct {
	Queue   Queue          // required
	Local   LocalDeliverer // recipients in local domains; without it they wait
	Bouncer Bouncer        // DSNs; without it failures are only logged
	Sealer  Sealer         // recipients deferred at submission; without it they wait

	Hostname string // EHLO name; "localhost" if empty
	// Resolver is the DNS server (host:port) for MX and address look-ups;
	// "" for the first name server in /etc/resolv.conf.
	Resolver string
	Port     int              // port of MX hosts; 25
	Routes   map[string]Route // static routes by domain, overriding MX
	// TLS is the policy for MX deliveries (routes have their own);
	// TLSOpportunistic by default.
	TLS TLSPolicy
	// TLSConfig is the base of the client TLS configuration: its RootCAs
	// verify next hops under TLSVerify (nil: the system roots).
	TLSConfig *tls.Config

	Backoff store.Backoff // zero: store.DefaultBackoff()
	// DelayedAfter is how long after queuing a message with recipients
	// still being retried gets its (one) delayed DSN; 4 hours; < 0: never.
	DelayedAfter time.Duration
	// KeepFinished is how long messages whose recipients are all done are
	// kept for the record; 7 days.
	KeepFinished time.Duration

	Workers             int           // concurrent deliveries; 8
	ConnsPerDestination int           // connections to one domain at once; 2
	Batch               int           // messages per claim; 100
	PollInterval        time.Duration // look for due work at least this often; 2 s
	// ClaimRenewal is how often this node renews its claims and takes
	// over the claims of nodes whose lease ran out: a third of the
	// store's lease (store.DefaultLease).
	ClaimRenewal time.Duration
	// Leader, if set, says whether this node sends the queue's notices
	// (and purges) now: one node at a time when several share the queue
	// (the job lease NoticesLease, store.Job); nil: always.
	Leader         func(context.Context) bool
	DialTimeout    time.Duration // 30 s
	CommandTimeout time.Duration // 5 min
	DataTimeout    time.Duration // message transfer and its reply; 10 min
	// ShutdownGrace is how long a transaction in flight may go on after
	// Run's context ends before its connection is cut; 10 s.
	ShutdownGrace time.Duration

	Now    func() time.Time // the clock of queue times; time.Now
	Logger *slog.Logger     // slog.Default() if nil

	// Attempts, when set, counts the outcomes of delivery attempts, one
	// per recipient, by the label outcome: "delivered", "deferred" (4xx or
	// a network error: tried again later) or "bounced" (5xx, or the
	// attempts used up: failed for good, a DSN follows).
	Attempts *metrics.Counter
}

// Deliverer takes due recipients from the queue to their next hop: the
// network for remote domains, the LocalDeliverer for local ones.
type Deliverer struct {
	cfg     DelivererConfig
	q       Queue
	backoff store.Backoff
	res     *resolver
	log     *slog.Logger
	wake    chan struct{}
	sem     chan struct{} // delivery slots
	// attempts holds one of Workers slots per attempt from its start until
	// its outcome is stored (the recorder frees it): however the outcomes
	// wait for their commit, a crash repeats at most Workers attempts
	// that went through.
	attempts chan struct{}

	mu          sync.Mutex
	dests       map[string]*destQueue
	inflight    int // jobs handed to workers and not finished
	maxInflight int
	wg          sync.WaitGroup
	// running is set while Run takes work, with Run's contexts: Take
	// starts workers only then.
	running   bool
	ctx, hard context.Context
	// held is the bytes of messages handed over in memory (Take) and not
	// yet delivered; Reserve keeps it under maxHeld.
	held int64

	// records takes the outcomes of jobs to the recorder, which commits
	// them in groups (recorder); made by Run.
	records chan record

	// Used by Run's goroutine only.
	bounceRetry map[noticeKey]time.Time // failed notices wait before the next try
	lastPurge   time.Time
	// lastDelayedScan is when notices last looked for delayed messages,
	// lastFailedScan for failed ones.
	lastDelayedScan, lastFailedScan time.Time
	// failedSince is set by record when a recipient failed for good: its
	// failure DSN is looked for at the next round, not a poll later.
	failedSince atomic.Bool
	// lastRenewal is when claims were last renewed (maintain).
	lastRenewal time.Time
}

// NoticesLease is the job whose lease lets one node at a time send the
// queue's failure and delay notices (and purge), so that a sender gets
// each notice once when several nodes share the queue.
const NoticesLease = "queue-notices"

type noticeKey struct {
	id    int64
	final bool
}

// job is one message to one destination: its recipients there (all of
// them local for a local job).
type job struct {
	// msg is the message, without Data when claimed from the store
	// (messageData reads it) and with it when handed over (Take);
	// Recipients are the job's.
	msg    store.QueuedMessage
	domain string
	held   int64 // bytes of held the job releases when done
}

// maxHeld bounds the bytes of messages handed over in memory (Take):
// beyond it messages are queued due and read back when delivered.
const maxHeld = 32 << 20

// destQueue holds the jobs for one destination and counts its workers.
type destQueue struct {
	key     string
	domain  string
	local   bool
	seal    bool // the Sealer's: plain messages, their deferred recipients
	jobs    []job
	workers int
	more    chan struct{} // a job was added (linger)
}

// connLinger is how long a remote destination's worker keeps its
// connection open for another job once it has none, as MTAs cache
// connections: messages handed over one at a time (Take) would otherwise
// each pay a connection, STARTTLS and EHLO.
const connLinger = 2 * time.Second

// NewDeliverer checks the configuration and returns a Deliverer; Run
// starts it.
func NewDeliverer(cfg DelivererConfig) (*Deliverer, error) {
	if cfg.Queue == nil {
		return nil, errors.New("deliverer: Queue is required")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.Port <= 0 {
		cfg.Port = 25
	}
	if cfg.Backoff == (store.Backoff{}) {
		cfg.Backoff = store.DefaultBackoff()
	}
	if cfg.DelayedAfter == 0 {
		cfg.DelayedAfter = 4 * time.Hour
	}
	if cfg.KeepFinished <= 0 {
		cfg.KeepFinished = 7 * 24 * time.Hour
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.PollInterval, 2*time.Second)
	def(&cfg.ClaimRenewal, store.DefaultLease/3)
	def(&cfg.DialTimeout, 30*time.Second)
	def(&cfg.CommandTimeout, 5*time.Minute)
	def(&cfg.DataTimeout, 10*time.Minute)
	def(&cfg.ShutdownGrace, 10*time.Second)
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.ConnsPerDestination <= 0 {
		cfg.ConnsPerDestination = 2
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	routes := make(map[string]Route, len(cfg.Routes))
	for domain, r := range cfg.Routes {
		d, err := store.NormalizeDomain(domain)
		if err != nil {
			return nil, fmt.Errorf("deliverer: route for %q: %w", domain, err)
		}
		if _, _, err := net.SplitHostPort(r.Addr); err != nil {
			return nil, fmt.Errorf("deliverer: route for %s: %q: want host:port", d, r.Addr)
		}
		routes[d] = r
	}
	cfg.Routes = routes
	return &Deliverer{
		cfg:         cfg,
		q:           cfg.Queue,
		backoff:     cfg.Backoff,
		res:         &resolver{c: dnsclient.Client{Server: cfg.Resolver, Timeout: 10 * time.Second}},
		log:         cfg.Logger.With(slog.String("component", "deliverer")),
		wake:        make(chan struct{}, 1),
		sem:         make(chan struct{}, cfg.Workers),
		attempts:    make(chan struct{}, cfg.Workers),
		dests:       map[string]*destQueue{},
		maxInflight: max(cfg.Workers*32, cfg.Batch),
		bounceRetry: map[noticeKey]time.Time{},
	}, nil
}

// Wake makes Run look for due work now (after an Enqueue, say) instead of
// at its next poll. It never blocks.
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends. It first makes recipients left in
// delivering by a previous run due again (it must be the only deliverer of
// its queue). When ctx ends it stops claiming and dialing; a transaction in
// flight has ShutdownGrace to finish, then its connection is cut; jobs not
// started go back to the queue, due at once. Run returns when every worker
// has recorded its outcomes.
func (d *Deliverer) Run(ctx context.Context) error {
	n, err := d.q.RecoverQueue(ctx, d.cfg.Now(), true)
	if err != nil {
		return fmt.Errorf("deliverer: %w", err)
	}
	if n > 0 {
		d.log.Info("recipients of an interrupted run are due again", slog.Int64("recipients", n))
	}
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(d.cfg.ShutdownGrace, cancelHard) })
	defer stop()
	d.records = make(chan record, 256)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		d.recorder(hard)
	}()
	d.mu.Lock()
	d.running, d.ctx, d.hard = true, ctx, hard
	d.mu.Unlock()
	// Awake at least every ClaimRenewal too: with a lease shorter than
	// three poll intervals, claims renewed only at polls would run out
	// while their attempts are still in flight.
	tick := time.NewTicker(min(d.cfg.PollInterval, d.cfg.ClaimRenewal))
	defer tick.Stop()
	for ctx.Err() == nil {
		d.maintain(ctx)
		more := d.dispatch(ctx, hard)
		d.notices(ctx)
		if more {
			continue
		}
		select {
		case <-ctx.Done():
		case <-d.wake:
		case <-tick.C:
		}
	}
	d.mu.Lock()
	d.running = false
	d.mu.Unlock()
	d.wg.Wait()
	close(d.records)
	<-recorded
	d.log.Info("deliverer stopped")
	return nil
}

// maintain keeps this node's share of a queue that several nodes may use,
// every ClaimRenewal: it renews the node's claims (an attempt in flight
// stays this node's), takes over the claims of nodes whose lease ran out
// (a node that died: its recipients are due again, here or elsewhere).
func (d *Deliverer) maintain(ctx context.Context) {
	now := d.cfg.Now()
	if !d.lastRenewal.IsZero() && now.Sub(d.lastRenewal) < d.cfg.ClaimRenewal {
		return
	}
	d.lastRenewal = now
	if _, err := d.q.RenewClaims(ctx, now); err != nil && ctx.Err() == nil {
		d.log.Error("renew claims", slog.String("error", err.Error()))
	}
	if n, err := d.q.RecoverQueue(ctx, now, false); err != nil && ctx.Err() == nil {
		d.log.Error("take over expired claims", slog.String("error", err.Error()))
	} else if n > 0 {
		d.log.Warn("recipients claimed by a node whose lease ran out are due again", slog.Int64("recipients", n))
	}
}

// dispatch claims due work and hands it to workers. It reports whether
// there may be more due work and room for it.
func (d *Deliverer) dispatch(ctx, hard context.Context) bool {
	d.mu.Lock()
	room := d.maxInflight - d.inflight
	d.mu.Unlock()
	if room <= 0 {
		return false
	}
	limit := min(room, d.cfg.Batch)
	msgs, err := d.q.ClaimDue(ctx, d.cfg.Now(), limit, d.backoff)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("claim due messages", slog.String("error", err.Error()))
		}
		return false
	}
	if len(msgs) == 0 {
		return false
	}
	jobs := splitJobs(msgs)
	d.mu.Lock()
	start := d.addJobs(jobs)
	d.mu.Unlock()
	for _, dq := range start {
		d.wg.Add(1)
		go d.worker(ctx, hard, dq)
	}
	return len(msgs) == limit
}

// splitJobs splits messages into jobs, one per destination.
func splitJobs(msgs []store.QueuedMessage) []job {
	var jobs []job
	for _, m := range msgs {
		if m.Plain { // never sent as it is: sealed again (Sealer)
			jobs = append(jobs, job{msg: m})
			continue
		}
		var local []store.QueuedRecipient
		byDomain := map[string][]store.QueuedRecipient{}
		var order []string
		for _, r := range m.Recipients {
			if r.Local {
				local = append(local, r)
				continue
			}
			if _, ok := byDomain[r.Domain]; !ok {
				order = append(order, r.Domain)
			}
			byDomain[r.Domain] = append(byDomain[r.Domain], r)
		}
		if len(local) > 0 {
			jm := m
			jm.Recipients = local
			jobs = append(jobs, job{msg: jm})
		}
		for _, dom := range order {
			jm := m
			jm.Recipients = byDomain[dom]
			jobs = append(jobs, job{msg: jm, domain: dom})
		}
	}
	return jobs
}

// addJobs hands jobs to their destinations, all at once so that a
// destination's jobs share its connection, and returns the destinations
// that need one more worker each. d.mu is held.
func (d *Deliverer) addJobs(jobs []job) []*destQueue {
	var start []*destQueue
	for _, j := range jobs {
		key := "remote:" + j.domain
		switch {
		case j.msg.Plain:
			key = "seal"
		case j.domain == "":
			key = "local"
		}
		dq := d.dests[key]
		if dq == nil {
			dq = &destQueue{key: key, domain: j.domain, local: j.domain == "" && !j.msg.Plain, seal: j.msg.Plain,
				more: make(chan struct{}, 1)}
			d.dests[key] = dq
		}
		dq.jobs = append(dq.jobs, j)
		select {
		case dq.more <- struct{}{}:
		default:
		}
		d.inflight++
	}
	for _, dq := range d.dests {
		// One worker per destination, more for a backlog: one per job for
		// local delivery (no connection to share), one per 8 jobs for a
		// remote domain up to ConnsPerDestination.
		want := 1
		if dq.local || dq.seal {
			want = min(len(dq.jobs), d.cfg.Workers)
		} else {
			want = min((len(dq.jobs)+7)/8, d.cfg.ConnsPerDestination)
		}
		for dq.workers < want {
			dq.workers++
			start = append(start, dq)
		}
	}
	return start
}

// Reserve makes room for a message of size bytes that the caller is about
// to queue claimed (store.EnqueueExtras.Claim with Backoff) and then hand
// over with Take, so that the deliverer neither claims it in a transaction
// of its own nor reads it back. It returns false when Run is not taking
// work or the deliverer is full: the message is then queued due, for
// ClaimDue. Every true is followed by one Take or Release.
func (d *Deliverer) Reserve(size int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running || d.ctx.Err() != nil || d.inflight >= d.maxInflight || d.held+size > maxHeld {
		return false
	}
	d.inflight++
	d.held += size
	return true
}

// Release gives back a reservation whose message was not queued claimed.
func (d *Deliverer) Release(size int64) {
	d.mu.Lock()
	d.inflight--
	d.held -= size
	d.mu.Unlock()
}

// Backoff is the retry schedule the deliverer claims with.
func (d *Deliverer) Backoff() store.Backoff { return d.backoff }

// Take starts the delivery of messages queued claimed
// (store.EnqueueResult.Claimed) under a reservation of size bytes
// (Reserve), with their data. When Run has stopped meanwhile they go back
// to the queue, due at once.
func (d *Deliverer) Take(msgs []store.QueuedMessage, size int64) {
	jobs := splitJobs(msgs)
	d.mu.Lock()
	if !d.running || len(jobs) == 0 {
		d.mu.Unlock()
		d.Release(size)
		if len(jobs) > 0 {
			d.putBack(context.Background(), jobs)
		}
		return
	}
	jobs[0].held = size
	d.inflight-- // the reservation, now counted by its jobs
	start := d.addJobs(jobs)
	for range start {
		d.wg.Add(1)
	}
	ctx, hard := d.ctx, d.hard
	d.mu.Unlock()
	for _, dq := range start {
		go d.worker(ctx, hard, dq)
	}
}

// next takes the next job of a destination. It returns false when there is
// none (the worker then ends, unless keep: it may linger) and, when ctx has
// ended, the jobs left, for the caller to put back.
func (d *Deliverer) next(ctx context.Context, dq *destQueue, keep bool) (job, []job, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var left []job
	if ctx.Err() != nil {
		left, dq.jobs = dq.jobs, nil
		d.inflight -= len(left)
		for _, j := range left {
			d.held -= j.held
		}
	}
	if len(dq.jobs) == 0 {
		if keep && ctx.Err() == nil {
			return job{}, nil, false
		}
		dq.workers--
		if dq.workers == 0 && d.dests[dq.key] == dq {
			delete(d.dests, dq.key)
		}
		return job{}, left, false
	}
	j := dq.jobs[0]
	dq.jobs = dq.jobs[1:]
	return j, nil, true
}

// done counts a finished job, waking Run if it was waiting for room.
func (d *Deliverer) done(j job) {
	d.mu.Lock()
	full := d.inflight >= d.maxInflight
	d.inflight--
	d.held -= j.held
	d.mu.Unlock()
	if full {
		d.Wake()
	}
}

// remoteConn is a worker's connection to its destination, or the reason it
// has none.
type remoteConn struct {
	c    *client
	fail *failure
	used int // transactions done on c
}

func (w *remoteConn) close() {
	if w.c != nil {
		w.c.quit()
		w.c = nil
	}
	w.used = 0
}

// failure is why a destination cannot be reached: a reply of its own or of
// a server met on the way.
type failure struct {
	reply     Reply
	remote    string // the server that gave the reply, if any
	tlsFailed bool
}

func (d *Deliverer) worker(ctx, hard context.Context, dq *destQueue) {
	defer d.wg.Done()
	slot := false // holding a delivery slot (sem)
	select {
	case d.sem <- struct{}{}:
		slot = true
	case <-ctx.Done():
	}
	defer func() {
		if slot {
			<-d.sem
		}
	}()
	var w remoteConn
	defer w.close()
	for {
		keep := !dq.local && !dq.seal && w.c != nil && slot
		j, left, ok := d.next(ctx, dq, keep)
		if len(left) > 0 {
			d.putBack(ctx, left)
		}
		if !ok && keep && ctx.Err() == nil {
			slot = d.linger(ctx, dq)
			j, left, ok = d.next(ctx, dq, false)
			if len(left) > 0 {
				d.putBack(ctx, left)
			}
		}
		if !ok {
			return
		}
		d.attempts <- struct{}{} // freed by record or the recorder
		var updates []store.RecipientUpdate
		switch {
		case dq.seal:
			updates = d.sealDeferred(hard, j)
		case dq.local:
			updates = d.deliverLocal(hard, j)
		default:
			updates = d.deliverRemote(hard, &w, dq, j)
		}
		d.record(j, updates)
		d.done(j)
	}
}

// linger waits up to connLinger for another job of the worker's
// destination, its connection open and its delivery slot free meanwhile
// (other destinations' workers may take it). It reports whether the
// worker holds a slot again.
func (d *Deliverer) linger(ctx context.Context, dq *destQueue) bool {
	<-d.sem
	t := time.NewTimer(connLinger)
	defer t.Stop()
	// A wake-up may be stale (left by a job this worker already took):
	// only a job waiting ends the wait early.
	for waiting := true; waiting; {
		select {
		case <-dq.more:
			d.mu.Lock()
			waiting = len(dq.jobs) == 0
			d.mu.Unlock()
		case <-t.C:
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	select {
	case d.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// putBack returns jobs not started at shutdown to the queue, due at once.
func (d *Deliverer) putBack(ctx context.Context, jobs []job) {
	now := d.cfg.Now()
	var updates []store.RecipientUpdate
	for _, j := range jobs {
		state := store.StateQueued
		if j.msg.Plain {
			state = store.StateDeferred
		}
		for _, r := range j.msg.Recipients {
			updates = append(updates, store.RecipientUpdate{ID: r.ID, State: state, NextAttempt: now,
				Text: "delivery not started: hisp shutting down"})
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := d.q.UpdateRecipients(wctx, now, updates); err != nil {
		d.log.Error("put back jobs at shutdown (recovered at next start)", slog.String("error", err.Error()))
	}
}

// record is the outcome of a job, for the recorder.
type record struct {
	j       job
	updates []store.RecipientUpdate
}

// record logs the outcomes of a job and hands them to the recorder, which
// stores them and frees the job's attempt slot.
func (d *Deliverer) record(j job, updates []store.RecipientUpdate) {
	if len(updates) == 0 {
		<-d.attempts
		return
	}
	for _, u := range updates {
		rcpt := ""
		for _, r := range j.msg.Recipients {
			if r.ID == u.ID {
				rcpt = r.Address
			}
		}
		d.log.Info("delivery attempt", slog.Int64("queue_id", j.msg.ID), slog.String("message_id", j.msg.MessageID),
			slog.String("rcpt", rcpt), slog.String("state", string(u.State)), slog.String("remote", u.RemoteMTA),
			slog.String("reply", statusText(u)))
	}
	j.msg.Data = nil // not kept for the record
	d.records <- record{j, updates}
}

// recorder stores the outcomes of jobs until records is closed: every
// outcome waiting when it is free in one transaction (one fsync for many
// attempts, as the queue commits many messages at once), then counts them
// (DelivererConfig.Attempts) and wakes Run for failure DSNs. Until an
// outcome is stored its recipients stay in delivering, due again after a
// crash (RecoverQueue), so an attempt is never lost.
func (d *Deliverer) recorder(hard context.Context) {
	for first := range d.records {
		batch := []record{first}
	gather:
		for len(batch) < 256 {
			select {
			case r, ok := <-d.records:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		d.store(hard, batch)
	}
}

// store commits a batch of outcomes; when the batch fails as a whole,
// each job's outcomes are tried alone, so that one cannot keep the
// others from the record.
func (d *Deliverer) store(hard context.Context, batch []record) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range batch {
		d.relayed(ctx, r.j, r.updates)
	}
	var all []store.RecipientUpdate
	for _, r := range batch {
		all = append(all, r.updates...)
	}
	err := d.storeOutcomes(hard, all)
	failed := false
	for _, r := range batch {
		rerr := err
		if err != nil && len(batch) > 1 {
			// The batch's tries waited out a passing failure: one try each
			// (under a context that cannot end, as storeOutcomes's).
			rerr = d.q.UpdateRecipients(context.Background(), d.cfg.Now(), r.updates)
		}
		if !d.stored(r, rerr) {
			continue
		}
		for _, u := range r.updates {
			failed = failed || u.State == store.StateFailed
		}
	}
	for range batch {
		<-d.attempts
	}
	if failed {
		d.failedSince.Store(true)
		d.Wake() // the failure DSN
	}
}

// outcomeRetries are the waits before storing outcomes again after a
// failure: a PostgreSQL deadlock or failover, a store busy past its
// timeout. Outcomes never stored leave their recipients delivering, to be
// delivered a second time once their claim runs out.
var outcomeRetries = [...]time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second}

// storeOutcomes stores the outcomes of attempts, trying again after a
// failure (outcomeRetries) until stop ends (the deliverer's shutdown
// grace); each try is one transaction, all or nothing, and changes only
// recipients this node still holds, so a try that committed unseen makes
// the next change nothing. Its statements run under a context that cannot
// end (the SQLite driver runs each statement of one that can in a
// goroutine of its own).
func (d *Deliverer) storeOutcomes(stop context.Context, updates []store.RecipientUpdate) error {
	err := d.q.UpdateRecipients(context.Background(), d.cfg.Now(), updates)
	for _, wait := range outcomeRetries {
		if err == nil {
			break
		}
		d.log.Warn("record delivery outcomes, trying again", slog.Duration("in", wait), slog.String("error", err.Error()))
		select {
		case <-time.After(wait):
		case <-stop.Done():
			return err
		}
		err = d.q.UpdateRecipients(context.Background(), d.cfg.Now(), updates)
	}
	return err
}

// stored counts the outcomes of a job once recorded, so that a scrape
// that sees the attempt sees the recipient's new state too; it reports
// whether they were.
func (d *Deliverer) stored(r record, err error) bool {
	if err != nil {
		// The rows stay in delivering: RecoverQueue makes them due again
		// at the next start.
		d.log.Error("record delivery outcomes", slog.Int64("queue_id", r.j.msg.ID), slog.String("error", err.Error()))
		return false
	}
	if !r.j.msg.Plain { // sealing is no delivery attempt
		for _, u := range r.updates {
			d.cfg.Attempts.Inc(attemptOutcome(u.State))
		}
	}
	return true
}

// relayed tells a Bouncer that is a RelayRecorder of the recipients of a
// job that were accepted.
func (d *Deliverer) relayed(ctx context.Context, j job, updates []store.RecipientUpdate) {
	rr, ok := d.cfg.Bouncer.(RelayRecorder)
	if !ok {
		return
	}
	var outs []RecipientOutcome
	now := d.cfg.Now()
	for _, u := range updates {
		if u.State != store.StateDelivered {
			continue
		}
		for _, r := range j.msg.Recipients {
			if r.ID == u.ID {
				outs = append(outs, RecipientOutcome{Recipient: r.Address, Reply: Reply{Code: u.Code, Enhanced: u.Enhanced, Message: u.Text},
					RemoteMTA: u.RemoteMTA, Attempts: r.Attempts, LastAttempt: now})
			}
		}
	}
	if len(outs) > 0 {
		rr.Relayed(ctx, j.msg, outs)
	}
}

// attemptOutcome is the label of DelivererConfig.Attempts for the state an
// attempt left a recipient in.
func attemptOutcome(st store.RecipientState) string {
	switch st {
	case store.StateDelivered:
		return "delivered"
	case store.StateFailed, store.StateBounced:
		return "bounced"
	}
	return "deferred"
}

func statusText(u store.RecipientUpdate) string {
	return (&Reply{Code: u.Code, Enhanced: u.Enhanced, Message: u.Text}).String()
}

// outcome turns a reply for a recipient into its update: 2xx delivered,
// 5xx failed, anything else retried unless the attempts are used up.
func (d *Deliverer) outcome(r store.QueuedRecipient, rep Reply, remote string) store.RecipientUpdate {
	u := store.RecipientUpdate{ID: r.ID, Code: rep.Code, Enhanced: rep.Enhanced, Text: oneLine(rep.Message), RemoteMTA: remote}
	switch {
	case rep.Success():
		u.State = store.StateDelivered
	case rep.Permanent():
		u.State = store.StateFailed
	case r.Attempts >= d.backoff.MaxAttempts():
		u.State = store.StateFailed
		u.Text = fmt.Sprintf("giving up after %d attempts; last: %s", r.Attempts, u.Text)
	default:
		u.State = store.StateQueued
	}
	return u
}

func (d *Deliverer) allOutcomes(rcpts []store.QueuedRecipient, rep Reply, remote string) []store.RecipientUpdate {
	var out []store.RecipientUpdate
	for _, r := range rcpts {
		out = append(out, d.outcome(r, rep, remote))
	}
	return out
}

// messageData reads a job's message; ok false with no updates when the
// message was dropped meanwhile.
func (d *Deliverer) messageData(ctx context.Context, j job) ([]byte, []store.RecipientUpdate, bool) {
	if j.msg.Data != nil { // handed over (Take)
		return j.msg.Data, nil, true
	}
	data, err := d.q.QueueMessageData(ctx, j.msg.ID)
	if errors.Is(err, store.ErrNotFound) {
		d.log.Info("queued message dropped before delivery", slog.Int64("queue_id", j.msg.ID))
		return nil, nil, false
	}
	if err != nil {
		return nil, d.allOutcomes(j.msg.Recipients, Reply{Code: 451, Enhanced: "4.3.0",
			Message: "reading the queued message: " + err.Error()}, ""), false
	}
	return data, nil, true
}

// sealDeferred hands a plain message's due deferred recipients to the
// Sealer.
func (d *Deliverer) sealDeferred(ctx context.Context, j job) []store.RecipientUpdate {
	retry := func(why string) []store.RecipientUpdate { // at the retry time the claim recorded
		var out []store.RecipientUpdate
		for _, r := range j.msg.Recipients {
			out = append(out, store.RecipientUpdate{ID: r.ID, State: store.StateDeferred, Code: 451, Enhanced: "4.3.0", Text: why})
		}
		return out
	}
	if d.cfg.Sealer == nil {
		return retry("no sealer configured")
	}
	data, err := d.q.QueueMessageData(ctx, j.msg.ID)
	if errors.Is(err, store.ErrNotFound) {
		d.log.Info("queued message dropped before sealing", slog.Int64("queue_id", j.msg.ID))
		return nil
	}
	if err != nil {
		return retry("reading the queued message: " + err.Error())
	}
	return d.cfg.Sealer.SealDeferred(ctx, j.msg, data)
}

// deliverLocal hands a message to the LocalDeliverer, once per recipient
// so that each gets its own outcome.
func (d *Deliverer) deliverLocal(ctx context.Context, j job) []store.RecipientUpdate {
	data, updates, ok := d.messageData(ctx, j)
	if !ok {
		return updates
	}
	for _, r := range j.msg.Recipients {
		var rep Reply
		if d.cfg.Local == nil {
			rep = Reply{Code: 451, Enhanced: "4.3.0", Message: "no local delivery configured"}
		} else {
			env := Envelope{MailFrom: j.msg.MailFrom, Recipients: []string{r.Address}, User: j.msg.User}
			reply, err := d.cfg.Local.DeliverLocal(ctx, env, data)
			switch {
			case err != nil:
				rep = Reply{Code: 451, Enhanced: "4.3.0", Message: "local delivery: " + err.Error()}
			case reply == nil:
				rep = Reply{Code: 250, Enhanced: "2.0.0", Message: "delivered locally"}
			default:
				rep = *reply
			}
		}
		updates = append(updates, d.outcome(r, rep, ""))
	}
	return updates
}

// deliverRemote sends a message to its recipients at one destination over
// the worker's connection, dialing when there is none.
func (d *Deliverer) deliverRemote(ctx context.Context, w *remoteConn, dq *destQueue, j job) []store.RecipientUpdate {
	data, updates, ok := d.messageData(ctx, j)
	if !ok {
		return updates
	}
	rcpts := make([]string, len(j.msg.Recipients))
	for i, r := range j.msg.Recipients {
		rcpts[i] = r.Address
	}
	for try := 0; ; try++ {
		if w.c == nil && w.fail == nil {
			w.c, w.fail = d.connect(ctx, dq.domain)
			w.used = 0
		}
		if w.fail != nil {
			return d.allOutcomes(j.msg.Recipients, w.fail.reply, w.fail.remote)
		}
		host := w.c.host
		replies, err := w.c.send(j.msg.MailFrom, rcpts, data)
		reused := w.used > 0
		if err != nil {
			w.c.close()
			w.c = nil
		} else {
			w.used++
		}
		if replies != nil {
			for i, r := range j.msg.Recipients {
				updates = append(updates, d.outcome(r, *replies[i], host))
			}
			return updates
		}
		// The connection broke. On a reused connection that may be the
		// server having closed it while idle: dial again once.
		if reused && try == 0 && ctx.Err() == nil {
			d.log.Debug("reused connection failed, dialing again", slog.String("host", host), slog.String("error", err.Error()))
			continue
		}
		return d.allOutcomes(j.msg.Recipients, Reply{Code: 451, Enhanced: "4.4.2",
			Message: fmt.Sprintf("connection to %s failed during the transaction: %v", host, err)}, "")
	}
}

// connect finds the next hop of a domain and returns a connection to it,
// greeted, EHLO'd and with STARTTLS done when offered (or required).
func (d *Deliverer) connect(ctx context.Context, domain string) (*client, *failure) {
	if r, ok := d.cfg.Routes[domain]; ok {
		host, _, _ := net.SplitHostPort(r.Addr)
		return d.tryAddrs(ctx, host, []string{r.Addr}, r.TLS)
	}
	hosts, err := d.res.lookupMX(ctx, domain)
	if err != nil {
		var de *dnsError
		switch {
		case errors.Is(err, errNullMX):
			return nil, &failure{reply: Reply{Code: 556, Enhanced: "5.1.10", Message: err.Error()}}
		case errors.As(err, &de) && de.permanent:
			return nil, &failure{reply: Reply{Code: 550, Enhanced: "5.1.2", Message: err.Error()}}
		}
		return nil, &failure{reply: Reply{Code: 451, Enhanced: "4.4.3", Message: "MX look-up failed: " + err.Error()}}
	}
	implicit := len(hosts) == 1 && hosts[0] == domain
	var last *failure
	for _, h := range hosts {
		ips, err := d.res.lookupIP(ctx, h)
		if err != nil {
			var de *dnsError
			if implicit && errors.As(err, &de) && de.permanent {
				return nil, &failure{reply: Reply{Code: 550, Enhanced: "5.1.2",
					Message: fmt.Sprintf("domain %s has no MX record and no address", domain)}}
			}
			last = &failure{reply: Reply{Code: 451, Enhanced: "4.4.3", Message: fmt.Sprintf("address of mail host %s: %v", h, err)}}
			continue
		}
		var addrs []string
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip.String(), strconv.Itoa(d.cfg.Port)))
		}
		c, f := d.tryAddrs(ctx, h, addrs, d.cfg.TLS)
		if c != nil {
			return c, nil
		}
		last = f
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		last = &failure{reply: Reply{Code: 451, Enhanced: "4.4.1", Message: "no mail host reachable for " + domain}}
	}
	return nil, last
}

// tryAddrs dials the addresses of one host in order. When opportunistic TLS
// fails, the address is dialed again without it.
func (d *Deliverer) tryAddrs(ctx context.Context, host string, addrs []string, policy TLSPolicy) (*client, *failure) {
	var last *failure
	for _, a := range addrs {
		c, f := d.dial(ctx, host, a, true, policy)
		if f != nil && f.tlsFailed && policy == TLSOpportunistic {
			d.log.Info("opportunistic TLS failed, delivering without", slog.String("host", host), slog.String("addr", a),
				slog.String("error", f.reply.Message))
			c, f = d.dial(ctx, host, a, false, policy)
		}
		if c != nil {
			return c, nil
		}
		last = f
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// dial connects to one address and gets the session ready for MAIL.
func (d *Deliverer) dial(ctx context.Context, host, addr string, useTLS bool, policy TLSPolicy) (*client, *failure) {
	requireTLS := policy != TLSOpportunistic
	temp := func(enh, format string, args ...any) *failure {
		return &failure{reply: Reply{Code: 451, Enhanced: enh, Message: fmt.Sprintf(format, args...)}}
	}
	dialer := net.Dialer{Timeout: d.cfg.DialTimeout}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, temp("4.4.1", "cannot connect to %s (%s): %v", host, addr, err)
	}
	c := &client{host: host, addr: addr, cmdTimeout: d.cfg.CommandTimeout, dataTime: d.cfg.DataTimeout}
	c.setConn(conn)
	c.stop = context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(f *failure) (*client, *failure) {
		c.close()
		return nil, f
	}
	r, err := c.readReply(d.cfg.CommandTimeout)
	if err != nil {
		return fail(temp("4.4.2", "no greeting from %s (%s): %v", host, addr, err))
	}
	if r.Code != 220 {
		return fail(&failure{reply: Reply{Code: 451, Enhanced: "4.4.2", Message: "greeting: " + r.String()}, remote: host})
	}
	if r, err := c.hello(d.cfg.Hostname); err != nil {
		return fail(temp("4.4.2", "EHLO to %s: %v", host, err))
	} else if r != nil {
		return fail(&failure{reply: Reply{Code: 451, Enhanced: "4.4.2", Message: "EHLO refused: " + r.String()}, remote: host})
	}
	if !useTLS {
		return c, nil
	}
	if _, ok := c.ext["STARTTLS"]; !ok {
		if requireTLS {
			return fail(&failure{reply: Reply{Code: 451, Enhanced: "4.7.10",
				Message: fmt.Sprintf("TLS is required for %s ([outbound] tls = %q) but it does not offer STARTTLS", host, policy.String())}, remote: host})
		}
		return c, nil
	}
	r, err = c.startTLS(ctx, d.tlsConfig(host, policy == TLSVerify))
	var te *tlsError
	switch {
	case errors.As(err, &te):
		f := temp("4.7.0", "TLS with %s (%s): %v", host, addr, te.err)
		f.tlsFailed = true
		return fail(f)
	case err != nil:
		return fail(temp("4.4.2", "STARTTLS with %s: %v", host, err))
	case r != nil && requireTLS:
		return fail(&failure{reply: Reply{Code: 451, Enhanced: "4.7.0", Message: "STARTTLS refused: " + r.String()}, remote: host})
	case r != nil:
		return c, nil // refused: go on in plain text
	}
	if r, err := c.hello(d.cfg.Hostname); err != nil {
		return fail(temp("4.4.2", "EHLO to %s after STARTTLS: %v", host, err))
	} else if r != nil {
		return fail(&failure{reply: Reply{Code: 451, Enhanced: "4.4.2", Message: "EHLO refused: " + r.String()}, remote: host})
	}
	return c, nil
}

// tlsConfig is the client configuration for a host: verified under
// TLSVerify, otherwise encryption without authentication.
func (d *Deliverer) tlsConfig(host string, verify bool) *tls.Config {
	var cfg *tls.Config
	if d.cfg.TLSConfig != nil {
		cfg = d.cfg.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.ServerName = host
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	cfg.InsecureSkipVerify = !verify
	return cfg
}

// notices sends the DSNs that are due: failure notices for recipients
// that failed for good, delayed notices for messages still being retried
// after DelayedAfter. It also purges old finished messages.
func (d *Deliverer) notices(ctx context.Context) {
	if d.cfg.Leader != nil && !d.cfg.Leader(ctx) {
		return // another node sends them
	}
	now := d.cfg.Now()
	// Failure notices are looked for when a recipient failed since the
	// last look, else once per poll interval (failures recorded by an
	// earlier run, retried notices): not after every message (Wake).
	var failed []store.QueuedMessage
	if d.failedSince.Swap(false) || now.Sub(d.lastFailedScan) >= d.cfg.PollInterval {
		d.lastFailedScan = now
		var err error
		failed, err = d.q.QueueFailed(ctx, 50)
		if err != nil && ctx.Err() == nil {
			d.log.Error("select failure notices", slog.String("error", err.Error()))
		}
		if len(failed) == 50 {
			d.failedSince.Store(true) // more next round
		}
	}
	for _, m := range failed {
		if t, ok := d.bounceRetry[noticeKey{m.ID, true}]; ok && now.Before(t) {
			continue
		}
		if ok := d.bounce(ctx, m, true); !ok {
			d.bounceRetry[noticeKey{m.ID, true}] = now.Add(time.Minute)
			continue
		}
		delete(d.bounceRetry, noticeKey{m.ID, true})
		var updates []store.RecipientUpdate
		for _, r := range m.Recipients {
			updates = append(updates, store.RecipientUpdate{ID: r.ID, State: store.StateBounced})
		}
		if err := d.q.UpdateRecipients(ctx, now, updates); err != nil {
			d.log.Error("mark recipients bounced", slog.Int64("queue_id", m.ID), slog.String("error", err.Error()))
		}
	}
	// Delayed notices are due hours after queuing: looking for them once
	// per poll interval is enough, and spares the store a scan after every
	// message (Wake).
	if d.cfg.DelayedAfter > 0 && now.Sub(d.lastDelayedScan) >= d.cfg.PollInterval {
		d.lastDelayedScan = now
		delayed, err := d.q.QueueDelayed(ctx, now.Add(-d.cfg.DelayedAfter), 50)
		if err != nil && ctx.Err() == nil {
			d.log.Error("select delayed notices", slog.String("error", err.Error()))
		}
		for _, m := range delayed {
			if t, ok := d.bounceRetry[noticeKey{m.ID, false}]; ok && now.Before(t) {
				continue
			}
			if ok := d.bounce(ctx, m, false); !ok {
				d.bounceRetry[noticeKey{m.ID, false}] = now.Add(time.Minute)
				continue
			}
			delete(d.bounceRetry, noticeKey{m.ID, false})
			if err := d.q.MarkDelayNotified(ctx, m.ID, now); err != nil {
				d.log.Error("mark delayed notice sent", slog.Int64("queue_id", m.ID), slog.String("error", err.Error()))
			}
		}
	}
	if now.Sub(d.lastPurge) > time.Hour {
		d.lastPurge = now
		if n, err := d.q.PurgeQueue(ctx, now.Add(-d.cfg.KeepFinished)); err != nil && ctx.Err() == nil {
			d.log.Error("purge finished messages", slog.String("error", err.Error()))
		} else if n > 0 {
			d.log.Info("purged finished messages", slog.Int64("messages", n))
		}
	}
}

// bounce hands a notice to the Bouncer; true when it is done with (sent,
// or not to be sent: null sender, no Bouncer).
func (d *Deliverer) bounce(ctx context.Context, m store.QueuedMessage, final bool) bool {
	kind := "delayed"
	if final {
		kind = "failure"
	}
	var rcpts []string
	for _, r := range m.Recipients {
		rcpts = append(rcpts, r.Address)
	}
	attrs := []any{slog.Int64("queue_id", m.ID), slog.String("message_id", m.MessageID), slog.String("from", m.MailFrom),
		slog.String("rcpts", strings.Join(rcpts, ",")), slog.String("notice", kind)}
	if m.MailFrom == "" {
		d.log.Info("no DSN for a message with the null sender", attrs...)
		return true
	}
	if d.cfg.Bouncer == nil {
		d.log.Warn("no DSN sent: no bouncer configured", attrs...)
		return true
	}
	var outs []RecipientOutcome
	for _, r := range m.Recipients {
		o := RecipientOutcome{Recipient: r.Address, Reply: Reply{Code: r.LastCode, Enhanced: r.LastEnhanced, Message: r.LastError},
			RemoteMTA: r.RemoteMTA, Attempts: r.Attempts, LastAttempt: r.LastAttempt}
		if !final {
			o.RetryUntil = d.retryUntil(r)
		}
		outs = append(outs, o)
	}
	if err := d.cfg.Bouncer.Bounce(ctx, m, outs, final); err != nil {
		d.log.Error("DSN failed, will retry", append(attrs, slog.String("error", err.Error()))...)
		return false
	}
	d.log.Info("DSN sent", attrs...)
	return true
}

// retryUntil estimates when a recipient's last attempt will be.
func (d *Deliverer) retryUntil(r store.QueuedRecipient) time.Time {
	b := d.backoff
	b.Jitter = 0
	t := r.NextAttempt
	for a := r.Attempts + 1; a < b.MaxAttempts(); a++ {
		t = t.Add(b.Delay(a))
	}
	return t
}
