package store

// Delivery tracking of outbound messages (DN-06..DN-10): see TrackState,
// TrackedMessage, TrackMessage and UpdateTracked. The rules (which notice
// moves which state, what reaches the sender) belong to the tracker; the
// store keeps the rows, applies a change atomically with its event and the
// webhook deliveries it causes, and answers the tracker's queries.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TrackState is where one recipient of a tracked message is:
//
//	queued ──▶ relayed ──▶ processed ──▶ dispatched
//	   └──────────┴────────────┴──────────────┴──▶ failed (with a reason)
//
// relayed is set when the queue delivered to the next hop; processed and
// dispatched by MDNs from the recipient's HISP; failed by a failed MDN, a
// remote DSN, a permanent queue failure or a timeout. Notices may arrive
// out of order, so processed and dispatched may skip earlier states.
type TrackState string

// The tracking states.
const (
	TrackQueued     TrackState = "queued"
	TrackRelayed    TrackState = "relayed"
	TrackProcessed  TrackState = "processed"
	TrackDispatched TrackState = "dispatched"
	TrackFailed     TrackState = "failed"
)

// Valid reports whether st is one of the tracking states.
func (st TrackState) Valid() bool {
	switch st {
	case TrackQueued, TrackRelayed, TrackProcessed, TrackDispatched, TrackFailed:
		return true
	}
	return false
}

// Outcome is the final word about a recipient that reached the sender's
// mailbox: none yet, success (dispatched, or processed when dispatched was
// not requested) or failure.
type Outcome string

// The outcomes.
const (
	OutcomeNone    Outcome = ""
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
)

// NoticeState is the state of hisp's own failure DSN for a recipient (a
// timeout): none due, pending (decided, not yet filed in the sender's
// mailbox) or done.
type NoticeState string

// The notice states.
const (
	NoticeNone    NoticeState = ""
	NoticePending NoticeState = "pending"
	NoticeDone    NoticeState = "done"
)

// TrackedMessage is an outbound message under tracking.
type TrackedMessage struct {
	ID        int64  // set by the store
	MessageID string // as sent, "<...>"
	// Sender is the local address (or login) that sent it, lower case;
	// notices about the message are filed in its mailbox.
	Sender string
	// DispatchedRequested is set when the message asked for timely and
	// reliable delivery (DN-01): dispatched, not processed, is success.
	DispatchedRequested bool
	Sent                time.Time // when it was queued; deadlines count from here
	Updated             time.Time
	Recipients          []TrackedRecipient
	// Relay is the relay account that sent it; "" for an address's own
	// login or hisp.
	Relay string
	// Join adds the recipients to the newest tracking of the same
	// Message-ID and sender when there is one, rather than starting
	// another: the recipients of a submission that were sealed to later
	// (deferred) join those sent at once.
	Join bool
}

// TrackedRecipient is one recipient of a tracked message.
type TrackedRecipient struct {
	ID        int64
	TrackedID int64
	Address   string // lower case
	State     TrackState
	Outcome   Outcome
	// OutcomeBy names what decided the outcome: "mdn", "dsn", "timeout",
	// "queue", "agent".
	OutcomeBy string
	Reason    string    // why it failed, one line
	Relayed   time.Time // when the next hop took it; zero if not yet
	// ProcessedDeadline is when a missing processed MDN fails the
	// recipient; DispatchedDeadline the same for dispatched (zero when it
	// was not requested).
	ProcessedDeadline  time.Time
	DispatchedDeadline time.Time
	// Deadline is the next timeout while there is no outcome; zero for
	// none. The store derives it from the state and the deadlines above.
	Deadline time.Time
	Notice   NoticeState
	Updated  time.Time
	Events   []TrackEvent // oldest first; only where the query says so
}

// TrackEvent is one entry of a recipient's history.
type TrackEvent struct {
	ID          int64
	RecipientID int64
	At          time.Time
	// Kind is what happened: queued, relayed, processed, dispatched,
	// failed, timeout, delayed, displayed...
	Kind          string
	PreviousState TrackState
	State         TrackState // after the event
	Outcome       Outcome    // after the event
	Detail        string
	// Notice is what became of the notification in the sender's mailbox:
	// "filed", "withheld", "suppressed", "dsn" (hisp's own DSN is due) or ""
	// (no notification).
	Notice string
}

