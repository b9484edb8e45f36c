package mdn

import (
	"fmt"
	"time"

	"github.com/hisp-project/hisp/store"
)

// The sending side of delivery notification: the tracker's state machine,
// which gives each recipient of a sent message exactly one final outcome
// (DN-07) and decides which notice reaches the sender.
//
// A recipient's states (store.TrackState) go
//
//	queued ──relayed──▶ relayed ──processed MDN──▶ processed ──dispatched MDN──▶ dispatched (success)
//	   │                   │                          │
//	   └──────────── failed MDN, failure DSN, queue failure, timeout ──────────▶ failed (failure)
//
// and the outcome (store.Outcome*) is set once: success by the processed
// MDN when no dispatched one was asked for, else by the dispatched MDN;
// failure by a failed MDN or DSN, the queue giving up, or a deadline
// passing with no MDN (DN-06, then hisp's own failure DSN). Whatever comes
// after the outcome is recorded and suppressed, never filed, except a
// processed MDN that was overtaken by its dispatched one (notices travel on
// separate connections).

// The kinds of input the state machine takes, also the kinds of the events
// it records.
const (
	KindRelayed      = "relayed"    // the queue delivered to the next hop
	KindProcessed    = "processed"  // processed MDN
	KindDispatched   = "dispatched" // dispatched MDN
	KindFailed       = "failed"     // failed (denied, error) MDN or failure DSN
	KindTimeout      = "timeout"    // a deadline passed
	KindQueueFailed  = "bounced"    // the queue failed the recipient for good
	KindQueueDelayed = "delayed"    // the queue is still retrying (its delay DSN)
	KindDelayed      = "delayed"    // a remote delay DSN
	KindInformation  = "notice"     // any other notice: displayed, deleted, delivered DSN...
)

// What became of a notice, as recorded in the event (store.TrackEvent.Notice).
const (
	NoticeFiled      = "filed"      // filed in the sender's mailbox
	NoticeWithheld   = "withheld"   // a processed MDN kept back (DN-09)
	NoticeSuppressed = "suppressed" // a duplicate, or news after the final outcome
	NoticeDSN        = "dsn"        // hisp's own failure DSN is due
)

// Input is one thing that happened to one recipient.
type Input struct {
	Kind             string // Kind*
	By               string // "mdn", "dsn", "queue", "timeout"
	Detail           string
	FinalDestination bool // a dispatched MDN with X-DIRECT-FINAL-DESTINATION-DELIVERY
	Now              time.Time
}

// Machine is the state machine with its one setting.
type Machine struct {
	// WithholdProcessed keeps a processed MDN from the sender when a
	// dispatched one was asked for (DN-09).
	WithholdProcessed bool
}

// step is one recipient of one message taking one input.
type step struct {
	m  store.TrackedMessage
	r  store.TrackedRecipient
	in Input
	c  store.TrackChange
	mc Machine
}

// transitions are what each kind of input does.
var transitions = map[string]func(*step) store.TrackChange{
	KindRelayed:     (*step).relayed,
	KindProcessed:   (*step).processed,
	KindDispatched:  (*step).dispatched,
	KindFailed:      (*step).failed,
	KindTimeout:     (*step).timeout,
	KindQueueFailed: (*step).queueFailed,
	KindInformation: (*step).information,
	KindDelayed:     (*step).delayed, // a remote delay DSN, or the queue's
}

// Decide is what an input does to a recipient of a message, and what
// reaches the sender. It runs inside the store's transaction and must not
// block.
func (mc Machine) Decide(m store.TrackedMessage, r store.TrackedRecipient, in Input) store.TrackChange {
	s := &step{m: m, r: r, in: in, c: store.TrackChange{Kind: in.Kind, Detail: in.Detail}, mc: mc}
	t, ok := transitions[in.Kind]
	if !ok {
		t = (*step).delayed
	}
	return t(s)
}

// The states and outcomes a transition asks about.
func (s *step) hasFailure() bool   { return s.r.Outcome == store.OutcomeFailure }
func (s *step) hasSuccess() bool   { return s.r.Outcome == store.OutcomeSuccess }
func (s *step) hasOutcome() bool   { return s.r.Outcome != store.OutcomeNone }
func (s *step) isDispatched() bool { return s.r.State == store.TrackDispatched }

// skip changes nothing and records nothing.
func skip() store.TrackChange { return store.TrackChange{Skip: true} }

// suppress records the input and keeps its notice from the sender.
func (s *step) suppress(why string) store.TrackChange {
	s.c.Notice = NoticeSuppressed
	s.c.Detail = joinDetail(s.in.Detail, why)
	return s.c
}

// succeed sets the final outcome success, in state, and files the notice.
func (s *step) succeed(state store.TrackState) store.TrackChange {
	s.c.State, s.c.Outcome, s.c.OutcomeBy, s.c.Notice = state, store.OutcomeSuccess, s.in.By, NoticeFiled
	return s.c
}

