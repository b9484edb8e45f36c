package store

import (
	"bytes"
	"context"
	"testing"
)

// TestQueueEnqueueMore: the copies of one submission sealed per partner
// profile are committed with the first, each with its own data and
// recipients; a bad copy queues none of them.
func TestQueueEnqueueMore(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
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
