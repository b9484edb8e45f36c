package store

// The outbound queue: see QueuedMessage, RecipientState (the delivery
// state machine), Queue (durable enqueue with group commit,
// queue_enqueue.go), ClaimDue (queue_delivery.go), Backoff (the retry
// schedule, queue_schedule.go) and the admin's listings (queue_admin.go).
// This file holds the types and the readers the others share.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
// A recipient whose certificate could not be looked up at submission waits
// in a message whose data is the plain submission (QueuedMessage.Plain),
// to be sealed to again on the same schedule:
//
//	deferred ──claim──▶ sealing ──sealed and queued anew──▶ sealed
//	   ▲                   │ still not found: deferred again, next_attempt
//	   └───────────────────┘ from the sealer (a revocation outage is
//	                       │ retried up to [trust] revocation_grace)
//	                       └──failed for good, sender told──▶ bounced
//
// delivered, sealed and bounced are final. A claim (ClaimDue) moves due recipients
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
	StateDeferred   RecipientState = "deferred"   // of a plain message: waiting to be sealed to
	StateSealing    RecipientState = "sealing"    // of a plain message: claimed by the sealer
	StateSealed     RecipientState = "sealed"     // of a plain message: sealed and queued anew (final)
)

// finalStates is the SQL list of the final states.
const finalStates = `('delivered', 'bounced', 'sealed')`

// Final reports whether no more work is due for a recipient in this state.
func (st RecipientState) Final() bool {
	return st == StateDelivered || st == StateBounced || st == StateSealed
}

// QueuedMessage is a message in the outbound queue.
type QueuedMessage struct {
	ID        int64  // set by the store
	MessageID string // Message-ID header, for tracking and DSNs
	MailFrom  string // envelope sender; "" is the null reverse path (no DSN)
	User      string // authenticated submitter, "" if none
	Origin    string // where it came from, for the record: "submission 192.0.2.7:4711", "dsn"...
	// Data is the message as it is to be sent (the sealed S/MIME message).
	// Only Enqueue, EnqueueResult.Claimed, QueueMessage, QueueFailed and
	// QueueDelayed carry it;
	// the store empties it once every recipient is final.
	Data          []byte
	Size          int64     // len(Data) when it was queued
	Created       time.Time // set by Enqueue when zero
	DelayNotified time.Time // when the delayed DSN went out; zero if not
	// Plain marks a message whose Data is the plain submission, kept for
	// recipients deferred at submission (StateDeferred): it is never sent
	// as it is, but sealed again for them when they are due. Enqueue puts
	// its recipients in StateDeferred with their NextAttempt and last
	// reply; their first attempt, at submission, is counted.
	Plain      bool
	Recipients []QueuedRecipient
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
	// ClaimedBy is the node whose attempt holds the recipient (delivering
	// or sealing) until ClaimedUntil, unless renewed; "" when none does.
	ClaimedBy    string
	ClaimedUntil time.Time
}

// RecipientUpdate is the outcome of a delivery attempt for one recipient,
// for UpdateRecipients.
type RecipientUpdate struct {
	ID int64
	// State is StateQueued for a temporary failure (retry), StateDelivered,
	// StateFailed for a permanent failure, or StateBounced once the failure
	// DSN is sent; for a recipient being sealed (StateSealing),
	// StateDeferred (retry), StateSealed, or StateBounced (failed, its
	// sender told).
	State     RecipientState
	Code      int    // SMTP reply code, or hisp's equivalent
	Enhanced  string // enhanced status code, "5.1.1"
	Text      string // reply text or error
	RemoteMTA string // host that replied, "" for hisp's own decision
	// NextAttempt overrides, for StateQueued and StateDeferred, the retry
	// time recorded by the claim; zero keeps it.
	NextAttempt time.Time
}

// recipientColumns are the queue_recipients columns recipientFields reads.
const recipientColumns = `id, queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
	last_code, last_enhanced, last_error, remote_mta, status, updated, claimed_by, claimed_until`

// recipientFields receives recipientColumns: dest are the scan's
// destinations, value the recipient they make.
type recipientFields struct {
	r                                 QueuedRecipient
	state                             string
	next, last, updated, claimedUntil int64
}

func (f *recipientFields) dest() []any {
	r := &f.r
	return []any{&r.ID, &r.QueueID, &r.Address, &r.Domain, &r.Local, &f.state, &r.Attempts, &f.next, &f.last,
		&r.LastCode, &r.LastEnhanced, &r.LastError, &r.RemoteMTA, &r.Status, &f.updated, &r.ClaimedBy, &f.claimedUntil}
}

func (f *recipientFields) value() QueuedRecipient {
	r := f.r
	r.State = RecipientState(f.state)
	r.NextAttempt, r.LastAttempt, r.Updated = fromMillis(f.next), fromMillis(f.last), fromMillis(f.updated)
	r.ClaimedUntil = fromMillis(f.claimedUntil)
	return r
}

func scanRecipient(r rowScanner) (QueuedRecipient, error) {
	var f recipientFields
	if err := r.Scan(f.dest()...); err != nil {
		return QueuedRecipient{}, err
	}
	return f.value(), nil
}

// messageColumns are the queue_messages columns messageFields reads,
// without the data.
const messageColumns = `id, message_id, mail_from, auth_user, origin, size, created, delay_notified, plain`

// messageFields receives messageColumns (and data, when the query reads
// it after them).
type messageFields struct {
	m                 QueuedMessage
	created, notified int64
}

func (f *messageFields) dest() []any {
	m := &f.m
	return []any{&m.ID, &m.MessageID, &m.MailFrom, &m.User, &m.Origin, &m.Size, &f.created, &f.notified, &m.Plain}
}

func (f *messageFields) value() QueuedMessage {
	m := f.m
	m.Created, m.DelayNotified = fromMillis(f.created), fromMillis(f.notified)
	return m
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
	var f messageFields
	dest := f.dest()
	if withData {
		dest = append(dest, &f.m.Data)
	}
	err := q.QueryRowContext(ctx, `SELECT `+cols+` FROM queue_messages WHERE id = ?`, id).Scan(dest...)
	m := f.value()
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
