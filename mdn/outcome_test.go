package mdn

import (
	"testing"
	"time"

	"github.com/hisp-project/hisp/store"
)

// TestMachine walks the one-final-outcome state machine (DN-07) through its
// transitions, one recipient at a time.
func TestMachine(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	sent := now.Add(-2 * time.Hour)
	requested := store.TrackedMessage{DispatchedRequested: true, Sent: sent}
	plain := store.TrackedMessage{Sent: sent}
	queued := store.TrackedRecipient{State: store.TrackQueued}
	relayed := store.TrackedRecipient{State: store.TrackRelayed, Relayed: sent}
	processed := store.TrackedRecipient{State: store.TrackProcessed, Relayed: sent,
		Events: []store.TrackEvent{{Kind: KindProcessed, At: sent}}}
	dispatched := store.TrackedRecipient{State: store.TrackDispatched, Outcome: store.OutcomeSuccess, OutcomeBy: "mdn"}
	failed := store.TrackedRecipient{State: store.TrackFailed, Outcome: store.OutcomeFailure, OutcomeBy: "timeout"}
	queueFailed := store.TrackedRecipient{State: store.TrackFailed, Outcome: store.OutcomeFailure, OutcomeBy: "queue"}
	overdue := store.TrackedRecipient{State: store.TrackQueued, Deadline: now.Add(-time.Minute),
		ProcessedDeadline: sent.Add(time.Hour)}
	overdueProcessed := store.TrackedRecipient{State: store.TrackProcessed, Relayed: sent, Deadline: now.Add(-time.Minute),
		DispatchedDeadline: sent.Add(90 * time.Minute)}
	notYet := store.TrackedRecipient{State: store.TrackQueued, Deadline: now.Add(time.Minute)}

	mdnIn := func(kind string) Input {
		return Input{Kind: kind, By: "mdn", Detail: "MDN from bob", FinalDestination: true, Now: now}
	}
	for _, c := range []struct {
		name     string
		withhold bool
		m        store.TrackedMessage
		r        store.TrackedRecipient
		in       Input
		// want: the state, the outcome and the notice, or skip
		skip    bool
		state   store.TrackState
		outcome store.Outcome
		notice  string
	}{
		{name: "relayed", m: plain, r: queued, in: Input{Kind: KindRelayed}, state: store.TrackRelayed},
		{name: "relayed twice", m: plain, r: relayed, in: Input{Kind: KindRelayed}, skip: true},
		{name: "processed, the news", m: plain, r: relayed, in: mdnIn(KindProcessed),
			state: store.TrackProcessed, outcome: store.OutcomeSuccess, notice: NoticeFiled},
		{name: "processed before dispatched", m: requested, r: relayed, in: mdnIn(KindProcessed),
			state: store.TrackProcessed, notice: NoticeFiled},
		{name: "processed withheld (DN-09)", withhold: true, m: requested, r: relayed, in: mdnIn(KindProcessed),
			state: store.TrackProcessed, notice: NoticeWithheld},
		{name: "processed twice", m: requested, r: processed, in: mdnIn(KindProcessed), notice: NoticeSuppressed},
		{name: "processed after a failure", m: plain, r: failed, in: mdnIn(KindProcessed), notice: NoticeSuppressed},
		{name: "processed overtaken by dispatched", m: requested, r: dispatched, in: mdnIn(KindProcessed), notice: NoticeFiled},
		{name: "processed overtaken, not asked for", m: plain, r: dispatched, in: mdnIn(KindProcessed), notice: NoticeSuppressed},
		{name: "dispatched", m: requested, r: processed, in: mdnIn(KindDispatched),
			state: store.TrackDispatched, outcome: store.OutcomeSuccess, notice: NoticeFiled},
		{name: "dispatched not asked for", m: plain, r: store.TrackedRecipient{State: store.TrackProcessed, Outcome: store.OutcomeSuccess},
			in: mdnIn(KindDispatched), state: store.TrackDispatched, notice: NoticeSuppressed},
		{name: "dispatched twice", m: requested, r: dispatched, in: mdnIn(KindDispatched), notice: NoticeSuppressed},
		{name: "dispatched after timeout", m: requested, r: failed, in: mdnIn(KindDispatched), notice: NoticeSuppressed},
		{name: "failed MDN after processed (DN-04)", m: requested, r: processed, in: mdnIn(KindFailed),
			state: store.TrackFailed, outcome: store.OutcomeFailure, notice: NoticeFiled},
		{name: "failed after dispatched", m: requested, r: dispatched, in: mdnIn(KindFailed), notice: NoticeSuppressed},
		{name: "failed twice", m: requested, r: failed, in: mdnIn(KindFailed), notice: NoticeSuppressed},
		{name: "timeout, no processed (DN-06)", m: plain, r: overdue, in: Input{Kind: KindTimeout, By: "timeout", Now: now},
			state: store.TrackFailed, outcome: store.OutcomeFailure, notice: NoticeDSN},
		{name: "timeout, no dispatched", m: requested, r: overdueProcessed, in: Input{Kind: KindTimeout, By: "timeout", Now: now},
			state: store.TrackFailed, outcome: store.OutcomeFailure, notice: NoticeDSN},
		{name: "timeout not yet due", m: plain, r: notYet, in: Input{Kind: KindTimeout, Now: now}, skip: true},
		{name: "timeout after the outcome", m: plain, r: dispatched, in: Input{Kind: KindTimeout, Now: now}, skip: true},
		{name: "queue gave up", m: plain, r: relayed, in: Input{Kind: KindQueueFailed, By: "queue", Detail: "550 5.1.1"},
			state: store.TrackFailed, outcome: store.OutcomeFailure, notice: NoticeFiled},
		{name: "queue DSN tried again", m: plain, r: queueFailed, in: Input{Kind: KindQueueFailed, By: "queue"}, skip: true, notice: NoticeFiled},
		{name: "queue gave up after timeout", m: plain, r: failed, in: Input{Kind: KindQueueFailed, By: "queue"}, notice: NoticeSuppressed},
		{name: "delay before the outcome", m: plain, r: relayed, in: Input{Kind: KindDelayed, By: "dsn"}, notice: NoticeFiled},
		{name: "delay after the outcome", m: plain, r: dispatched, in: Input{Kind: KindDelayed, By: "dsn"}, notice: NoticeSuppressed},
		{name: "displayed (MDN-06)", m: plain, r: dispatched, in: mdnIn(KindInformation), notice: NoticeFiled},
	} {
		got := Machine{WithholdProcessed: c.withhold}.Decide(c.m, c.r, c.in)
		if got.Skip != c.skip || got.State != c.state || got.Outcome != c.outcome || got.Notice != c.notice {
			t.Errorf("%s: %+v", c.name, got)
		}
		if c.outcome == store.OutcomeFailure && got.Reason == "" {
			t.Errorf("%s: a failure without a reason", c.name)
		}
	}
}
