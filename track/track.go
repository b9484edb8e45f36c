// Package track is the sending side of Direct delivery notification
// (DNIG; DN-06..DN-10): it follows every outbound message per recipient
// from the queue to the recipient's HISP and its MDNs, fails a recipient
// to its sender when an MDN does not come in time, and decides which
// notices reach the sender's mailbox. Package mdn builds and parses the
// notices; package store keeps the state, so that it survives restarts.
//
// Each recipient moves through the store.TrackState machine:
//
//	queued ──▶ relayed ──▶ processed ──▶ dispatched
//	   └──────────┴────────────┴──────────────┴──▶ failed (with a reason)
//
// Sent (or Track) records a message once it is queued. Relayed (and
// RelayedAll) mark recipients the next hop accepted, called by the queue at
// the 250, before any MDN can come back; Run also finds deliveries in the
// queue that no tracker heard of (a crash between the two, another
// process). Notification takes an MDN or DSN that passed the inbound
// trust path, correlates it by Original-Message-ID and recipient and says
// whether it is filed in the sender's mailbox. Bounced does the same for
// the queue's own DSNs. Run also fires the timeouts, counted from the send
// time: ProcessedTimeout for the processed MDN, and DispatchedTimeout for
// the dispatched one when the message asked for timely and reliable
// delivery (Disposition-Notification-Options:
// X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true). An expired recipient
// gets one failure DSN (RFC 3464, status 5.4.7) in the sender's mailbox.
//
// What reaches the sender (DN-07, DN-09): exactly one final outcome per
// recipient. Success is the dispatched MDN when it was requested, else the
// processed MDN; failure is a failed MDN, a remote DSN, a queue failure or
// hisp's own timeout DSN. Once a recipient has failed, later MDNs (a late
// dispatched one, say) are recorded but not filed; duplicates are never
// filed; processed MDNs are withheld when dispatched was requested and
// Options.WithholdProcessed is set. One exception: without the request a
// processed MDN is the success, and a failure that follows it (the mailbox
// turned out to be full) is still filed, so the sender is not left
// believing a message arrived that did not. MDNs that say nothing about
// delivery (displayed, deleted: a user's own read receipts) are always
// filed (MDN-06).
//
// A notice is only believed about a recipient of the notice author's own
// domain (or a parent or sub-domain of it): a HISP trusted for one domain
// cannot settle the fate of messages to another.
package track

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/store"
)

// Defaults of Options.
const (
	DefaultTimeout  = time.Hour
	DefaultInterval = 5 * time.Second
	DefaultKeep     = 30 * 24 * time.Hour
)

// relayWindow is how far back Run looks for queue deliveries to record: the
// queue keeps finished messages for a week.
const relayWindow = 7 * 24 * time.Hour

// Options configure a Tracker.
type Options struct {
	Store Store // required; a *store.Store
	// Notify files a notice (a DSN) in the INBOX of a local sender. An
	// error leaves it due, to be tried at the next check, unless it wraps
	// store.ErrOverQuota or store.ErrNotFound.
	Notify func(ctx context.Context, sender string, msg []byte) error
	// Hostname is the Reporting-MTA of hisp's DSNs.
	Hostname string
	// ProcessedTimeout and DispatchedTimeout count from the send time;
	// DefaultTimeout when zero.
	ProcessedTimeout  time.Duration
	DispatchedTimeout time.Duration
	// WithholdProcessed keeps processed MDNs out of the sender's mailbox
	// when dispatched was requested (DN-09).
	WithholdProcessed bool
	// Interval is how often Run checks deadlines, the queue and pending
	// notices; DefaultInterval when zero.
	Interval time.Duration
	// Keep is how long finished records are kept; DefaultKeep when zero.
	Keep time.Duration
	// Leader, if set, says whether this node runs the checks now: when
	// several nodes share one store, one node at a time does (a job
	// lease, store.Job); nil runs it always.
	Leader func(context.Context) bool
	// Changed, if set, is called after every recorded state change (to
	// wake a webhook worker). It must not block.
	Changed func()
	Now     func() time.Time // time.Now when nil
	Logger  *slog.Logger     // slog.Default() when nil
}