// Transition reports whether the event moved the state (every first event
// does): webhooks hear of these.
func (e TrackEvent) Transition() bool { return e.PreviousState != e.State }

// TrackChange is a tracker's decision about one recipient, for
// UpdateTracked. The zero value changes nothing but records an event of
// Kind.
type TrackChange struct {
	Skip   bool // no change and no event
	Kind   string
	Detail string
	Notice string     // see TrackEvent.Notice
	State  TrackState // "": unchanged
	// Outcome, when set, replaces the outcome, with OutcomeBy and Reason.
	Outcome   Outcome
	OutcomeBy string
	Reason    string
	// Relayed records the event time as the relay time if none is set.
	Relayed bool
	// NoticePending makes hisp's own failure DSN due (PendingNotices).
	NoticePending bool
}

// TrackRef finds one tracked recipient: by RecipientID, else by the
// Message-ID (newest message first, of Sender only when set) and the first
// of Recipients (compared case-insensitively) that the message has.
type TrackRef struct {
	RecipientID int64
	MessageID   string
	Recipients  []string
	Sender      string
}

// TrackFilter selects tracked messages for TrackedMessages.
type TrackFilter struct {
	Sender string // "" any
	// SenderDomains, when set, admits only messages of senders in these
	// domains (a scoped API token's view).
	SenderDomains []string
	State         TrackState // messages with a recipient in this state; "" any
	Since         time.Time  // sent at or after; zero: no bound
	Until         time.Time  // sent before; zero: no bound
	Limit         int        // newest first; 0: 100
	Events        bool       // include each recipient's events
}

// RelayedRecipient is a tracked recipient the queue delivered to the next
// hop (or the local mailbox), not yet recorded as relayed.
type RelayedRecipient struct {
	RecipientID int64
	Status      string // the queue's final reply, "250 2.0.0 ok"
	RemoteMTA   string
	At          time.Time
}

// nextDeadline is the timeout that applies in a state: the processed
// deadline until processed, then the dispatched one if requested; none once
// there is an outcome.
func nextDeadline(r TrackedRecipient) time.Time {
	if r.Outcome != OutcomeNone {
		return time.Time{}
	}
	switch r.State {
	case TrackQueued, TrackRelayed:
		return r.ProcessedDeadline
	case TrackProcessed:
		return r.DispatchedDeadline
	}
	return time.Time{}
}

// normalizeTrackAddress lower-cases an address and checks its form.
func normalizeTrackAddress(a string) (string, error) {
	local, domain, err := splitAddress(a)
	if err != nil {
		return "", err
	}
	return strings.ToLower(local) + "@" + domain, nil
}

func senderDomain(sender string) string {
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		return sender[i+1:]
	}
	return ""
}

// TrackMessage starts tracking a message: one row per distinct recipient,
// each with a first event (queued, or failed for a recipient that failed
// already at submission: give it State TrackFailed, Outcome, OutcomeBy and
// Reason) and the webhook deliveries of those events, in one transaction.
// Sent defaults to now. It returns the message with its ids.
func (s *Store) TrackMessage(ctx context.Context, m TrackedMessage) (TrackedMessage, error) {
	out, errs, err := s.TrackMessages(ctx, []TrackedMessage{m})
	if err != nil {
		return TrackedMessage{}, err
	}
	return out[0], errs[0]
}

