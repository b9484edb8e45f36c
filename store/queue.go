package store

// The outbound queue: see QueuedMessage, RecipientState (the delivery
// state machine), Queue (durable enqueue with group commit) and ClaimDue.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RecipientState is the delivery state of one recipient of a queued
// message:
//
//	queued ──claim──▶ delivering ──2xx──▶ delivered
//	   ▲                  │ 4xx, network error: queued again (next_attempt
//	   └──────────────────┘ was recorded by the claim), or failed when the
//	                      │ attempts are used up
//	                      └──5xx──▶ failed ──failure DSN sent──▶ bounced
//
// delivered and bounced are final. A claim (ClaimDue) moves due recipients
// to delivering and, in the same transaction, counts the attempt and
// records when the next one is due by the backoff, all before the
// deliverer dials: a crash leaves the rows in delivering with the attempt
// on record, and RecoverQueue makes them due again when the server starts.
// Delivery is therefore at least once; a message is never lost, and a
// repeated attempt is always counted.
type RecipientState string

// The recipient states.
const (
	StateQueued     RecipientState = "queued"     // waiting for its next attempt
	StateDelivering RecipientState = "delivering" // claimed by a deliverer
	StateDelivered  RecipientState = "delivered"  // accepted by the next hop or the local mailbox (final)
	StateFailed     RecipientState = "failed"     // failed for good; the failure DSN is not sent yet
	StateBounced    RecipientState = "bounced"    // failed for good; DSN sent or none due (final)
)

// Final reports whether no more work is due for a recipient in this state.
func (st RecipientState) Final() bool { return st == StateDelivered || st == StateBounced }

// QueuedMessage is a message in the outbound queue.
type QueuedMessage struct {
	ID        int64  // set by the store
	MessageID string // Message-ID header, for tracking and DSNs
	MailFrom  string // envelope sender; "" is the null reverse path (no DSN)
	User      string // authenticated submitter, "" if none
	Origin    string // where it came from, for the record: "submission 192.0.2.7:4711", "dsn"...
	// Data is the message as it is to be sent (the sealed S/MIME message).
	// Only Enqueue, QueueMessage, QueueFailed and QueueDelayed carry it;
	// the store empties it once every recipient is final.
	Data          []byte
	Size          int64     // len(Data) when it was queued
	Created       time.Time // set by Enqueue when zero
	DelayNotified time.Time // when the delayed DSN went out; zero if not
	Recipients    []QueuedRecipient
}

// QueuedRecipient is one recipient of a queued message. For Enqueue only
// Address and Local matter.
type QueuedRecipient struct {
	ID      int64
	QueueID int64
	Address string
	Domain  string // lower-case domain of Address, set by the store
	// Local recipients are in a local domain: delivered through the local
	// inbound path, not over the network.
	Local       bool
	State       RecipientState
	Attempts    int
	NextAttempt time.Time
	LastAttempt time.Time
	// The last reply or error: an SMTP reply from RemoteMTA, or hisp's own
	// reason (then RemoteMTA is empty).
	LastCode     int
	LastEnhanced string
	LastError    string
	RemoteMTA    string
	// Status is the reply that made the state final or failed, as one line
	// ("250 2.0.0 ok", "550 5.1.1 no such user").
	Status  string
	Updated time.Time
}

// RecipientUpdate is the outcome of a delivery attempt for one recipient,
// for UpdateRecipients.
type RecipientUpdate struct {
	ID int64
	// State is StateQueued for a temporary failure (retry), StateDelivered,
	// StateFailed for a permanent failure, or StateBounced once the failure
	// DSN is sent.
	State     RecipientState
	Code      int    // SMTP reply code, or hisp's equivalent
	Enhanced  string // enhanced status code, "5.1.1"
	Text      string // reply text or error
	RemoteMTA string // host that replied, "" for hisp's own decision
	// NextAttempt overrides, for StateQueued, the retry time recorded by the
	// claim; zero keeps it.
	NextAttempt time.Time
}

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