// Tracker follows sent messages. Its methods are safe for concurrent use,
// also with other Trackers over the same store (all decisions are made in
// store transactions).
type Tracker struct {
	opts      Options
	st        Store
	log       *slog.Logger
	lastPurge time.Time
}

// New returns a Tracker; Run starts its checks.
func New(opts Options) *Tracker {
	if opts.ProcessedTimeout <= 0 {
		opts.ProcessedTimeout = DefaultTimeout
	}
	if opts.DispatchedTimeout <= 0 {
		opts.DispatchedTimeout = DefaultTimeout
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Tracker{opts: opts, st: opts.Store, log: opts.Logger}
}

func (t *Tracker) now() time.Time { return t.opts.Now() }

// Message is a sent message to track.
type Message struct {
	MessageID string // the Message-ID as sent
	// Sender is the local address whose mailbox gets the notices.
	Sender     string
	Recipients []string // queued recipients
	// Failed are recipients that failed already at submission (no
	// trusted certificate, say); the sender was told by the submission's
	// own DSN, so they are recorded as failed with no notice due.
	Failed              []FailedRecipient
	RequestedDispatched bool      // timely and reliable delivery was asked for (DN-01)
	Sent                time.Time // zero: now
	Join                bool      // see store.TrackedMessage.Join
	Relay               string    // the relay account that sent it, if one did
}

// FailedRecipient is a recipient that failed at submission.
type FailedRecipient struct {
	Address string
	Reason  string
}

// Sent starts tracking a message queued for recipients; see Track.
func (t *Tracker) Sent(ctx context.Context, messageID, sender string, recipients []string, requestedDispatched bool) error {
	_, err := t.Track(ctx, Message{MessageID: messageID, Sender: sender, Recipients: recipients, RequestedDispatched: requestedDispatched})
	return err
}

// Track starts tracking a message in a transaction of its own: each
// queued recipient is queued with its deadlines (from the send time), each
// failed one failed. It returns the tracking's id. A submission path should
// rather commit the Record of a message with the queued message
// (store.EnqueueExtras), so that no notice can come back before the
// tracking is there, and then call Recorded.
func (t *Tracker) Track(ctx context.Context, m Message) (int64, error) {
	tm, err := t.Record(m)
	if err != nil {
		return 0, err
	}
	stored, err := t.st.TrackMessage(ctx, tm)
	if err != nil {
		return 0, err
	}
	t.changed()
	return stored.ID, nil
}

// Record is the tracking of a message as Track stores it, for a caller
// that stores it in a transaction of its own (with the queued message).
func (t *Tracker) Record(m Message) (store.TrackedMessage, error) {
	id := NormalizeMessageID(m.MessageID)
	if id == "" {
		return store.TrackedMessage{}, errors.New("track: no Message-ID")
	}
	sent := m.Sent
	if sent.IsZero() {
		sent = t.now()
	}
	tm := store.TrackedMessage{MessageID: id, Sender: m.Sender, DispatchedRequested: m.RequestedDispatched, Sent: sent, Join: m.Join, Relay: m.Relay}
	for _, r := range m.Recipients {
		tr := store.TrackedRecipient{Address: r, ProcessedDeadline: sent.Add(t.opts.ProcessedTimeout)}
		if m.RequestedDispatched {
			tr.DispatchedDeadline = sent.Add(t.opts.DispatchedTimeout)
		}
		tm.Recipients = append(tm.Recipients, tr)
	}
	for _, f := range m.Failed {
		tm.Recipients = append(tm.Recipients, store.TrackedRecipient{Address: f.Address, State: store.TrackFailed,
			Outcome: store.OutcomeFailure, OutcomeBy: "agent", Reason: f.Reason})
	}
	return tm, nil
}

// Recorded tells the tracker that a Record was stored: the webhooks hear
// of the new state.
func (t *Tracker) Recorded() { t.changed() }

func (t *Tracker) changed() {
	if t.opts.Changed != nil {
		t.opts.Changed()
	}
}

// Relayed records that the next hop accepted a recipient's copy; detail
// is its reply. A recipient already recorded as relayed is left alone, and
// an untracked one is no error.
func (t *Tracker) Relayed(ctx context.Context, messageID, recipient, detail string) error {
	_, err := t.apply(ctx, store.TrackRef{MessageID: NormalizeMessageID(messageID), Recipients: []string{recipient}},
		mdn.Input{Kind: mdn.KindRelayed, Detail: detail})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// Relay is one recipient the next hop accepted, for RelayedAll.
type Relay struct {
	Recipient string
	Detail    string // the next hop's reply
}

// RelayedAll is Relayed for several recipients of one message, in one
// transaction: what the queue calls when the next hop answered 250, so
// that the relayed event comes at that moment and before the message's
// MDNs (Run's look at the queue remains for deliveries recorded while no
// tracker listened). Untracked recipients are no error.
func (t *Tracker) RelayedAll(ctx context.Context, messageID string, rs []Relay) error {
	id := NormalizeMessageID(messageID)
	if id == "" || len(rs) == 0 {
		return nil
	}
	refs, ins := make([]store.TrackRef, len(rs)), make([]mdn.Input, len(rs))
	for i, r := range rs {
		refs[i], ins[i] = store.TrackRef{MessageID: id, Recipients: []string{r.Recipient}}, mdn.Input{Kind: mdn.KindRelayed, Detail: r.Detail}
	}
	us, err := t.applyMany(ctx, refs, ins)
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range us {
		if u.Err != nil && !errors.Is(u.Err, store.ErrNotFound) {
			errs = append(errs, u.Err)
		}
	}
	return errors.Join(errs...)
}

// Verdict is what Notification decided about a notice.
type Verdict struct {
	// Tracked is set when the notice is about a tracked message and
	// recipient.
	Tracked bool
	// File is set when the notice goes to the sender's mailbox: it is not
	// about a tracked recipient, or it is the news the sender is to get.
	File bool
}

// Notification records an MDN or DSN that passed the inbound trust path
// and says whether to file it in the sender's mailbox. A notice about no
// tracked message is filed; one about a tracked message is filed when at
// least one of its recipients' decisions says so. An error of the store is
// returned with File set: the notice is better filed than lost.
func (t *Tracker) Notification(ctx context.Context, n *mdn.Notice) (Verdict, error) {
	file := Verdict{File: true}
	if n == nil {
		return file, nil
	}
	id := NormalizeMessageID(n.OriginalMessageID)
	if id == "" {
		return file, nil
	}
	v := Verdict{}
	for _, nr := range n.Recipients {
		var cands []string
		for _, a := range nr.Addresses {
			if a != "" && sameOrganization(domainOf(n.From), domainOf(a)) {
				cands = append(cands, a)
			}
		}
		if len(cands) == 0 {
			if len(nr.Addresses) > 0 {
				t.log.Warn("track: notice about a recipient of another domain ignored", "from", n.From,
					"recipients", nr.Addresses, "original", id)
			}
			continue
		}
		c, err := t.apply(ctx, store.TrackRef{MessageID: id, Recipients: cands},
			mdn.Input{Kind: nr.Kind, By: n.Type, Detail: nr.Detail, FinalDestination: nr.FinalDestination})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return file, err
		}
		v.Tracked = true
		if c.Notice == mdn.NoticeFiled {
			v.File = true
		}
	}
	if !v.Tracked {
		return file, nil
	}
	return v, nil
}

// Bounced records the queue's verdict on one recipient, before the queue's
// DSN goes to the sender: final for a permanent failure (a 5xx from the
// next hop, retries used up), else a delay notice. It returns whether that
// DSN may name the recipient: not when the sender already has a final
// outcome for it (a timeout failure, say). An untracked recipient may.
func (t *Tracker) Bounced(ctx context.Context, messageID, recipient, reason string, final bool) (bool, error) {
	kind := mdn.KindQueueDelayed
	if final {
		kind = mdn.KindQueueFailed
	}
	c, err := t.apply(ctx, store.TrackRef{MessageID: NormalizeMessageID(messageID), Recipients: []string{recipient}},
		mdn.Input{Kind: kind, By: "queue", Detail: reason})
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return true, err
	}
	return c.Notice == mdn.NoticeFiled, nil
}