// TrackMessages is TrackMessage for several messages in one transaction
// (one commit, one fsync), each under a savepoint of its own so that a bad
// one fails alone: errs[i] is the error of ms[i]. err is set, and nothing
// stored, when the transaction as a whole fails.
func (s *Store) TrackMessages(ctx context.Context, ms []TrackedMessage) (out []TrackedMessage, errs []error, err error) {
	now := time.Now()
	out = make([]TrackedMessage, len(ms))
	errs = make([]error, len(ms))
	prepared := make([]bool, len(ms))
	some := false
	for i, m := range ms {
		if out[i], errs[i] = prepareTracked(m, now); errs[i] == nil {
			prepared[i], some = true, true
		}
	}
	if !some {
		return out, errs, nil
	}
	err = s.tx(ctx, func(tx *txn) error {
		for i := range out {
			if !prepared[i] {
				continue
			}
			errs[i] = savepoint(ctx, tx, func() error {
				var err error
				out[i], err = insertTracked(ctx, tx, out[i])
				return err
			})
			if errs[i] != nil {
				errs[i] = fmt.Errorf("track message %s: %w", out[i].MessageID, errs[i])
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("track messages: %w", err)
	}
	return out, errs, nil
}

// savepoint runs fn under a savepoint, rolling back to it when fn fails;
// the error of fn is returned, the transaction goes on.
func savepoint(ctx context.Context, tx *txn, fn func() error) error {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT track`); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	ferr := fn()
	if ferr != nil {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT track`); err != nil {
			return fmt.Errorf("rollback to savepoint: %w (after %v)", err, ferr)
		}
	}
	if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT track`); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return ferr
}

// prepareTracked checks a message for TrackMessage and fills in the
// derived fields.
func prepareTracked(m TrackedMessage, now time.Time) (TrackedMessage, error) {
	if m.MessageID == "" || strings.ContainsAny(m.MessageID+m.Sender, "\r\n\x00") {
		return m, fmt.Errorf("track message: invalid Message-ID %q or sender %q", m.MessageID, m.Sender)
	}
	if len(m.Recipients) == 0 {
		return m, errors.New("track message: no recipients")
	}
	m.ID = 0
	m.Sender = strings.ToLower(strings.TrimSpace(m.Sender))
	if m.Sent.IsZero() {
		m.Sent = now
	}
	m.Sent = fromMillis(millis(m.Sent))
	m.Updated = m.Sent
	seen := map[string]bool{}
	var rs []TrackedRecipient
	for _, r := range m.Recipients {
		addr, err := normalizeTrackAddress(r.Address)
		if err != nil {
			return m, fmt.Errorf("track message: %w", err)
		}
		if seen[addr] {
			continue
		}
		seen[addr] = true
		r.Address = addr
		if r.State == "" {
			r.State = TrackQueued
		}
		if !r.State.Valid() {
			return m, fmt.Errorf("track message: state %q", r.State)
		}
		if r.State == TrackFailed && r.Outcome == OutcomeNone {
			r.Outcome = OutcomeFailure
		}
		r.ProcessedDeadline = fromMillis(millis(r.ProcessedDeadline))
		r.DispatchedDeadline = fromMillis(millis(r.DispatchedDeadline))
		r.Deadline = nextDeadline(r)
		r.Notice = NoticeNone
		r.Updated = m.Sent
		r.Reason = oneLineText(r.Reason)
		r.Events = nil
		rs = append(rs, r)
	}
	m.Recipients = rs
	return m, nil
}

// insertTracked inserts a prepared message, its recipients and their first
// events, and returns it with its ids.
func insertTracked(ctx context.Context, tx *txn, m TrackedMessage) (TrackedMessage, error) {
	err := sql.ErrNoRows
	if m.Join {
		err = tx.QueryRowContext(ctx, `SELECT id FROM tracked_messages WHERE message_id = ? AND sender = ?
			ORDER BY id DESC LIMIT 1`, m.MessageID, m.Sender).Scan(&m.ID)
		if err == nil {
			_, err = tx.ExecContext(ctx, `UPDATE tracked_messages SET updated = ? WHERE id = ?`, millis(m.Sent), m.ID)
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		m.ID, err = insertID(ctx, tx, `INSERT INTO tracked_messages
			(message_id, sender, sender_domain, dispatched_requested, sent, updated, relay)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			m.MessageID, m.Sender, senderDomain(m.Sender), m.DispatchedRequested, millis(m.Sent), millis(m.Sent), m.Relay)
	}
	if err != nil {
		return m, fmt.Errorf("insert tracked message: %w", err)
	}
	m.Recipients = append([]TrackedRecipient(nil), m.Recipients...)
	for i := range m.Recipients {
		r := &m.Recipients[i]
		r.TrackedID = m.ID
		var err error
		r.ID, err = insertID(ctx, tx, `INSERT INTO tracked_recipients
			(tracked_id, recipient, state, outcome, outcome_by, reason, relayed, processed_deadline,
			 dispatched_deadline, deadline, notice, updated)
			VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, '', ?)`,
			m.ID, r.Address, string(r.State), string(r.Outcome), r.OutcomeBy, r.Reason,
			millis(r.ProcessedDeadline), millis(r.DispatchedDeadline), millis(r.Deadline), millis(m.Sent))
		if err != nil {
			return m, fmt.Errorf("insert tracked recipient %s: %w", r.Address, err)
		}
		ev := TrackEvent{RecipientID: r.ID, At: m.Sent, Kind: string(r.State), State: r.State, Outcome: r.Outcome, Detail: r.Reason}
		if r.State == TrackFailed {
			ev.Notice = "filed" // the submission's own DSN told the sender
		}
		if ev.ID, err = insertTrackEvent(ctx, tx, m, ev); err != nil {
			return m, err
		}
		r.Events = []TrackEvent{ev}
	}
	return m, nil
}

