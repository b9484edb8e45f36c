package store

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestQueueEnqueueMore: the copies of one submission sealed per partner
// profile are committed with the first, each with its own data and
// recipients; a bad copy queues none of them.
func TestQueueEnqueueMore(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	q := NewQueue(s, QueueOptions{})
	defer q.Close()

	first, second := testMessage(1, "bob@b.example"), testMessage(1, "carol@c.example")
	second.Data = []byte("Subject: other copy\r\n\r\nsealed for c.example\r\n")
	res, err := q.EnqueueWith(ctx, first, EnqueueExtras{More: []QueuedMessage{second}})
	tcheck(t, err, "enqueue")
	if len(res.MoreIDs) != 1 || res.MoreIDs[0] == res.ID {
		t.Fatalf("ids %d and %v", res.ID, res.MoreIDs)
	}
	for id, want := range map[int64]string{res.ID: "bob@b.example", res.MoreIDs[0]: "carol@c.example"} {
		m := queuedByID(t, s, id)
		if len(m.Recipients) != 1 || m.Recipients[0].Address != want || m.MessageID != "<m1@a.example>" {
			t.Errorf("message %d: %+v", id, m.Recipients)
		}
		data, err := s.QueueMessageData(ctx, id)
		tcheck(t, err, "data")
		if (want == "carol@c.example") != bytes.Contains(data, []byte("c.example")) {
			t.Errorf("message %d for %s holds %q", id, want, data)
		}
	}

	bad := testMessage(2, "dan@d.example")
	bad.Data = nil
	if _, err := q.EnqueueWith(ctx, testMessage(2, "bob@b.example"), EnqueueExtras{More: []QueuedMessage{bad}}); err == nil {
		t.Fatal("an empty copy was taken")
	}
	list, err := s.QueueList(ctx, true)
	tcheck(t, err, "list")
	if len(list) != 2 {
		t.Errorf("%d queued messages after a refused submission, want the 2 before", len(list))
	}
}

// TestQueueListings: QueueList and QueueHead read messages with all their
// recipients, oldest first, in one query each; QueueHead counts every
// message with work left, not only the page.
func TestQueueListings(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	var ids []int64
	for i := range 4 {
		id, err := s.Enqueue(ctx, testMessage(i, "bob@b.example", "carol@c.example", "dave@d.example"))
		tcheck(t, err, "enqueue")
		ids = append(ids, id)
	}
	// The first message is done with: delivered to all.
	claimed, err := s.ClaimDue(ctx, time.Now(), 1, DefaultBackoff())
	tcheck(t, err, "claim")
	var ups []RecipientUpdate
	for _, r := range claimed[0].Recipients {
		ups = append(ups, RecipientUpdate{ID: r.ID, State: StateDelivered, Code: 250})
	}
	tcheck(t, s.UpdateRecipients(ctx, time.Now(), ups), "update")

	check := func(name string, got []QueuedMessage, want []int64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %d", name, len(got), len(want))
		}
		for i, m := range got {
			if m.ID != want[i] || len(m.Recipients) != 3 || m.Recipients[0].Address != "bob@b.example" ||
				m.Recipients[2].Address != "dave@d.example" || m.Created.IsZero() || m.MessageID == "" {
				t.Errorf("%s: message %d: %+v", name, i, m)
			}
		}
	}
	all, err := s.QueueList(ctx, true)
	tcheck(t, err, "list all")
	check("all", all, ids)
	pending, err := s.QueueList(ctx, false)
	tcheck(t, err, "list pending")
	check("pending", pending, ids[1:])
	head, total, err := s.QueueHead(ctx, 2)
	tcheck(t, err, "head")
	check("head", head, ids[1:3])
	if total != 3 {
		t.Errorf("head total %d, want 3", total)
	}
	if head, total, err := s.QueueHead(ctx, 0); err != nil || len(head) != 0 || total != 3 {
		t.Errorf("head of 0: %d messages, total %d, %v", len(head), total, err)
	}
}