// apply decides and records one input about one recipient.
func (t *Tracker) apply(ctx context.Context, ref store.TrackRef, in mdn.Input) (store.TrackChange, error) {
	us, err := t.applyMany(ctx, []store.TrackRef{ref}, []mdn.Input{in})
	if err != nil {
		return store.TrackChange{}, err
	}
	return us[0].Change, us[0].Err
}

// applyMany decides and records inputs about several recipients in one
// transaction.
func (t *Tracker) applyMany(ctx context.Context, refs []store.TrackRef, ins []mdn.Input) ([]store.TrackUpdate, error) {
	now := t.now()
	us, err := t.st.UpdateTrackedMany(ctx, refs, now, func(i int, m store.TrackedMessage, r store.TrackedRecipient) store.TrackChange {
		in := ins[i]
		in.Now = now
		return mdn.Machine{WithholdProcessed: t.opts.WithholdProcessed}.Decide(m, r, in)
	})
	if err != nil {
		return nil, err
	}
	changed := false
	for _, u := range us {
		if u.Err == nil && !u.Change.Skip {
			c, r := u.Change, u.Recipient
			t.log.Info("track", "message", u.Message.MessageID, "recipient", r.Address, "event", c.Kind,
				"state", r.State, "outcome", r.Outcome, "notice", c.Notice, "detail", c.Detail)
			changed = true
		}
	}
	if changed {
		t.changed()
	}
	return us, nil
}