// insertTrackEvent appends an event and, for a transition, queues a
// webhook delivery for every webhook of the sender's address or domain.
func insertTrackEvent(ctx context.Context, tx *txn, m TrackedMessage, ev TrackEvent) (int64, error) {
	id, err := insertID(ctx, tx, `INSERT INTO tracking_events
		(recipient_id, at, kind, previous_state, state, outcome, detail, notice)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		ev.RecipientID, millis(ev.At), ev.Kind, string(ev.PreviousState), string(ev.State), string(ev.Outcome),
		oneLineText(ev.Detail), ev.Notice)
	if err != nil {
		return 0, fmt.Errorf("insert tracking event: %w", err)
	}
	if !ev.Transition() {
		return id, nil
	}
	at := millis(ev.At)
	_, err = tx.ExecContext(ctx, `INSERT INTO webhook_outbox
		(webhook_id, tracked_id, event_id, state, attempts, next_attempt, last_error, created, updated)
		SELECT id, ?, ?, 'pending', 0, ?, '', ?, ? FROM webhooks WHERE target = ? OR target = ?`,
		m.ID, id, at, at, at, m.Sender, senderDomain(m.Sender))
	if err != nil {
		return 0, fmt.Errorf("queue webhook deliveries: %w", err)
	}
	return id, nil
}

// trackedMessageColumns and trackedRecipientColumns are what
// scanTrackedMessage and scanTrackedRecipient read.
const trackedMessageColumns = `m.id, m.message_id, m.sender, m.dispatched_requested, m.sent, m.updated`

const trackedRecipientColumns = `r.id, r.tracked_id, r.recipient, r.state, r.outcome, r.outcome_by, r.reason,
	r.relayed, r.processed_deadline, r.dispatched_deadline, r.deadline, r.notice, r.updated`

func scanTrackedMessage(row rowScanner) (TrackedMessage, error) {
	var m TrackedMessage
	var sent, updated int64
	if err := row.Scan(&m.ID, &m.MessageID, &m.Sender, &m.DispatchedRequested, &sent, &updated); err != nil {
		return TrackedMessage{}, err
	}
	m.Sent, m.Updated = fromMillis(sent), fromMillis(updated)
	return m, nil
}

func scanTrackedRecipient(row rowScanner) (TrackedRecipient, error) {
	var r TrackedRecipient
	var state, outcome, notice string
	var relayed, pd, dd, deadline, updated int64
	err := row.Scan(&r.ID, &r.TrackedID, &r.Address, &state, &outcome, &r.OutcomeBy, &r.Reason,
		&relayed, &pd, &dd, &deadline, &notice, &updated)
	if err != nil {
		return TrackedRecipient{}, err
	}
	r.State, r.Outcome, r.Notice = TrackState(state), Outcome(outcome), NoticeState(notice)
	r.Relayed, r.ProcessedDeadline, r.DispatchedDeadline = fromMillis(relayed), fromMillis(pd), fromMillis(dd)
	r.Deadline, r.Updated = fromMillis(deadline), fromMillis(updated)
	return r, nil
}

func getTrackedMessage(ctx context.Context, q queryer, id int64) (TrackedMessage, error) {
	m, err := scanTrackedMessage(q.QueryRowContext(ctx, `SELECT `+trackedMessageColumns+` FROM tracked_messages m WHERE m.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return TrackedMessage{}, fmt.Errorf("tracked message %d: %w", id, ErrNotFound)
	}
	return m, err
}

