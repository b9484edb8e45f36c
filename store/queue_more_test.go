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
