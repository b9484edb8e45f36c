package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Putting messages in the outbound queue: Enqueue, and Queue, the
// group-committing writer that commits concurrent messages (with their
// Sent copies and delivery tracking) together.
// preparedMessage is a validated message ready for insertion.
type preparedMessage struct {
	m        QueuedMessage
	filing   *preparedFiling // nil: none
	tracking *TrackedMessage // nil: none
	more     []preparedMessage
	// claim is the node's claim on recipients queued claimed (delivering):
	// this node and until when, as ClaimDue records it.
	claim nodeClaim
}

// nodeClaim is a node's claim on queued recipients.
type nodeClaim struct {
	node  string
	until int64 // milliseconds
}

// size is the bytes a message puts in its transaction.
func (p preparedMessage) size() int64 {
	n := int64(len(p.m.Data))
	if p.filing != nil {
		n += int64(len(p.filing.msg))
	}
	for _, m := range p.more {
		n += m.size()
	}
	return n
}

// prepareEnqueue checks a message for Enqueue and fills in the derived
// fields. With claim, the recipients of a message that is not Plain are
// queued claimed for their first attempt at now, as ClaimDue would claim
// them.
func prepareEnqueue(m QueuedMessage, now time.Time, claim *Backoff) (preparedMessage, error) {
	if len(m.Data) == 0 {
		return preparedMessage{}, errors.New("enqueue: empty message")
	}
	if len(m.Recipients) == 0 {
		return preparedMessage{}, errors.New("enqueue: no recipients")
	}
	for _, s := range []string{m.MessageID, m.MailFrom, m.User, m.Origin} {
		if strings.ContainsAny(s, "\r\n\x00") {
			return preparedMessage{}, fmt.Errorf("enqueue: line break or NUL in %q", s)
		}
	}
	if m.MailFrom != "" {
		if _, _, err := splitAddress(m.MailFrom); err != nil {
			return preparedMessage{}, fmt.Errorf("enqueue: sender: %w", err)
		}
	}
	if m.Created.IsZero() {
		m.Created = now
	}
	m.Created = fromMillis(millis(m.Created))
	m.Size = int64(len(m.Data))
	seen := map[string]bool{}
	var rcpts []QueuedRecipient
	for _, r := range m.Recipients {
		local, domain, err := splitAddress(r.Address)
		if err != nil {
			return preparedMessage{}, fmt.Errorf("enqueue: recipient: %w", err)
		}
		addr := local + "@" + domain
		if seen[strings.ToLower(addr)] {
			continue
		}
		seen[strings.ToLower(addr)] = true
		q := QueuedRecipient{Address: addr, Domain: domain, Local: r.Local,
			State: StateQueued, NextAttempt: m.Created, Updated: m.Created}
		if m.Plain {
			// Deferred at submission: that was the first attempt.
			q.State, q.Attempts, q.LastAttempt = StateDeferred, 1, m.Created
			q.LastCode, q.LastEnhanced, q.LastError = r.LastCode, r.LastEnhanced, strings.Join(strings.Fields(r.LastError), " ")
			if !r.NextAttempt.IsZero() {
				q.NextAttempt = fromMillis(millis(r.NextAttempt))
			}
		}
		if claim != nil && !m.Plain {
			q.claim(StateDelivering, now, *claim) // as ClaimDue would
		}
		rcpts = append(rcpts, q)
	}
	m.Recipients = rcpts
	m.ID = 0
	m.DelayNotified = time.Time{}
	return preparedMessage{m: m}, nil
}

// splitAddress checks an envelope address and returns its local part and
// its domain, normalized. The local part keeps its case (it is the remote
// side's to interpret).
func splitAddress(address string) (local, domain string, err error) {
	a := strings.TrimSpace(address)
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", fmt.Errorf("invalid address %q: want local@domain", address)
	}
	local = a[:i]
	for _, c := range local {
		if c <= ' ' || c >= 0x7f {
			return "", "", fmt.Errorf("invalid address %q: character %q in local part", address, c)
		}
	}
	domain, err = NormalizeDomain(a[i+1:])
	if err != nil {
		return "", "", fmt.Errorf("invalid address %q: %w", address, err)
	}
	return local, domain, nil
}