// Run checks until ctx ends: at once (so that deadlines that passed while
// hisp was stopped fire now), then every Interval. It returns nil when ctx
// ends.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	for {
		if leads(ctx, t.opts.Leader) {
			if err := t.Check(ctx); err != nil && ctx.Err() == nil {
				t.log.Error("track: check", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// leads reports whether this node runs a job now (leader nil: always).
func leads(ctx context.Context, leader func(context.Context) bool) bool {
	return leader == nil || leader(ctx)
}

// Check does one round of Run's work: it records relays the queue made,
// fails recipients whose deadline passed, files the failure DSNs due, and
// now and then purges old finished records.
func (t *Tracker) Check(ctx context.Context) error {
	var errs []error
	now := t.now()
	rel, err := t.st.TrackedRelayed(ctx, now.Add(-relayWindow), 500)
	if err != nil {
		errs = append(errs, err)
	}
	if len(rel) > 0 {
		refs, ins := make([]store.TrackRef, len(rel)), make([]mdn.Input, len(rel))
		for i, r := range rel {
			detail := r.Status
			if r.RemoteMTA != "" {
				detail = r.RemoteMTA + ": " + detail
			}
			refs[i], ins[i] = store.TrackRef{RecipientID: r.RecipientID}, mdn.Input{Kind: mdn.KindRelayed, Detail: detail}
		}
		errs = append(errs, updateErrors(t.applyMany(ctx, refs, ins))...)
	}
	for {
		ids, err := t.st.DueTracked(ctx, now, 500)
		if err != nil || len(ids) == 0 {
			errs = append(errs, err)
			break
		}
		refs, ins := make([]store.TrackRef, len(ids)), make([]mdn.Input, len(ids))
		for i, id := range ids {
			refs[i], ins[i] = store.TrackRef{RecipientID: id}, mdn.Input{Kind: mdn.KindTimeout, By: "timeout"}
		}
		uerrs := updateErrors(t.applyMany(ctx, refs, ins))
		errs = append(errs, uerrs...)
		if len(ids) < 500 || len(uerrs) > 0 {
			break
		}
	}
	if err := t.fileNotices(ctx); err != nil {
		errs = append(errs, err)
	}
	if now.Sub(t.lastPurge) > time.Hour {
		t.lastPurge = now
		if n, err := t.st.PurgeTracked(ctx, now.Add(-t.opts.Keep)); err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			t.log.Info("track: purged finished records", "messages", n)
		}
	}
	return errors.Join(errs...)
}

// updateErrors collects the errors of applyMany.
func updateErrors(us []store.TrackUpdate, err error) []error {
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, u := range us {
		if u.Err != nil {
			errs = append(errs, u.Err)
		}
	}
	return errs
}

// fileNotices files one failure DSN per message for its recipients whose
// timeout notice is pending, then marks them done. A crash between the two
// files it again at the next start: at least once.
func (t *Tracker) fileNotices(ctx context.Context) error {
	msgs, err := t.st.PendingNotices(ctx, 100)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range msgs {
		var ids []int64
		var rs []mdn.DSNRecipient
		for _, r := range m.Recipients {
			ids = append(ids, r.ID)
			rs = append(rs, mdn.DSNRecipient{Recipient: r.Address, Action: mdn.Failed, Status: "5.4.7",
				Diagnostic: r.Reason, LastAttempt: r.Updated})
		}
		err := t.fileDSN(ctx, m, rs)
		switch {
		case err == nil:
		case errors.Is(err, store.ErrOverQuota), errors.Is(err, store.ErrNotFound), !strings.Contains(m.Sender, "@"):
			t.log.Error("track: failure DSN cannot be filed, given up", "message", m.MessageID, "sender", m.Sender, "err", err)
		default:
			errs = append(errs, fmt.Errorf("file failure DSN of %s for %s: %w", m.MessageID, m.Sender, err))
			continue
		}
		if err := t.st.NoticesDone(ctx, ids, t.now()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t *Tracker) fileDSN(ctx context.Context, m store.TrackedMessage, rs []mdn.DSNRecipient) error {
	if t.opts.Notify == nil {
		return nil
	}
	dsn, err := mdn.BuildSenderDSN(mdn.SenderReport{ReportingMTA: t.opts.Hostname, Sender: m.Sender,
		MessageID: m.MessageID, Arrival: m.Sent, Recipients: rs})
	if err != nil {
		return err
	}
	if err := t.opts.Notify(ctx, m.Sender, dsn); err != nil {
		return err
	}
	t.log.Info("track: failure DSN filed", "message", m.MessageID, "sender", m.Sender, "recipients", len(rs))
	return nil
}

// NormalizeMessageID returns a Message-ID in the form the tracker keeps:
// trimmed, in angle brackets; "" for an empty one.
func NormalizeMessageID(id string) string {
	id = strings.TrimSpace(id)
	if id == "" {
		return ""
	}
	if !strings.HasPrefix(id, "<") {
		id = "<" + id
	}
	if !strings.HasSuffix(id, ">") {
		id += ">"
	}
	return id
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(addr[i+1:]), ">"))
	}
	return ""
}

// sameOrganization reports whether a notice from domain from may speak
// about a recipient in domain rcpt: the same domain, or one a sub-domain
// of the other. An unknown author (from "") may not.
func sameOrganization(from, rcpt string) bool {
	if from == "" || rcpt == "" {
		return false
	}
	return from == rcpt || strings.HasSuffix(from, "."+rcpt) || strings.HasSuffix(rcpt, "."+from)
}