func getTrackedRecipient(ctx context.Context, q queryer, id int64) (TrackedRecipient, error) {
	r, err := scanTrackedRecipient(q.QueryRowContext(ctx, `SELECT `+trackedRecipientColumns+` FROM tracked_recipients r WHERE r.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return TrackedRecipient{}, fmt.Errorf("tracked recipient %d: %w", id, ErrNotFound)
	}
	return r, err
}

// findTracked resolves a TrackRef to a recipient id.
func findTracked(ctx context.Context, q queryer, ref TrackRef) (int64, error) {
	if ref.RecipientID > 0 {
		return ref.RecipientID, nil
	}
	if ref.MessageID == "" {
		return 0, fmt.Errorf("tracked recipient: no Message-ID: %w", ErrNotFound)
	}
	query := `SELECT id FROM tracked_messages WHERE message_id = ?`
	args := []any{ref.MessageID}
	if ref.Sender != "" {
		query += ` AND sender = ?`
		args = append(args, strings.ToLower(strings.TrimSpace(ref.Sender)))
	}
	ids, err := queryIDs(ctx, q, query+` ORDER BY id DESC LIMIT 20`, args...)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		for _, a := range ref.Recipients {
			addr, err := normalizeTrackAddress(a)
			if err != nil {
				continue
			}
			var rid int64
			err = q.QueryRowContext(ctx, `SELECT id FROM tracked_recipients WHERE tracked_id = ? AND recipient = ?`, id, addr).Scan(&rid)
			if err == nil {
				return rid, nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return 0, err
			}
		}
	}
	return 0, fmt.Errorf("tracked message %s recipient %v: %w", ref.MessageID, ref.Recipients, ErrNotFound)
}

// UpdateTracked applies a tracker's decision to one recipient at now, in one
// transaction: it reads the recipient (ErrNotFound if ref finds none),
// calls decide with the message and the recipient as they are (with its
// history in Events, oldest first), applies the
// change, records its event and queues the webhook deliveries of a
// transition. decide must not block: it runs inside the transaction. It
// returns the message, the recipient after the change, and the change.
func (s *Store) UpdateTracked(ctx context.Context, ref TrackRef, now time.Time,
	decide func(TrackedMessage, TrackedRecipient) TrackChange) (TrackedMessage, TrackedRecipient, TrackChange, error) {
	res, err := s.UpdateTrackedMany(ctx, []TrackRef{ref}, now, func(_ int, m TrackedMessage, r TrackedRecipient) TrackChange {
		return decide(m, r)
	})
	if err != nil {
		return TrackedMessage{}, TrackedRecipient{}, TrackChange{}, err
	}
	u := res[0]
	if u.Err != nil {
		return TrackedMessage{}, TrackedRecipient{}, TrackChange{}, fmt.Errorf("update tracking: %w", u.Err)
	}
	return u.Message, u.Recipient, u.Change, nil
}

// TrackUpdate is the result of one reference of UpdateTrackedMany.
type TrackUpdate struct {
	Message   TrackedMessage
	Recipient TrackedRecipient // after the change
	Change    TrackChange
	Err       error // ErrNotFound (wrapped) when the reference finds none
}

// UpdateTrackedMany is UpdateTracked for several references in one
// transaction, each under a savepoint of its own: decide gets the index of
// the reference. A reference that fails (finds no recipient, say) fails
// alone, in its TrackUpdate; err is set when the transaction as a whole
// fails.
func (s *Store) UpdateTrackedMany(ctx context.Context, refs []TrackRef, now time.Time,
	decide func(int, TrackedMessage, TrackedRecipient) TrackChange) ([]TrackUpdate, error) {
	out := make([]TrackUpdate, len(refs))
	now = fromMillis(millis(now))
	err := s.tx(ctx, func(tx *txn) error {
		for i, ref := range refs {
			out[i].Err = savepoint(ctx, tx, func() error {
				var err error
				out[i].Message, out[i].Recipient, out[i].Change, err = updateTracked(ctx, tx, ref, now,
					func(m TrackedMessage, r TrackedRecipient) TrackChange { return decide(i, m, r) })
				return err
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update tracking: %w", err)
	}
	return out, nil
}

func updateTracked(ctx context.Context, tx *txn, ref TrackRef, now time.Time,
	decide func(TrackedMessage, TrackedRecipient) TrackChange) (m TrackedMessage, r TrackedRecipient, c TrackChange, err error) {
	id, err := findTracked(ctx, tx, ref)
	if err != nil {
		return m, r, c, err
	}
	// Two nodes may hear of one recipient at once (an MDN here, its
	// timeout there): they decide one after the other.
	if err := lockRow(ctx, tx, "tracked_recipients", id); err != nil {
		return m, r, c, err
	}
	if r, err = getTrackedRecipient(ctx, tx, id); err != nil {
		return m, r, c, err
	}
	if m, err = getTrackedMessage(ctx, tx, r.TrackedID); err != nil {
		return m, r, c, err
	}
	if r.Events, err = trackEvents(ctx, tx, `e.recipient_id = ?`, r.ID); err != nil {
		return m, r, c, fmt.Errorf("tracking history: %w", err)
	}
	c = decide(m, r)
	if c.Skip {
		return m, r, c, nil
	}
	if c.Kind == "" {
		return m, r, c, errors.New("tracking change without a kind")
	}
	prev := r.State
	if c.State != "" {
		if !c.State.Valid() {
			return m, r, c, fmt.Errorf("tracking change to state %q", c.State)
		}
		r.State = c.State
	}
	if c.Outcome != OutcomeNone {
		r.Outcome, r.OutcomeBy, r.Reason = c.Outcome, c.OutcomeBy, oneLineText(c.Reason)
	}
	if c.Relayed && r.Relayed.IsZero() {
		r.Relayed = now
	}
	if c.NoticePending {
		r.Notice = NoticePending
	}
	r.Deadline = nextDeadline(r)
	r.Updated = now
	_, err = tx.ExecContext(ctx, `UPDATE tracked_recipients SET state = ?, outcome = ?, outcome_by = ?, reason = ?,
		relayed = ?, deadline = ?, notice = ?, updated = ? WHERE id = ?`,
		string(r.State), string(r.Outcome), r.OutcomeBy, r.Reason, millis(r.Relayed), millis(r.Deadline),
		string(r.Notice), millis(now), r.ID)
	if err != nil {
		return m, r, c, fmt.Errorf("update tracked recipient: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE tracked_messages SET updated = ? WHERE id = ?`, millis(now), m.ID); err != nil {
		return m, r, c, fmt.Errorf("update tracked message: %w", err)
	}
	m.Updated = now
	ev := TrackEvent{RecipientID: r.ID, At: now, Kind: c.Kind, PreviousState: prev, State: r.State,
		Outcome: r.Outcome, Detail: c.Detail, Notice: c.Notice}
	if ev.ID, err = insertTrackEvent(ctx, tx, m, ev); err != nil {
		return m, r, c, err
	}
	r.Events = []TrackEvent{ev}
	return m, r, c, nil
}

// TrackedMessage returns the newest tracked message with a Message-ID, with
// its recipients and their events; an error wrapping ErrNotFound if there
// is none.
func (s *Store) TrackedMessage(ctx context.Context, messageID string) (TrackedMessage, error) {
	return s.TrackedMessageIn(ctx, messageID, nil)
}

// TrackedMessageIn is TrackedMessage among the messages of senders in
// domains (nil: any): a scoped API token's view, which another domain's
// message of the same Message-ID must not hide.
func (s *Store) TrackedMessageIn(ctx context.Context, messageID string, domains []string) (TrackedMessage, error) {
	query := `SELECT id FROM tracked_messages WHERE message_id = ?`
	args := []any{messageID}
	if domains != nil {
		cond, dargs := inList("sender_domain", domains)
		query += ` AND ` + cond
		args = append(args, dargs...)
	}
	var m TrackedMessage
	err := s.read(ctx, func(q queryer) error {
		var id int64
		err := q.QueryRowContext(ctx, query+` ORDER BY id DESC LIMIT 1`, args...).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("tracked message %s: %w", messageID, ErrNotFound)
		} else if err != nil {
			return err
		}
		m, err = readTracked(ctx, q, id, true, "")
		return err
	})
	if err != nil {
		return TrackedMessage{}, fmt.Errorf("read tracking: %w", err)
	}
	return m, nil
}