// insertQueued adds one prepared message in tx and returns it with its
// ids.
func insertQueued(ctx context.Context, tx *txn, p preparedMessage) (QueuedMessage, error) {
	m := p.m
	created := millis(m.Created)
	var err error
	m.ID, err = insertID(ctx, tx, `INSERT INTO queue_messages
		(message_id, mail_from, auth_user, origin, data, size, created, delay_notified, plain)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)`, m.MessageID, m.MailFrom, m.User, m.Origin, m.Data, m.Size, created, m.Plain)
	if err != nil {
		return QueuedMessage{}, fmt.Errorf("insert queued message: %w", err)
	}
	m.Recipients = append([]QueuedRecipient(nil), m.Recipients...)
	for i := range m.Recipients {
		r := &m.Recipients[i]
		r.QueueID = m.ID
		var c nodeClaim
		if r.State == StateDelivering {
			c = p.claim // queued claimed for its first attempt
		}
		r.ID, err = insertID(ctx, tx, `INSERT INTO queue_recipients
			(queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
			 last_code, last_enhanced, last_error, remote_mta, status, updated, claimed_by, claimed_until)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', ?, ?, ?)`, m.ID, r.Address, r.Domain, r.Local, string(r.State), r.Attempts,
			millis(r.NextAttempt), millis(r.LastAttempt), r.LastCode, r.LastEnhanced, r.LastError, millis(r.Updated), c.node, c.until)
		if err != nil {
			return QueuedMessage{}, fmt.Errorf("insert queued recipient %s: %w", r.Address, err)
		}
	}
	return m, nil
}