// fail sets the final outcome failure, by whom and why.
func (s *step) fail(by, reason, notice string) store.TrackChange {
	s.c.State, s.c.Outcome, s.c.OutcomeBy, s.c.Reason, s.c.Notice = store.TrackFailed, store.OutcomeFailure, by, reason, notice
	return s.c
}

// processedNotice is what becomes of a processed MDN that is not the news:
// withheld when configured (DN-09), else filed.
func (s *step) processedNotice() string {
	if s.mc.WithholdProcessed {
		return NoticeWithheld
	}
	return NoticeFiled
}

// relayed: queued → relayed, once.
func (s *step) relayed() store.TrackChange {
	if !s.r.Relayed.IsZero() {
		return skip()
	}
	s.c.Relayed = true
	if s.r.State == store.TrackQueued {
		s.c.State = store.TrackRelayed
	}
	return s.c
}

// processed: → processed; the outcome success when no dispatched MDN was
// asked for.
func (s *step) processed() store.TrackChange {
	switch {
	case s.hasFailure():
		return s.suppress("late: the sender was told of a failure")
	case seen(s.r, KindProcessed):
		return s.suppress("duplicate")
	case s.isDispatched():
		// Notices overtake each other (two queue entries, two
		// connections): the dispatched MDN came first and decided the
		// outcome. The processed one changes nothing; the sender sees it
		// as it would have in order, unless the dispatched MDN was the
		// only news due.
		if !s.m.DispatchedRequested {
			return s.suppress("after the dispatched MDN, which was the news")
		}
		s.c.Notice = s.processedNotice()
		s.c.Detail = joinDetail(s.in.Detail, "after the dispatched MDN")
		return s.c
	case !s.m.DispatchedRequested:
		return s.succeed(store.TrackProcessed)
	}
	s.c.State, s.c.Notice = store.TrackProcessed, s.processedNotice()
	return s.c
}

// dispatched: → dispatched, the outcome success (DN-03, DN-07).
func (s *step) dispatched() store.TrackChange {
	if s.m.DispatchedRequested && !s.in.FinalDestination {
		s.c.Detail = joinDetail(s.in.Detail, "without the X-DIRECT-FINAL-DESTINATION-DELIVERY field")
	}
	switch {
	case s.hasFailure():
		return s.suppress("late: the sender was told of a failure")
	case s.isDispatched():
		return s.suppress("duplicate")
	case s.hasSuccess():
		// Not requested: the processed MDN was the news.
		s.c.State, s.c.Notice = store.TrackDispatched, NoticeSuppressed
		return s.c
	}
	return s.succeed(store.TrackDispatched)
}

// failed: a failed MDN or failure DSN → failed, unless dispatched came
// first (DN-04, DN-07).
func (s *step) failed() store.TrackChange {
	switch {
	case s.hasFailure():
		return s.suppress("duplicate")
	case s.isDispatched():
		return s.suppress("after the dispatched MDN")
	}
	reason := s.in.Detail
	if reason == "" {
		reason = "failure notice from the recipient's HISP"
	}
	return s.fail(s.in.By, reason, NoticeFiled)
}

// timeout: a deadline passed with no outcome → failed, and hisp's own
// failure DSN is due (DN-06, DN-08).
func (s *step) timeout() store.TrackChange {
	r := s.r
	if s.hasOutcome() || r.Deadline.IsZero() || r.Deadline.After(s.in.Now) {
		return skip()
	}
	sent := s.m.Sent // the recipient's own, when it joined the tracking later
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
	s.c.Detail, s.c.NoticePending = reason, true
	return s.fail("timeout", reason, NoticeDSN)
}

// queueFailed: the queue gave up → failed, its DSN filed.
func (s *step) queueFailed() store.TrackChange {
	switch {
	case !s.hasOutcome():
		return s.fail("queue", s.in.Detail, NoticeFiled)
	case s.hasFailure() && s.r.OutcomeBy == "queue":
		// The queue's DSN is being tried again: it still names the
		// recipient, without a second event.
		return store.TrackChange{Skip: true, Notice: NoticeFiled}
	}
	return s.suppress("the sender has the final outcome")
}

// information: displayed, deleted, a delivered DSN: not a delivery
// outcome, and an edge's own MDNs are relayed like any message (MDN-06).
func (s *step) information() store.TrackChange {
	s.c.Notice = NoticeFiled
	return s.c
}

// delayed: a delay notice is news only before the outcome.
func (s *step) delayed() store.TrackChange {
	if s.hasOutcome() {
		return s.suppress("the sender has the final outcome")
	}
	s.c.Notice = NoticeFiled
	return s.c
}

func joinDetail(a, b string) string {
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