// TrackedMessageByID returns a tracked message by its row id, with its
// recipients and their events.
func (s *Store) TrackedMessageByID(ctx context.Context, id int64) (TrackedMessage, error) {
	var m TrackedMessage
	err := s.read(ctx, func(q queryer) error {
		var err error
		m, err = readTracked(ctx, q, id, true, "")
		return err
	})
	if err != nil {
		return TrackedMessage{}, fmt.Errorf("read tracking: %w", err)
	}
	return m, nil
}

// readTracked reads a message with the recipients recipientWhere selects
// ("" for all), and their events when events is set.
func readTracked(ctx context.Context, q queryer, id int64, events bool, recipientWhere string, args ...any) (TrackedMessage, error) {
	m, err := getTrackedMessage(ctx, q, id)
	if err != nil {
		return TrackedMessage{}, err
	}
	query := `SELECT ` + trackedRecipientColumns + ` FROM tracked_recipients r WHERE r.tracked_id = ?`
	if recipientWhere != "" {
		query += ` AND ` + recipientWhere
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY r.id`, append([]any{id}, args...)...)
	if err != nil {
		return TrackedMessage{}, err
	}
	for rows.Next() {
		r, err := scanTrackedRecipient(rows)
		if err != nil {
			rows.Close()
			return TrackedMessage{}, err
		}
		m.Recipients = append(m.Recipients, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return TrackedMessage{}, err
	}
	if !events {
		return m, nil
	}
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.Events, err = trackEvents(ctx, q, `e.recipient_id = ?`, r.ID); err != nil {
			return TrackedMessage{}, err
		}
	}
	return m, nil
}

const trackEventColumns = `e.id, e.recipient_id, e.at, e.kind, e.previous_state, e.state, e.outcome, e.detail, e.notice`

func scanTrackEvent(row rowScanner) (TrackEvent, error) {
	var e TrackEvent
	var at int64
	var prev, state, outcome string
	if err := row.Scan(&e.ID, &e.RecipientID, &at, &e.Kind, &prev, &state, &outcome, &e.Detail, &e.Notice); err != nil {
		return TrackEvent{}, err
	}
	e.At, e.PreviousState, e.State, e.Outcome = fromMillis(at), TrackState(prev), TrackState(state), Outcome(outcome)
	return e, nil
}

func trackEvents(ctx context.Context, q queryer, where string, args ...any) ([]TrackEvent, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+trackEventColumns+` FROM tracking_events e WHERE `+where+` ORDER BY e.id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []TrackEvent
	for rows.Next() {
		e, err := scanTrackEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// TrackedMessages returns the tracked messages a filter selects, newest
// first, with all their recipients.
func (s *Store) TrackedMessages(ctx context.Context, f TrackFilter) ([]TrackedMessage, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	query := `SELECT m.id FROM tracked_messages m WHERE 1 = 1`
	var args []any
	if f.Sender != "" {
		query += ` AND m.sender = ?`
		args = append(args, strings.ToLower(strings.TrimSpace(f.Sender)))
	}
	if f.SenderDomains != nil {
		cond, dargs := inList("m.sender_domain", f.SenderDomains)
		query += ` AND ` + cond
		args = append(args, dargs...)
	}
	if !f.Since.IsZero() {
		query += ` AND m.sent >= ?`
		args = append(args, millis(f.Since))
	}
	if !f.Until.IsZero() {
		query += ` AND m.sent < ?`
		args = append(args, millis(f.Until))
	}
	if f.State != "" {
		if !f.State.Valid() {
			return nil, fmt.Errorf("list tracking: unknown state %q", f.State)
		}
		query += ` AND EXISTS (SELECT 1 FROM tracked_recipients r WHERE r.tracked_id = m.id AND r.state = ?)`
		args = append(args, string(f.State))
	}
	query += ` ORDER BY m.sent DESC, m.id DESC LIMIT ?`
	args = append(args, f.Limit)
	var out []TrackedMessage
	err := s.read(ctx, func(q queryer) error {
		ids, err := queryIDs(ctx, q, query, args...)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := readTracked(ctx, q, id, f.Events, "")
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tracking: %w", err)
	}
	return out, nil
}

// DueTracked returns up to limit recipients without an outcome whose
// deadline is at or before now, earliest first.
func (s *Store) DueTracked(ctx context.Context, now time.Time, limit int) ([]int64, error) {
	if limit <= 0 {
		limit = 100
	}
	ids, err := queryIDs(ctx, s.db, `SELECT id, deadline FROM tracked_recipients
		WHERE outcome = '' AND deadline > 0 AND deadline <= ? ORDER BY deadline, id LIMIT ?`, millis(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due tracking deadlines: %w", err)
	}
	return ids, nil
}

// PendingNotices returns up to limit messages with recipients whose failure
// DSN is due, with those recipients only.
func (s *Store) PendingNotices(ctx context.Context, limit int) ([]TrackedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []TrackedMessage
	err := s.read(ctx, func(q queryer) error {
		ids, err := queryIDs(ctx, q, `SELECT DISTINCT tracked_id FROM tracked_recipients WHERE notice = 'pending'
			ORDER BY tracked_id LIMIT ?`, limit)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := readTracked(ctx, q, id, false, `r.notice = 'pending'`)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pending tracking notices: %w", err)
	}
	return out, nil
}

// NoticesDone records that the failure DSNs of these recipients were filed.
func (s *Store) NoticesDone(ctx context.Context, recipientIDs []int64, now time.Time) error {
	err := s.tx(ctx, func(tx *txn) error {
		for _, id := range recipientIDs {
			if _, err := tx.ExecContext(ctx, `UPDATE tracked_recipients SET notice = 'done', updated = ?
				WHERE id = ? AND notice = 'pending'`, millis(now), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark tracking notices done: %w", err)
	}
	return nil
}

// TrackedRelayed returns up to limit tracked recipients of messages sent
// at or after since that the outbound queue has delivered to the next hop
// but that are not yet recorded as relayed. Tracking and queue meet on the
// Message-ID and the recipient address.
func (s *Store) TrackedRelayed(ctx context.Context, since time.Time, limit int) ([]RelayedRecipient, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, `SELECT r.id, MIN(q.status), MIN(q.remote_mta), MIN(q.updated)
		FROM tracked_recipients r
		JOIN tracked_messages m ON m.id = r.tracked_id
		JOIN queue_messages qm ON qm.message_id = m.message_id
		JOIN queue_recipients q ON q.queue_id = qm.id AND LOWER(q.recipient) = r.recipient
		WHERE r.relayed = 0 AND m.sent >= ? AND q.state = 'delivered'
		GROUP BY r.id ORDER BY r.id LIMIT ?`, millis(since), limit)
	if err != nil {
		return nil, fmt.Errorf("relayed tracked recipients: %w", err)
	}
	defer rows.Close()
	var out []RelayedRecipient
	for rows.Next() {
		var rr RelayedRecipient
		var at int64
		if err := rows.Scan(&rr.RecipientID, &rr.Status, &rr.RemoteMTA, &at); err != nil {
			return nil, fmt.Errorf("relayed tracked recipients: %w", err)
		}
		rr.At = fromMillis(at)
		out = append(out, rr)
	}
	return out, rows.Err()
}

// PurgeTracked deletes tracked messages sent before the given time whose
// recipients all have an outcome and no notice pending and whose webhook
// deliveries are all done, and returns how many went.
func (s *Store) PurgeTracked(ctx context.Context, sentBefore time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM tracked_messages WHERE sent < ?
		AND NOT EXISTS (SELECT 1 FROM tracked_recipients r WHERE r.tracked_id = tracked_messages.id
			AND (r.outcome = '' OR r.notice = 'pending'))
		AND NOT EXISTS (SELECT 1 FROM webhook_outbox o WHERE o.tracked_id = tracked_messages.id AND o.state = 'pending')`,
		millis(sentBefore))
	if err != nil {
		return 0, fmt.Errorf("purge tracking: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge tracking: %w", err)
	}
	return n, nil
}

// oneLineText folds whitespace and line breaks to single spaces.
func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }

// inList is the condition "column IN (values)" with its arguments; an
// empty list matches nothing (the list holds the empty string, which no
// domain is).
func inList(column string, values []string) (string, []any) {
	cond := column + ` IN (''`
	args := make([]any, 0, len(values))
	for _, v := range values {
		cond += `, ?`
		args = append(args, v)
	}
	return cond + `)`, args
}