// Enqueue adds a message to the queue in a transaction of its own and
// returns its id once the transaction is committed durably. Recipients are
// due at once. A server should use a Queue, which commits concurrent
// messages together.
func (s *Store) Enqueue(ctx context.Context, m QueuedMessage) (int64, error) {
	p, err := prepareEnqueue(m, time.Now(), nil)
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.tx(ctx, func(tx *txn) error {
		qm, err := insertQueued(ctx, tx, p)
		id = qm.ID
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	return id, nil
}

// ErrQueueClosed is returned by Queue.Enqueue after Close.
var ErrQueueClosed = errors.New("queue closed")

// QueueOptions tune a Queue's group commit.
type QueueOptions struct {
	MaxBatch      int   // messages per transaction; 0: 256
	MaxBatchBytes int64 // message bytes per transaction (one message may exceed it); 0: 64 MB
	// CommitDelay is how long the writer may wait for announced messages
	// (Announce) before it commits; 0: 10 ms; < 0: it never waits.
	CommitDelay time.Duration
}

// QueueStats counts a Queue's work.
type QueueStats struct {
	Messages int64 // messages committed
	Commits  int64 // transactions committed (each one fsync)
	Failed   int64 // Enqueue calls answered with an error
}

// Queue is the group-committing front of the outbound queue. Create it
// with NewQueue and stop it with Close; the other queue operations are
// methods of Store.
//
// Durability: Enqueue returns only after the transaction holding the
// message is committed with synchronous=FULL, that is after the WAL is
// fsynced, so an SMTP server may answer 250 when it returns.
//
// Group commit: one fsync per message would bound throughput by the disk's
// flush rate, so a single writer goroutine receives the Enqueue calls over
// a channel, takes every request waiting when it is free (up to MaxBatch
// messages and MaxBatchBytes), inserts them all in one transaction (each
// under a SAVEPOINT of its own, so that a bad message fails alone),
// commits once and then releases every waiting caller with its id. While
// one commit is being flushed the next batch gathers, so batches grow with
// the load and an idle queue adds no latency. Stats counts messages and
// commits. [Store.Enqueue] is the same insert in a transaction of its own,
// for callers without a Queue (the command line, tests).
type Queue struct {
	s        *Store
	maxBatch int
	maxBytes int64
	delay    time.Duration

	announced atomic.Int64  // messages announced and not yet handed over
	kick      chan struct{} // an announcement ended

	mu     sync.RWMutex // held for reading while sending on reqs; Close takes it to close reqs
	closed bool
	reqs   chan *enqueueReq
	done   chan struct{} // closed when the writer has finished

	messages, commits, failed atomic.Int64
}

type enqueueReq struct {
	ctx    context.Context
	ann    *Announcement // nil: none
	p      preparedMessage
	result chan enqueueResult // buffered, written once
}

type enqueueResult struct {
	id          int64
	filed       AppendResult
	filingErr   error
	tracked     TrackedMessage
	trackingErr error
	moreIDs     []int64
	claimed     []QueuedMessage
	err         error
}

// NewQueue starts the writer goroutine of a group-committing queue over s.
func NewQueue(s *Store, opts QueueOptions) *Queue {
	q := &Queue{s: s, maxBatch: opts.MaxBatch, maxBytes: opts.MaxBatchBytes,
		reqs: make(chan *enqueueReq, 256), done: make(chan struct{}), kick: make(chan struct{}, 1), delay: opts.CommitDelay}
	if q.maxBatch <= 0 {
		q.maxBatch = 256
	}
	// Group commit saves SQLite's fsyncs, one per transaction. PostgreSQL
	// commits each submission in a transaction of its own: its commits
	// are cheap to share among sessions already (its WAL writer), and a
	// batch would hold the locks of one submission (a Sent copy's mailbox)
	// for all of them, on every node.
	if s.db.engine == enginePostgres {
		q.maxBatch = 1
	}
	if q.maxBytes <= 0 {
		q.maxBytes = 64 << 20
	}
	if q.delay == 0 {
		q.delay = 10 * time.Millisecond
	}
	go q.writer()
	return q
}

// Enqueue adds a message to the queue and returns its id once the
// transaction that holds it is committed durably (fsynced). Concurrent calls
// share transactions. If ctx ends before the writer takes the message,
// Enqueue returns ctx's error and the message is not queued; once taken, it
// waits for the commit, so that its answer is always the truth.
func (q *Queue) Enqueue(ctx context.Context, m QueuedMessage) (int64, error) {
	res, err := q.enqueue(ctx, m, nil, nil, nil, nil)
	return res.ID, err
}

// EnqueueExtras are records committed with a queued message, in its
// transaction: no commit of their own, and they exist exactly when the
// message is queued. A record that fails does not fail the enqueue; the
// result says why it was left out.
type EnqueueExtras struct {
	Filing   *Filing         // the sender's Sent copy
	Tracking *TrackedMessage // the message's delivery tracking (package track builds it)
	// More are other queued messages of the same submission (the message
	// sealed with another partner's algorithms for other recipients):
	// committed with it or not at all.
	More []QueuedMessage
	// Claim, when set, queues the messages that are not Plain already
	// claimed for their first delivery attempt, as ClaimDue would claim
	// them at the commit with this schedule, and returns them with their
	// data in EnqueueResult.Claimed: the caller hands them to its
	// deliverer in memory, which spares the deliverer a claim transaction
	// and reading the message back. Only the process's one deliverer may
	// take them: after a crash RecoverQueue makes them due again, like any
	// claimed recipient.
	Claim *Backoff
	// Announced is the announcement of the message (Announce), ended when
	// the writer takes it.
	Announced *Announcement
}

// Announcement is a message on its way to the queue (Announce).
type Announcement struct {
	q    *Queue
	done atomic.Bool
}

// Announce tells the queue that a message is on its way (a submission
// being sealed). While messages are announced, the writer waits up to
// CommitDelay for them before it commits, so that concurrent submissions
// share a commit (one fsync, and one write of the pages they all change)
// instead of each paying for its own; an idle server's message is
// committed at once. Pass the announcement in EnqueueExtras, and call
// Done when the message will not come (Done may be called more than
// once).
func (q *Queue) Announce() *Announcement {
	q.announced.Add(1)
	return &Announcement{q: q}
}

// Done ends the announcement.
func (a *Announcement) Done() {
	if a == nil || !a.done.CompareAndSwap(false, true) {
		return
	}
	a.q.announced.Add(-1)
	select {
	case a.q.kick <- struct{}{}:
	default:
	}
}

// EnqueueResult is what EnqueueWith did.
type EnqueueResult struct {
	ID    int64        // the queued message
	Filed AppendResult // where the filing went
	// FilingErr says why the filing was not made (the account is over its
	// quota, say).
	FilingErr   error
	Tracked     TrackedMessage // the tracking as stored
	TrackingErr error
	MoreIDs     []int64 // the ids of EnqueueExtras.More, in order
	// Claimed are the messages queued claimed (EnqueueExtras.Claim), with
	// their ids, data and recipients.
	Claimed []QueuedMessage
}

// EnqueueWith is Enqueue that also commits the extras.
func (q *Queue) EnqueueWith(ctx context.Context, m QueuedMessage, x EnqueueExtras) (EnqueueResult, error) {
	var pf *preparedFiling
	if x.Filing != nil {
		var err error
		if pf, err = prepareFiling(*x.Filing); err != nil {
			return EnqueueResult{}, fmt.Errorf("enqueue: %w", err)
		}
	}
	return q.enqueue(ctx, m, pf, x.Tracking, x.Claim, x.Announced, x.More...)
}

func (q *Queue) enqueue(ctx context.Context, m QueuedMessage, f *preparedFiling, tm *TrackedMessage, claim *Backoff, ann *Announcement,
	more ...QueuedMessage) (EnqueueResult, error) {
	now := time.Now()
	p, err := prepareEnqueue(m, now, claim)
	if err != nil {
		q.failed.Add(1)
		return EnqueueResult{}, err
	}
	var nc nodeClaim
	if claim != nil {
		node, lease := q.s.Node()
		nc = nodeClaim{node: node, until: millis(now.Add(lease))}
	}
	p.claim = nc
	for _, o := range more {
		po, err := prepareEnqueue(o, now, claim)
		if err != nil {
			q.failed.Add(1)
			return EnqueueResult{}, err
		}
		po.claim = nc
		p.more = append(p.more, po)
	}
	p.filing = f
	var trackingErr error
	if tm != nil {
		prepared, err := prepareTracked(*tm, now)
		if err != nil {
			trackingErr = err
		} else {
			p.tracking = &prepared
		}
	}
	r := &enqueueReq{ctx: ctx, ann: ann, p: p, result: make(chan enqueueResult, 1)}
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return EnqueueResult{}, ErrQueueClosed
	}
	select {
	case q.reqs <- r:
	case <-ctx.Done():
		q.mu.RUnlock()
		q.failed.Add(1)
		return EnqueueResult{}, fmt.Errorf("enqueue: %w", ctx.Err())
	}
	q.mu.RUnlock()
	res := <-r.result
	if res.err != nil {
		q.failed.Add(1)
		return EnqueueResult{}, res.err
	}
	if res.trackingErr == nil {
		res.trackingErr = trackingErr
	}
	return EnqueueResult{ID: res.id, Filed: res.filed, FilingErr: res.filingErr,
		Tracked: res.tracked, TrackingErr: res.trackingErr, MoreIDs: res.moreIDs, Claimed: res.claimed}, nil
}

// Close stops taking messages, commits those already handed over and stops
// the writer. It does not close the Store.
func (q *Queue) Close() error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.reqs)
	}
	q.mu.Unlock()
	<-q.done
	return nil
}

