package track

import (
	"fmt"
	"time"

	"github.com/hisp-project/hisp/store"
)

// The kinds of input the state machine takes, also the kinds of the events
// it records.
const (
	kindRelayed      = "relayed"    // the queue delivered to the next hop
	kindProcessed    = "processed"  // processed MDN
	kindDispatched   = "dispatched" // dispatched MDN
	kindFailed       = "failed"     // failed (denied, error) MDN or failure DSN
	kindTimeout      = "timeout"    // a deadline passed
	kindQueueFailed  = "bounced"    // the queue failed the recipient for good
	kindQueueDelayed = "delayed"    // the queue is still retrying (its delay DSN)
	kindDelayed      = "delayed"    // a remote delay DSN
	kindInformation  = "notice"     // any other notice: displayed, deleted, delivered DSN...
)

// What became of a notice, as recorded in the event (store.TrackEvent.Notice).
const (
	NoticeFiled      = "filed"      // filed in the sender's mailbox
	NoticeWithheld   = "withheld"   // a processed MDN kept back (DN-09)
	NoticeSuppressed = "suppressed" // a duplicate, or news after the final outcome
	NoticeDSN        = "dsn"        // hisp's own failure DSN is due
)

// input is one thing that happened to one recipient.
type input struct {
	kind             string
	by               string // "mdn", "dsn", "queue", "timeout"
	detail           string
	finalDestination bool // a dispatched MDN with X-DIRECT-FINAL-DESTINATION-DELIVERY
	now              time.Time
}

// decide is the state machine: what an input does to a recipient, and what
// reaches the sender. It runs inside the store's transaction and must not
// block.
func (t *Tracker) decide(m store.TrackedMessage, r store.TrackedRecipient, in input) store.TrackChange {
	c := store.TrackChange{Kind: in.kind, Detail: in.detail}
	suppress := func(why string) store.TrackChange {
		c.Notice = NoticeSuppressed
		c.Detail = join(in.detail, why)
		return c
	}
	switch in.kind {
	case kindRelayed:
		if !r.Relayed.IsZero() {
			return store.TrackChange{Skip: true}
		}
		c.Relayed = true
		if r.State == store.TrackQueued {
			c.State = store.TrackRelayed
		}
		return c

	case kindProcessed:
		switch {
		case r.Outcome == store.OutcomeFailure:
			return suppress("late: the sender was told of a failure")
		case seen(r, kindProcessed):
			return suppress("duplicate")
		case r.State == store.TrackDispatched:
			// Notices overtake each other (two queue entries, two
			// connections): the dispatched MDN came first and decided the
			// outcome. The processed one changes nothing; the sender sees
			// it as it would have in order, unless the dispatched MDN was
			// the only news due.
			switch {
			case !m.DispatchedRequested:
				return suppress("after the dispatched MDN, which was the news")
			case t.opts.WithholdProcessed:
				c.Notice = NoticeWithheld
			default:
				c.Notice = NoticeFiled
			}
			c.Detail = join(in.detail, "after the dispatched MDN")
			return c
		}
		c.State = store.TrackProcessed
		switch {
		case !m.DispatchedRequested:
			c.Outcome, c.OutcomeBy, c.Notice = store.OutcomeSuccess, in.by, NoticeFiled
		case t.opts.WithholdProcessed:
			c.Notice = NoticeWithheld
		default:
			c.Notice = NoticeFiled
		}
		return c

	case kindDispatched:
		if m.DispatchedRequested && !in.finalDestination {
			c.Detail = join(in.detail, "without the X-DIRECT-FINAL-DESTINATION-DELIVERY field")
		}
		switch {
		case r.Outcome == store.OutcomeFailure:
			return suppress("late: the sender was told of a failure")
		case r.State == store.TrackDispatched:
			return suppress("duplicate")
		case r.Outcome == store.OutcomeSuccess:
			// Not requested: the processed MDN was the news.
			c.State = store.TrackDispatched
			c.Notice = NoticeSuppressed
			return c
		}
		c.State, c.Outcome, c.OutcomeBy, c.Notice = store.TrackDispatched, store.OutcomeSuccess, in.by, NoticeFiled
		return c

	case kindFailed:
		switch {
		case r.Outcome == store.OutcomeFailure:
			return suppress("duplicate")
		case r.State == store.TrackDispatched:
			return suppress("after the dispatched MDN")
		}
		reason := in.detail
		if reason == "" {
			reason = "failure notice from the recipient's HISP"
		}
		c.State, c.Outcome, c.OutcomeBy, c.Reason, c.Notice = store.TrackFailed, store.OutcomeFailure, in.by, reason, NoticeFiled
		return c

	case kindTimeout:
		if r.Outcome != store.OutcomeNone || r.Deadline.IsZero() || r.Deadline.After(in.now) {
			return store.TrackChange{Skip: true}
		}
		sent := m.Sent // the recipient's own, when it joined the tracking later
		if len(r.Events) > 0 {
			sent = r.Events[0].At
		}
		what, limit := "processed", r.ProcessedDeadline.Sub(sent)
		if r.State == store.TrackProcessed {
			what, limit = "dispatched", r.DispatchedDeadline.Sub(sent)
		}
		reason := fmt.Sprintf("no %s MDN from the recipient's HISP within %s of sending", what, limit)
		if r.Relayed.IsZero() {
			reason = fmt.Sprintf("not delivered to the recipient's HISP, and no %s MDN within %s of sending", what, limit)
		}
		c.Detail = reason
		c.State, c.Outcome, c.OutcomeBy, c.Reason = store.TrackFailed, store.OutcomeFailure, "timeout", reason
		c.NoticePending, c.Notice = true, NoticeDSN
		return c

	case kindQueueFailed:
		switch {
		case r.Outcome == store.OutcomeNone:
			c.State, c.Outcome, c.OutcomeBy, c.Reason, c.Notice = store.TrackFailed, store.OutcomeFailure, "queue", in.detail, NoticeFiled
			return c
		case r.Outcome == store.OutcomeFailure && r.OutcomeBy == "queue":
			// The queue's DSN is being tried again: it still names the
			// recipient, without a second event.
			return store.TrackChange{Skip: true, Notice: NoticeFiled}
		}
		return suppress("the sender has the final outcome")

	case kindInformation:
		// displayed, deleted, a delivered DSN: not a delivery outcome,
		// and an edge's own MDNs are relayed like any message (MDN-06).
		c.Notice = NoticeFiled
		return c

	default: // delay notices
		if r.Outcome != store.OutcomeNone {
			return suppress("the sender has the final outcome")
		}
		c.Notice = NoticeFiled
		return c
	}
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// seen reports whether the recipient's history has an event of the kind.
func seen(r store.TrackedRecipient, kind string) bool {
	for _, e := range r.Events {
		if e.Kind == kind {
			return true
		}
	}
	return false
}