// TestQueueEnqueueClaimed: with Claim, the sealed copies are queued
// claimed for their first attempt (delivering, one attempt counted, the
// retry on record) and returned with their data for the deliverer; the
// plain copy of deferred recipients is not claimed. ClaimDue does not take
// them again, and after a crash RecoverQueue makes them due like any
// claimed recipient.
func TestQueueEnqueueClaimed(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	q := NewQueue(s, QueueOptions{})
	defer q.Close()

	plain := testMessage(1, "dan@d.example")
	plain.Plain = true
	plain.Recipients[0].NextAttempt = time.Now().Add(time.Hour)
	b := Backoff{First: time.Hour, Attempts: 3}
	before := time.Now()
	res, err := q.EnqueueWith(ctx, testMessage(1, "bob@b.example", "carol@a.example"),
		EnqueueExtras{More: []QueuedMessage{plain}, Claim: &b})
	tcheck(t, err, "enqueue")
	if len(res.Claimed) != 1 || res.Claimed[0].ID != res.ID || string(res.Claimed[0].Data) != string(testMessage(1).Data) ||
		len(res.Claimed[0].Recipients) != 2 || res.Claimed[0].Recipients[0].ID == 0 {
		t.Fatalf("claimed: %+v", res.Claimed)
	}
	m := queuedByID(t, s, res.ID)
	for _, r := range m.Recipients {
		if r.State != StateDelivering || r.Attempts != 1 || r.LastAttempt.Before(before.Truncate(time.Millisecond)) ||
			r.NextAttempt.Sub(r.LastAttempt) != time.Hour {
			t.Errorf("claimed recipient %+v", r)
		}
	}
	if p := queuedByID(t, s, res.MoreIDs[0]); p.Recipients[0].State != StateDeferred {
		t.Errorf("plain copy: %+v", p.Recipients[0])
	}
	due, err := s.ClaimDue(ctx, time.Now().Add(time.Minute), 10, b)
	tcheck(t, err, "claim")
	if len(due) != 0 {
		t.Errorf("claimed again: %+v", due)
	}
	n, err := s.RecoverQueue(ctx, time.Now(), true)
	tcheck(t, err, "recover")
	if n != 2 {
		t.Errorf("recovered %d recipients, want 2", n)
	}
	due, err = s.ClaimDue(ctx, time.Now().Add(time.Minute), 10, b)
	tcheck(t, err, "claim")
	if len(due) != 1 || due[0].ID != res.ID || due[0].Recipients[0].Attempts != 2 {
		t.Errorf("after recovery: %+v", due)
	}
}

// TestQueueAnnounced: while messages are announced the writer waits for
// them (up to CommitDelay), so that announced messages handed over one
// after the other share a commit; an announcement that ends without a
// message (Done) releases the wait.
func TestQueueAnnounced(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	q := NewQueue(s, QueueOptions{CommitDelay: time.Hour})
	defer q.Close()

	const n = 4
	anns := make([]*Announcement, n)
	for i := range anns {
		anns[i] = q.Announce()
	}
	gone := q.Announce() // a submission that will be refused
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := q.EnqueueWith(ctx, testMessage(i, "bob@b.example"), EnqueueExtras{Announced: anns[i]})
			errs <- err
		}()
	}
	// The writer waits for the announced message that never comes...
	waitUntil(t, "the messages handed over", func() bool { return q.announced.Load() == 1 })
	if st := q.Stats(); st.Commits != 0 {
		t.Fatalf("committed while a message was announced: %+v", st)
	}
	// ... until its announcement ends.
	gone.Done()
	gone.Done() // harmless
	for range n {
		tcheck(t, <-errs, "enqueue")
	}
	if st := q.Stats(); st.Messages != n || st.Commits != 1 {
		t.Errorf("%d messages in %d commits, want %d in 1", st.Messages, st.Commits, n)
	}
	// Nothing announced: no wait.
	_, err = q.Enqueue(ctx, testMessage(9, "bob@b.example"))
	tcheck(t, err, "enqueue")
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
