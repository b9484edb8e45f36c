package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/track"
)

// QueueRecipient is a recipient of a queued message as listed.
type QueueRecipient struct {
	Address     string     `json:"address"`
	Local       bool       `json:"local"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt"`
	LastAttempt *time.Time `json:"last_attempt"`
	LastError   string     `json:"last_error,omitempty"`
	RemoteMTA   string     `json:"remote_mta,omitempty"`
	Status      string     `json:"status,omitempty"`
	// ClaimedBy is the node whose attempt holds a delivering (or
	// sealing) recipient, until ClaimedUntil unless it renews the claim.
	ClaimedBy    string     `json:"claimed_by,omitempty"`
	ClaimedUntil *time.Time `json:"claimed_until,omitempty"`
}

// QueueEntry is a queued message as listed; never its content.
type QueueEntry struct {
	ID         int64            `json:"id"`
	MessageID  string           `json:"message_id"`
	MailFrom   string           `json:"mail_from"`
	User       string           `json:"user,omitempty"` // the submitting login; "" for hisp's own mail
	Origin     string           `json:"origin"`
	Size       int64            `json:"size"`
	Created    time.Time        `json:"created"`
	Recipients []QueueRecipient `json:"recipients"`
}

func queueEntry(m store.QueuedMessage) QueueEntry {
	q := QueueEntry{ID: m.ID, MessageID: m.MessageID, MailFrom: m.MailFrom, User: m.User, Origin: m.Origin, Size: m.Size,
		Created: m.Created.UTC(), Recipients: []QueueRecipient{}}
	for _, r := range m.Recipients {
		qr := QueueRecipient{Address: r.Address, Local: r.Local, State: string(r.State),
			Attempts: r.Attempts, NextAttempt: optTime(r.NextAttempt), LastAttempt: optTime(r.LastAttempt),
			LastError: r.LastError, RemoteMTA: r.RemoteMTA, Status: r.Status}
		if (r.State == store.StateDelivering || r.State == store.StateSealing) && r.ClaimedBy != "" {
			qr.ClaimedBy, qr.ClaimedUntil = r.ClaimedBy, optTime(r.ClaimedUntil)
		}
		q.Recipients = append(q.Recipients, qr)
	}
	return q
}

// Queue lists the outbound queue, oldest first; with all, also the
// messages whose recipients are all final.
func (o *Ops) Queue(ctx context.Context, all bool) ([]QueueEntry, error) {
	msgs, err := o.st.QueueList(ctx, all)
	if err != nil {
		return nil, err
	}
	out := []QueueEntry{}
	for _, m := range msgs {
		out = append(out, queueEntry(m))
	}
	return out, nil
}

// QueueHead lists the oldest limit entries of the queue and how many there
// are in all.
func (o *Ops) QueueHead(ctx context.Context, limit int) ([]QueueEntry, int, error) {
	msgs, total, err := o.st.QueueHead(ctx, limit)
	if err != nil {
		return nil, 0, err
	}
	out := []QueueEntry{}
	for _, m := range msgs {
		out = append(out, queueEntry(m))
	}
	return out, total, nil
}

func queueNotFound(id int64, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &kindError{store.ErrNotFound, fmt.Sprintf("no queue entry %d", id)}
	}
	return err
}

// RetryQueue makes every recipient of a queued message that is not yet
// final due now; it returns how many.
func (o *Ops) RetryQueue(ctx context.Context, id int64) (int64, error) {
	n, err := o.st.QueueRetry(ctx, id, o.now())
	if err != nil {
		return 0, queueNotFound(id, err)
	}
	o.audit(ctx, "queue.retry", fmt.Sprint(id), fmt.Sprintf("%d recipient(s)", n))
	return n, nil
}

// DropQueue removes a queued message without a DSN.
func (o *Ops) DropQueue(ctx context.Context, id int64) (QueueEntry, error) {
	m, err := o.st.QueueDrop(ctx, id)
	if err != nil {
		return QueueEntry{}, queueNotFound(id, err)
	}
	o.audit(ctx, "queue.drop", fmt.Sprintf("%d %s", id, m.MessageID), "")
	return queueEntry(m), nil
}

// Scope limits what tracking a caller sees: the messages of senders in
// Domains; nil: every message.
type Scope struct{ Domains []string }

// TrackedMessage returns the tracking of one sent message, by Message-ID
// (with or without angle brackets). A scoped caller cannot tell others'
// messages from missing ones.
func (o *Ops) TrackedMessage(ctx context.Context, messageID string, scope Scope) (store.TrackedMessage, error) {
	id := track.NormalizeMessageID(messageID)
	if id == "" {
		return store.TrackedMessage{}, invalidf("no message-id")
	}
	m, err := o.st.TrackedMessageIn(ctx, id, scope.Domains)
	tok := store.APIToken{Domains: scope.Domains}
	if errors.Is(err, store.ErrNotFound) || err == nil && !tok.Sees(m.Sender) {
		return store.TrackedMessage{}, &kindError{store.ErrNotFound, fmt.Sprintf("no tracked message %s (%s track lists the latest)", id, o.prog())}
	}
	return m, err
}

// TrackedMessages lists sent messages, newest first, in the caller's
// scope.
func (o *Ops) TrackedMessages(ctx context.Context, f store.TrackFilter, scope Scope) ([]store.TrackedMessage, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, invalidf("state %q: want queued, relayed, processed, dispatched or failed", f.State)
	}
	f.SenderDomains = scope.Domains
	return o.st.TrackedMessages(ctx, f)
}