// preparedMessage is a validated message ready for insertion.
type preparedMessage struct {
	m        QueuedMessage
	filing   *preparedFiling // nil: none
	tracking *TrackedMessage // nil: none
	more     []preparedMessage
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
// fields.
func prepareEnqueue(m QueuedMessage, now time.Time) (preparedMessage, error) {
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
		rcpts = append(rcpts, QueuedRecipient{Address: addr, Domain: domain, Local: r.Local,
			State: StateQueued, NextAttempt: m.Created, Updated: m.Created})
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

// enqueueStmts are the statements of an enqueue transaction, prepared once
// per transaction.
type enqueueStmts struct {
	msg, rcpt *sql.Stmt
}

func prepareEnqueueStmts(ctx context.Context, tx *txn) (*enqueueStmts, error) {
	msg, err := tx.PrepareContext(ctx, `INSERT INTO queue_messages
		(message_id, mail_from, auth_user, origin, data, size, created, delay_notified)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0) RETURNING id`)
	if err != nil {
		return nil, fmt.Errorf("prepare enqueue: %w", err)
	}
	rcpt, err := tx.PrepareContext(ctx, `INSERT INTO queue_recipients
		(queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
		 last_code, last_enhanced, last_error, remote_mta, status, updated)
		VALUES (?, ?, ?, ?, 'queued', 0, ?, 0, 0, '', '', '', '', ?) RETURNING id`)
	if err != nil {
		msg.Close()
		return nil, fmt.Errorf("prepare enqueue: %w", err)
	}
	return &enqueueStmts{msg: msg, rcpt: rcpt}, nil
}

func (st *enqueueStmts) close() {
	st.msg.Close()
	st.rcpt.Close()
}

// insert adds one prepared message and returns it with its ids.
func (st *enqueueStmts) insert(ctx context.Context, p preparedMessage) (QueuedMessage, error) {
	m := p.m
	created := millis(m.Created)
	if err := st.msg.QueryRowContext(ctx, m.MessageID, m.MailFrom, m.User, m.Origin, m.Data, m.Size, created).Scan(&m.ID); err != nil {
		return QueuedMessage{}, fmt.Errorf("insert queued message: %w", err)
	}
	m.Recipients = append([]QueuedRecipient(nil), m.Recipients...)
	for i := range m.Recipients {
		r := &m.Recipients[i]
		r.QueueID = m.ID
		if err := st.rcpt.QueryRowContext(ctx, m.ID, r.Address, r.Domain, r.Local, created, created).Scan(&r.ID); err != nil {
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
	p, err := prepareEnqueue(m, time.Now())
	if err != nil {
		return 0, err
	}
	var id int64
	err = s.tx(ctx, func(tx *txn) error {
		st, err := prepareEnqueueStmts(ctx, tx)
		if err != nil {
			return err
		}
		defer st.close()
		qm, err := st.insert(ctx, p)
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

	mu     sync.RWMutex // held for reading while sending on reqs; Close takes it to close reqs
	closed bool
	reqs   chan *enqueueReq
	done   chan struct{} // closed when the writer has finished

	messages, commits, failed atomic.Int64
}

type enqueueReq struct {
	ctx    context.Context
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
	err         error
}

// NewQueue starts the writer goroutine of a group-committing queue over s.
func NewQueue(s *Store, opts QueueOptions) *Queue {
	q := &Queue{s: s, maxBatch: opts.MaxBatch, maxBytes: opts.MaxBatchBytes,
		reqs: make(chan *enqueueReq, 256), done: make(chan struct{})}
	if q.maxBatch <= 0 {
		q.maxBatch = 256
	}
	if q.maxBytes <= 0 {
		q.maxBytes = 64 << 20
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
	res, err := q.enqueue(ctx, m, nil, nil)
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
	return q.enqueue(ctx, m, pf, x.Tracking, x.More...)
}

func (q *Queue) enqueue(ctx context.Context, m QueuedMessage, f *preparedFiling, tm *TrackedMessage, more ...QueuedMessage) (EnqueueResult, error) {
	now := time.Now()
	p, err := prepareEnqueue(m, now)
	if err != nil {
		q.failed.Add(1)
		return EnqueueResult{}, err
	}
	for _, o := range more {
		po, err := prepareEnqueue(o, now)
		if err != nil {
			q.failed.Add(1)
			return EnqueueResult{}, err
		}
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
	r := &enqueueReq{ctx: ctx, p: p, result: make(chan enqueueResult, 1)}
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
		Tracked: res.tracked, TrackingErr: res.trackingErr, MoreIDs: res.moreIDs}, nil
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
		batch := []*enqueueReq{first}
		size := first.p.size()
	gather:
		for len(batch) < q.maxBatch && size < q.maxBytes {
			select {
			case r, ok := <-q.reqs:
				if !ok {
					break gather
				}
				batch = append(batch, r)
				size += r.p.size()
			default:
				break gather
			}
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
	// its outcome is what every caller is told.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := make([]enqueueResult, len(live))
	err := q.s.tx(ctx, func(tx *txn) error {
		st, err := prepareEnqueueStmts(ctx, tx)
		if err != nil {
			return err
		}
		defer st.close()
		for i, r := range live {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT enqueue`); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			m, err := st.insert(ctx, r.p)
			for _, o := range r.p.more {
				if err != nil {
					break
				}
				var om QueuedMessage
				om, err = st.insert(ctx, o)
				results[i].moreIDs = append(results[i].moreIDs, om.ID)
			}
			if err != nil {
				results[i].err, results[i].moreIDs = fmt.Errorf("enqueue: %w", err), nil
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT enqueue`); err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
			} else {
				results[i].id = m.ID
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
	})
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

// recipientColumns are the queue_recipients columns scanRecipient reads.
const recipientColumns = `id, queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
	last_code, last_enhanced, last_error, remote_mta, status, updated`

func scanRecipient(r rowScanner) (QueuedRecipient, error) {
	var q QueuedRecipient
	var state string
	var next, last, updated int64
	err := r.Scan(&q.ID, &q.QueueID, &q.Address, &q.Domain, &q.Local, &state, &q.Attempts, &next, &last,
		&q.LastCode, &q.LastEnhanced, &q.LastError, &q.RemoteMTA, &q.Status, &updated)
	if err != nil {
		return QueuedRecipient{}, err
	}
	q.State = RecipientState(state)
	q.NextAttempt, q.LastAttempt, q.Updated = fromMillis(next), fromMillis(last), fromMillis(updated)
	return q, nil
}

// messageColumns are the queue_messages columns scanMessage reads, without
// the data.
const messageColumns = `id, message_id, mail_from, auth_user, origin, size, created, delay_notified`

func scanMessage(r rowScanner) (QueuedMessage, error) {
	var m QueuedMessage
	var created, notified int64
	if err := r.Scan(&m.ID, &m.MessageID, &m.MailFrom, &m.User, &m.Origin, &m.Size, &created, &notified); err != nil {
		return QueuedMessage{}, err
	}
	m.Created, m.DelayNotified = fromMillis(created), fromMillis(notified)
	return m, nil
}

// queryRecipients returns the recipients a query selects (its columns must
// be recipientColumns).
func queryRecipients(ctx context.Context, q queryer, query string, args ...any) ([]QueuedRecipient, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueuedRecipient
	for rows.Next() {
		r, err := scanRecipient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// queryIDs returns the first column of a query's rows (other columns are
// there for ordering only).
func queryIDs(ctx context.Context, q queryer, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	dest := make([]any, len(cols))
	for i := 1; i < len(dest); i++ {
		dest[i] = new(any)
	}
	var out []int64
	for rows.Next() {
		var id int64
		dest[0] = &id
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// getQueued reads one message (with its data when withData) and the
// recipients that recipientWhere selects ("" for all).
func getQueued(ctx context.Context, q queryer, id int64, withData bool, recipientWhere string, args ...any) (QueuedMessage, error) {
	cols := messageColumns
	if withData {
		cols += `, data`
	}
	row := q.QueryRowContext(ctx, `SELECT `+cols+` FROM queue_messages WHERE id = ?`, id)
	var m QueuedMessage
	var err error
	if withData {
		var created, notified int64
		err = row.Scan(&m.ID, &m.MessageID, &m.MailFrom, &m.User, &m.Origin, &m.Size, &created, &notified, &m.Data)
		m.Created, m.DelayNotified = fromMillis(created), fromMillis(notified)
	} else {
		m, err = scanMessage(row)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return QueuedMessage{}, fmt.Errorf("queued message %d: %w", id, ErrNotFound)
	} else if err != nil {
		return QueuedMessage{}, fmt.Errorf("read queued message %d: %w", id, err)
	}
	query := `SELECT ` + recipientColumns + ` FROM queue_recipients WHERE queue_id = ?`
	if recipientWhere != "" {
		query += ` AND ` + recipientWhere
	}
	m.Recipients, err = queryRecipients(ctx, q, query+` ORDER BY id`, append([]any{id}, args...)...)
	if err != nil {
		return QueuedMessage{}, fmt.Errorf("read recipients of queued message %d: %w", id, err)
	}
	return m, nil
}

// ClaimDue claims the recipients due for an attempt at now, of at most limit
// messages (oldest due first), for delivery: in one transaction it moves
// them to delivering, counts the attempt, sets the last attempt to now and
// records the next attempt by the backoff, so that the retry time is on
// record before anything is dialed. It returns the messages (without Data,
// see QueueMessageData) with the claimed recipients only.
//
// The claim is atomic because the transaction holds SQLite's write lock
// (BEGIN IMMEDIATE); a PostgreSQL store selects the due rows with FOR UPDATE
// SKIP LOCKED instead, so that several nodes can share one queue.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, limit int, b Backoff) ([]QueuedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	nowMs := millis(now)
	var out []QueuedMessage
	err := s.tx(ctx, func(tx *txn) error {
		ids, err := queryIDs(ctx, tx, `SELECT queue_id, MIN(next_attempt) AS due FROM queue_recipients
			WHERE state = 'queued' AND next_attempt <= ?
			GROUP BY queue_id ORDER BY due, queue_id LIMIT ?`, nowMs, limit)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := getQueued(ctx, tx, id, false, `state = 'queued' AND next_attempt <= ?`, nowMs)
			if err != nil {
				return err
			}
			for i := range m.Recipients {
				r := &m.Recipients[i]
				r.State = StateDelivering
				r.Attempts++
				r.LastAttempt = fromMillis(nowMs)
				r.NextAttempt = fromMillis(millis(now.Add(b.Delay(r.Attempts))))
				r.Updated = r.LastAttempt
				_, err := tx.ExecContext(ctx, `UPDATE queue_recipients
					SET state = 'delivering', attempts = ?, last_attempt = ?, next_attempt = ?, updated = ?
					WHERE id = ?`, r.Attempts, nowMs, millis(r.NextAttempt), nowMs, r.ID)
				if err != nil {
					return err
				}
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim due recipients: %w", err)
	}
	return out, nil
}

// QueueMessageData returns the bytes of a queued message.
func (s *Store) QueueMessageData(ctx context.Context, id int64) ([]byte, error) {
	var data []byte
	err := s.db.QueryRowContext(ctx, `SELECT data FROM queue_messages WHERE id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("queued message %d: %w", id, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read queued message %d: %w", id, err)
	}
	return data, nil
}

// statusLine formats a reply as one line.
func statusLine(code int, enhanced, text string) string {
	var parts []string
	if code > 0 {
		parts = append(parts, fmt.Sprint(code))
	}
	if enhanced != "" {
		parts = append(parts, enhanced)
	}
	if t := strings.Join(strings.Fields(text), " "); t != "" {
		parts = append(parts, t)
	}
	return strings.Join(parts, " ")
}

// UpdateRecipients records the outcomes of delivery attempts at now, in one
// transaction. An update applies only from the state it follows: queued,
// delivered and failed from delivering (failed also from queued), bounced
// from failed; others (a message dropped meanwhile, say) are skipped. The
// data of a message whose recipients are all final is emptied.
func (s *Store) UpdateRecipients(ctx context.Context, now time.Time, updates []RecipientUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	nowMs := millis(now)
	err := s.tx(ctx, func(tx *txn) error {
		touched := map[int64]bool{}
		for _, u := range updates {
			text := strings.Join(strings.Fields(u.Text), " ")
			status := statusLine(u.Code, u.Enhanced, text)
			var res sql.Result
			var err error
			switch u.State {
			case StateQueued:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = 'queued',
					next_attempt = CASE WHEN ? > 0 THEN ? ELSE next_attempt END,
					last_code = ?, last_enhanced = ?, last_error = ?, remote_mta = ?, updated = ?
					WHERE id = ? AND state = 'delivering'`,
					millis(u.NextAttempt), millis(u.NextAttempt), u.Code, u.Enhanced, text, u.RemoteMTA, nowMs, u.ID)
			case StateDelivered:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = 'delivered',
					last_code = ?, last_enhanced = ?, remote_mta = ?, status = ?, updated = ?
					WHERE id = ? AND state = 'delivering'`,
					u.Code, u.Enhanced, u.RemoteMTA, status, nowMs, u.ID)
			case StateFailed:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = 'failed',
					last_code = ?, last_enhanced = ?, last_error = ?, remote_mta = ?, status = ?, updated = ?
					WHERE id = ? AND state IN ('delivering', 'queued')`,
					u.Code, u.Enhanced, text, u.RemoteMTA, status, nowMs, u.ID)
			case StateBounced:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = 'bounced', updated = ?
					WHERE id = ? AND state = 'failed'`, nowMs, u.ID)
			default:
				return fmt.Errorf("recipient %d: cannot move to state %q", u.ID, u.State)
			}
			if err != nil {
				return fmt.Errorf("recipient %d: %w", u.ID, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				continue
			}
			if u.State == StateDelivered || u.State == StateBounced {
				var qid int64
				if err := tx.QueryRowContext(ctx, `SELECT queue_id FROM queue_recipients WHERE id = ?`, u.ID).Scan(&qid); err != nil {
					return fmt.Errorf("recipient %d: %w", u.ID, err)
				}
				touched[qid] = true
			}
		}
		for qid := range touched {
			// A message whose recipients are all final keeps its record,
			// not its bytes.
			_, err := tx.ExecContext(ctx, `UPDATE queue_messages SET data = ? WHERE id = ?
				AND NOT EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = queue_messages.id
					AND r.state NOT IN ('delivered', 'bounced'))`, []byte{}, qid)
			if err != nil {
				return fmt.Errorf("release data of queued message %d: %w", qid, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update queued recipients: %w", err)
	}
	return nil
}

// RecoverQueue makes recipients left in delivering by a stopped or crashed
// server due again at now, and returns how many. Their interrupted attempt
// stays counted. Call it when the (single) deliverer starts, before it
// claims.
func (s *Store) RecoverQueue(ctx context.Context, now time.Time) (int64, error) {
	nowMs := millis(now)
	res, err := s.db.ExecContext(ctx, `UPDATE queue_recipients SET state = 'queued', next_attempt = ?,
		last_error = ?, updated = ? WHERE state = 'delivering'`,
		nowMs, "delivery interrupted: hisp stopped during the attempt", nowMs)
	if err != nil {
		return 0, fmt.Errorf("recover queue: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("recover queue: %w", err)
	}
	return n, nil
}

// pendingMessages selects the queued messages with work left (a recipient
// neither delivered nor bounced).
const pendingMessages = `FROM queue_messages m WHERE EXISTS (SELECT 1 FROM queue_recipients r
	WHERE r.queue_id = m.id AND r.state NOT IN ('delivered', 'bounced'))`

// QueueList returns the queued messages (without Data) with all their
// recipients, oldest first: those with work left, or every message kept
// when all is set.
func (s *Store) QueueList(ctx context.Context, all bool) ([]QueuedMessage, error) {
	query := `SELECT m.id FROM queue_messages m ORDER BY m.id`
	if !all {
		query = `SELECT m.id ` + pendingMessages + ` ORDER BY m.id`
	}
	var out []QueuedMessage
	err := s.read(ctx, func(q queryer) error {
		ids, err := queryIDs(ctx, q, query)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := getQueued(ctx, q, id, false, "")
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	return out, nil
}

// QueueHead returns the oldest limit messages with work left (as
// QueueList does) and how many such messages there are in all, from one
// snapshot: for a page that shows the head of a long queue.
func (s *Store) QueueHead(ctx context.Context, limit int) ([]QueuedMessage, int, error) {
	var out []QueuedMessage
	var total int
	err := s.read(ctx, func(q queryer) error {
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) `+pendingMessages).Scan(&total); err != nil {
			return err
		}
		ids, err := queryIDs(ctx, q, `SELECT m.id `+pendingMessages+` ORDER BY m.id LIMIT ?`, limit)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := getQueued(ctx, q, id, false, "")
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("queue head: %w", err)
	}
	return out, total, nil
}

// QueueMessage returns one queued message with its data and all its
// recipients; an error wrapping ErrNotFound if it is not there.
func (s *Store) QueueMessage(ctx context.Context, id int64) (QueuedMessage, error) {
	return getQueued(ctx, s.db, id, true, "")
}

// QueueRetry makes the waiting (queued) recipients of a message due at now
// and returns how many. A message that does not exist gives an error
// wrapping ErrNotFound.
func (s *Store) QueueRetry(ctx context.Context, id int64, now time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *txn) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM queue_messages WHERE id = ?`, id); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("queued message %d: %w", id, ErrNotFound)
		}
		res, err := tx.ExecContext(ctx, `UPDATE queue_recipients SET next_attempt = ?, updated = ?
			WHERE queue_id = ? AND state = 'queued'`, millis(now), millis(now), id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("retry queued message: %w", err)
	}
	return n, nil
}

// QueueDrop removes a message and its recipients from the queue, whatever
// their state, without any DSN, and returns what it was. A message that
// does not exist gives an error wrapping ErrNotFound.
func (s *Store) QueueDrop(ctx context.Context, id int64) (QueuedMessage, error) {
	var m QueuedMessage
	err := s.tx(ctx, func(tx *txn) error {
		var err error
		m, err = getQueued(ctx, tx, id, false, "")
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM queue_messages WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return QueuedMessage{}, fmt.Errorf("drop queued message: %w", err)
	}
	return m, nil
}

// QueueFailed returns up to limit messages (with Data) that have recipients
// in the failed state, with those recipients only: their failure DSN is
// due. Mark them bounced (UpdateRecipients) once it is sent.
func (s *Store) QueueFailed(ctx context.Context, limit int) ([]QueuedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.noticeQuery(ctx, `SELECT DISTINCT queue_id FROM queue_recipients WHERE state = 'failed'
		ORDER BY queue_id LIMIT ?`, []any{limit}, `state = 'failed'`)
}

// QueueDelayed returns up to limit messages (with Data) created at or before
// createdBefore that have had no delayed DSN yet and still have recipients
// waiting after at least one attempt, with those recipients only. Mark each
// with MarkDelayNotified once its delayed DSN is sent: a message gets one.
func (s *Store) QueueDelayed(ctx context.Context, createdBefore time.Time, limit int) ([]QueuedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.noticeQuery(ctx, `SELECT m.id FROM queue_messages m WHERE m.delay_notified = 0 AND m.created <= ?
		AND EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = m.id
			AND r.state IN ('queued', 'delivering') AND r.attempts > 0)
		ORDER BY m.id LIMIT ?`, []any{millis(createdBefore), limit},
		`state IN ('queued', 'delivering') AND attempts > 0`)
}

func (s *Store) noticeQuery(ctx context.Context, idQuery string, args []any, recipientWhere string) ([]QueuedMessage, error) {
	var out []QueuedMessage
	err := s.tx(ctx, func(tx *txn) error {
		ids, err := queryIDs(ctx, tx, idQuery, args...)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := getQueued(ctx, tx, id, true, recipientWhere)
			if err != nil {
				return err
			}
			if len(m.Recipients) > 0 {
				out = append(out, m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("select queued messages for notices: %w", err)
	}
	return out, nil
}

// MarkDelayNotified records that the delayed DSN of a message went out.
func (s *Store) MarkDelayNotified(ctx context.Context, id int64, at time.Time) error {
	if at.IsZero() {
		at = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `UPDATE queue_messages SET delay_notified = ? WHERE id = ?`, millis(at), id)
	if err != nil {
		return fmt.Errorf("mark delayed DSN of queued message %d: %w", id, err)
	}
	return nil
}

// PurgeQueue deletes messages created before the given time whose
// recipients are all final, and returns how many went.
func (s *Store) PurgeQueue(ctx context.Context, createdBefore time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM queue_messages WHERE created < ?
		AND NOT EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = queue_messages.id
			AND r.state NOT IN ('delivered', 'bounced'))`, millis(createdBefore))
	if err != nil {
		return 0, fmt.Errorf("purge queue: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge queue: %w", err)
	}
	return n, nil
}