// Stats returns the counters; Commits < Messages shows group commit at work.
func (q *Queue) Stats() QueueStats {
	return QueueStats{Messages: q.messages.Load(), Commits: q.commits.Load(), Failed: q.failed.Load()}
}

// writer is the single goroutine that commits batches.
func (q *Queue) writer() {
	defer close(q.done)
	for first := range q.reqs {
		var batch []*enqueueReq
		var size int64
		take := func(r *enqueueReq) {
			r.ann.Done()
			batch = append(batch, r)
			size += r.p.size()
		}
		take(first)
		var wait *time.Timer
	gather:
		for len(batch) < q.maxBatch && size < q.maxBytes {
			select {
			case r, ok := <-q.reqs:
				if !ok {
					break gather
				}
				take(r)
				continue
			default:
			}
			// Nothing waiting: commit, unless messages are on their way
			// and the delay allows waiting for them.
			if q.delay < 0 || q.announced.Load() <= 0 {
				break
			}
			if wait == nil {
				wait = time.NewTimer(q.delay)
			}
			select {
			case r, ok := <-q.reqs:
				if !ok {
					break gather
				}
				take(r)
			case <-q.kick:
			case <-wait.C:
				break gather
			}
		}
		if wait != nil {
			wait.Stop()
		}
		q.commit(batch)
	}
}

// commit inserts a batch in one transaction and answers every request.
func (q *Queue) commit(batch []*enqueueReq) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.result <- enqueueResult{err: fmt.Errorf("enqueue: %w", err)}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	// The transaction does not follow any caller's context: once started,
	// its outcome is what every caller is told. Its context cannot end:
	// the SQLite driver runs each statement of a context that can in a
	// goroutine of its own, to interrupt it, which cost a goroutine and two
	// switches per statement, a dozen per message (a lock is waited for by
	// the busy timeout, not forever).
	ctx := context.Background()
	// First the whole batch with no savepoint: each one makes SQLite copy
	// every page the request changes into a statement journal (spilled to
	// a temporary file beyond 64 KiB), a few percent of a message's CPU.
	// Should any record fail, that transaction is rolled back and the
	// batch inserted again with each request, its filing and its tracking
	// under savepoints of their own, so that a failure stays alone.
	results := make([]enqueueResult, len(live))
	err := q.s.tx(ctx, func(tx *txn) error { return insertBatch(ctx, tx, live, results) })
	if err != nil {
		results = make([]enqueueResult, len(live))
		err = q.s.tx(ctx, func(tx *txn) error { return insertIsolated(ctx, tx, live, results) })
	}
	if err == nil {
		q.commits.Add(1)
	}
	for i, r := range live {
		res := results[i]
		if err != nil {
			res = enqueueResult{err: fmt.Errorf("enqueue: %w", err)}
		} else if res.err == nil {
			q.messages.Add(1)
		}
		r.result <- res
	}
}

// claimedOf appends m to claimed when it was queued claimed.
func claimedOf(claimed []QueuedMessage, m QueuedMessage) []QueuedMessage {
	if len(m.Recipients) > 0 && m.Recipients[0].State == StateDelivering {
		claimed = append(claimed, m)
	}
	return claimed
}

// insertMessages inserts a request's message and its more copies,
// noting their ids and the claimed ones in res; it stops at the first
// error.
func insertMessages(ctx context.Context, tx *txn, p preparedMessage, res *enqueueResult) error {
	m, err := insertQueued(ctx, tx, p)
	if err != nil {
		return err
	}
	res.id = m.ID
	res.claimed = claimedOf(res.claimed, m)
	for _, o := range p.more {
		om, err := insertQueued(ctx, tx, o)
		if err != nil {
			return err
		}
		res.moreIDs = append(res.moreIDs, om.ID)
		res.claimed = claimedOf(res.claimed, om)
	}
	return nil
}

// insertBatch inserts every request of a batch and its records, failing at
// the first error.
func insertBatch(ctx context.Context, tx *txn, live []*enqueueReq, results []enqueueResult) error {
	for i, r := range live {
		if err := insertMessages(ctx, tx, r.p, &results[i]); err != nil {
			return err
		}
		var err error
		if f := r.p.filing; f != nil {
			if results[i].filed, err = f.file(ctx, tx); err != nil {
				return err
			}
		}
		if tm := r.p.tracking; tm != nil {
			if results[i].tracked, err = insertTracked(ctx, tx, *tm); err != nil {
				return err
			}
		}
	}
	return nil
}

// insertIsolated inserts the requests of a batch each under a savepoint,
// and its filing and tracking under savepoints of their own: a request
// that fails is left out alone, a filing or a tracking that fails leaves
// its message queued (the result says why).
func insertIsolated(ctx context.Context, tx *txn, live []*enqueueReq, results []enqueueResult) error {
	for i, r := range live {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT enqueue`); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		if err := insertMessages(ctx, tx, r.p, &results[i]); err != nil {
			results[i].err, results[i].id, results[i].moreIDs, results[i].claimed = fmt.Errorf("enqueue: %w", err), 0, nil, nil
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT enqueue`); err != nil {
				return fmt.Errorf("rollback to savepoint: %w", err)
			}
		} else {
			var err error
			if r.p.filing != nil {
				results[i].filed, results[i].filingErr, err = fileUnder(ctx, tx, r.p.filing)
				if err != nil {
					return err
				}
			}
			if tm := r.p.tracking; tm != nil {
				results[i].trackingErr = savepoint(ctx, tx, func() error {
					var err error
					results[i].tracked, err = insertTracked(ctx, tx, *tm)
					return err
				})
				if results[i].trackingErr != nil {
					results[i].trackingErr = fmt.Errorf("track message %s: %w", tm.MessageID, results[i].trackingErr)
				}
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT enqueue`); err != nil {
			return fmt.Errorf("release savepoint: %w", err)
		}
	}
	return nil
}

// fileUnder files f under a savepoint of its own: a filing that fails
// (fileErr) is undone alone; err is a failure of the transaction itself.
func fileUnder(ctx context.Context, tx *txn, f *preparedFiling) (res AppendResult, fileErr, err error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT filing`); err != nil {
		return res, nil, fmt.Errorf("savepoint: %w", err)
	}
	if res, fileErr = f.file(ctx, tx); fileErr != nil {
		fileErr = fmt.Errorf("file in %s %s: %w", f.addr, f.mailbox, fileErr)
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT filing`); err != nil {
			return res, fileErr, fmt.Errorf("rollback to savepoint: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT filing`); err != nil {
		return res, fileErr, fmt.Errorf("release savepoint: %w", err)
	}
	return res, fileErr, nil
}
