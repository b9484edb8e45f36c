package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func testMessage(i int, rcpts ...string) QueuedMessage {
	m := QueuedMessage{
		MessageID: fmt.Sprintf("<m%d@a.example>", i),
		MailFrom:  "alice@a.example",
		User:      "alice@a.example",
		Origin:    "test",
		Data:      []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)),
	}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, QueuedRecipient{Address: r, Local: r[len(r)-len("a.example"):] == "a.example"})
	}
	return m
}

func recipientByAddress(t *testing.T, m QueuedMessage, addr string) QueuedRecipient {
	t.Helper()
	for _, r := range m.Recipients {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("message %d has no recipient %s: %+v", m.ID, addr, m.Recipients)
	return QueuedRecipient{}
}

func queuedByID(t *testing.T, s *Store, id int64) QueuedMessage {
	t.Helper()
	m, err := s.QueueMessage(context.Background(), id)
	tcheck(t, err, "read queued message")
	return m
}

func TestQueueEnqueueDurable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := testOpen(t, dir)
	tcheck(t, err, "open")
	q := NewQueue(s, QueueOptions{})
	m := testMessage(1, "bob@B.Example", "carol@a.example", "BOB@b.example")
	id, err := q.Enqueue(ctx, m)
	tcheck(t, err, "enqueue")
	if id <= 0 {
		t.Fatalf("id %d", id)
	}
	// No work with the live handles after Enqueue returns: what is on disk
	// is what a crash right now would leave.
	tcheck(t, q.Close(), "close queue")
	tcheck(t, s.Close(), "close store")
	if _, err := q.Enqueue(ctx, m); !errors.Is(err, ErrQueueClosed) {
		t.Fatalf("enqueue after close: %v", err)
	}

	s = openTest(t, dir)
	got := queuedByID(t, s, id)
	if got.MessageID != m.MessageID || got.MailFrom != m.MailFrom || got.User != m.User || got.Origin != "test" ||
		!bytes.Equal(got.Data, m.Data) || got.Size != int64(len(m.Data)) || got.Created.IsZero() {
		t.Fatalf("reopened message differs: %+v", got)
	}
	if len(got.Recipients) != 2 {
		t.Fatalf("want 2 recipients (duplicate folded), got %+v", got.Recipients)
	}
	bob := recipientByAddress(t, got, "bob@b.example")
	carol := recipientByAddress(t, got, "carol@a.example")
	if bob.Local || !carol.Local || bob.Domain != "b.example" || bob.State != StateQueued || bob.Attempts != 0 {
		t.Fatalf("recipients: %+v", got.Recipients)
	}
	list, err := s.QueueList(ctx, false)
	tcheck(t, err, "list")
	if len(list) != 1 || list[0].ID != id || list[0].Data != nil {
		t.Fatalf("list: %+v", list)
	}
}

func TestQueueEnqueueRefuses(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	q := NewQueue(s, QueueOptions{})
	defer q.Close()
	for name, m := range map[string]QueuedMessage{
		"empty":         {MailFrom: "a@a.example", Recipients: []QueuedRecipient{{Address: "b@b.example"}}},
		"no recipients": {MailFrom: "a@a.example", Data: []byte("x")},
		"bad recipient": {MailFrom: "a@a.example", Data: []byte("x"), Recipients: []QueuedRecipient{{Address: "b"}}},
		"bad domain":    {MailFrom: "a@a.example", Data: []byte("x"), Recipients: []QueuedRecipient{{Address: "b@exa mple"}}},
		"non-ascii":     {MailFrom: "a@a.example", Data: []byte("x"), Recipients: []QueuedRecipient{{Address: "bé@b.example"}}},
		"header inject": {MailFrom: "a@a.example", MessageID: "<x>\r\nBcc: y", Data: []byte("x"), Recipients: []QueuedRecipient{{Address: "b@b.example"}}},
	} {
		if _, err := q.Enqueue(ctx, m); err == nil {
			t.Errorf("%s: enqueued", name)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := q.Enqueue(cctx, testMessage(1, "b@b.example")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	list, err := s.QueueList(ctx, true)
	tcheck(t, err, "list")
	if len(list) != 0 {
		t.Fatalf("queued: %+v", list)
	}
	// The null reverse path is fine (DSNs).
	m := testMessage(2, "b@b.example")
	m.MailFrom = ""
	if _, err := s.Enqueue(ctx, m); err != nil {
		t.Fatalf("null sender: %v", err)
	}
}

// TestQueueGroupCommit holds the database's write lock while 50 goroutines
// call Enqueue, so that they queue up behind the writer; then all must be
// committed, in fewer transactions than calls.
func TestQueueGroupCommit(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	q := NewQueue(s, QueueOptions{})
	defer q.Close()

	lock, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	tcheck(t, err, "begin blocking transaction")

	const n = 50
	var wg sync.WaitGroup
	ids := make([]int64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = q.Enqueue(ctx, testMessage(i, fmt.Sprintf("r%d@b.example", i)))
		}()
	}
	// Wait until most requests wait in the writer's channel (the first
	// batch is blocked on the lock), then let the writer go: at the latest
	// well before the blocked batch's busy timeout (10 s) on a slow machine.
	deadline := time.Now().Add(5 * time.Second)
	for len(q.reqs) < n-10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	tcheck(t, lock.Rollback(), "release lock")
	wg.Wait()

	seen := map[int64]bool{}
	for i := range n {
		tcheck(t, errs[i], "enqueue")
		if seen[ids[i]] {
			t.Fatalf("id %d twice", ids[i])
		}
		seen[ids[i]] = true
	}
	st := q.Stats()
	t.Logf("%d messages in %d commits", st.Messages, st.Commits)
	if testPostgres() {
		// A transaction per submission (BEGIN took no lock either).
		if st.Messages != n || st.Commits != n || st.Failed != 0 {
			t.Fatalf("stats %+v: want %d messages in as many commits", st, n)
		}
	} else if st.Messages != n || st.Commits >= n || st.Commits < 1 || st.Failed != 0 {
		t.Fatalf("stats %+v: want %d messages in fewer commits", st, n)
	}
	list, err := s.QueueList(ctx, false)
	tcheck(t, err, "list")
	if len(list) != n {
		t.Fatalf("%d messages listed, want %d", len(list), n)
	}
}

func TestQueueGroupCommitUnblocked(t *testing.T) {
	// Without the lock trick: concurrent callers, all committed.
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	q := NewQueue(s, QueueOptions{MaxBatch: 8})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := q.Enqueue(ctx, testMessage(i, "x@b.example")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	tcheck(t, q.Close(), "close")
	st := q.Stats()
	t.Logf("%d messages in %d commits", st.Messages, st.Commits)
	if st.Messages != 40 || st.Commits > 40 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{First: 10 * time.Minute, Max: 40 * time.Minute, Attempts: 3}
	for attempt, want := range map[int]time.Duration{1: 10 * time.Minute, 2: 20 * time.Minute, 3: 40 * time.Minute, 4: 40 * time.Minute, 60: 40 * time.Minute} {
		if got := b.Delay(attempt); got != want {
			t.Errorf("delay after attempt %d: %v, want %v", attempt, got, want)
		}
	}
	d := DefaultBackoff()
	if d.MaxAttempts() != 9 {
		t.Errorf("default attempts %d", d.MaxAttempts())
	}
	for attempt, want := range map[int]time.Duration{1: 450 * time.Second, 2: 15 * time.Minute, 8: 16 * time.Hour, 9: 16 * time.Hour} {
		got := d.Delay(attempt)
		if got < want*9/10 || got > want*11/10 {
			t.Errorf("default delay after attempt %d: %v, want %v ±10%%", attempt, got, want)
		}
	}
	if (Backoff{}).Delay(1) != 450*time.Second {
		t.Errorf("zero backoff: %v", (Backoff{}).Delay(1))
	}
}

func TestQueueClaimAndOutcomes(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	b := Backoff{First: 10 * time.Minute, Max: 40 * time.Minute, Attempts: 3}
	t0 := time.Now().Truncate(time.Millisecond)

	id, err := s.Enqueue(ctx, testMessage(1, "ok@b.example", "temp@b.example", "perm@c.example"))
	tcheck(t, err, "enqueue")
	id2, err := s.Enqueue(ctx, testMessage(2, "later@b.example"))
	tcheck(t, err, "enqueue")

	claimed, err := s.ClaimDue(ctx, t0.Add(time.Second), 1, b)
	tcheck(t, err, "claim")
	if len(claimed) != 1 || claimed[0].ID != id || len(claimed[0].Recipients) != 3 || claimed[0].Data != nil {
		t.Fatalf("claim with limit 1: %+v", claimed)
	}
	for _, r := range claimed[0].Recipients {
		if r.State != StateDelivering || r.Attempts != 1 || !r.NextAttempt.Equal(t0.Add(time.Second+10*time.Minute)) {
			t.Fatalf("claimed recipient: %+v", r)
		}
	}
	// What was claimed is on record before anything is dialed.
	onDisk := queuedByID(t, s, id)
	for _, r := range onDisk.Recipients {
		if r.State != StateDelivering || r.Attempts != 1 || !r.NextAttempt.Equal(t0.Add(time.Second+10*time.Minute)) {
			t.Fatalf("recipient on disk after claim: %+v", r)
		}
	}
	data, err := s.QueueMessageData(ctx, id)
	tcheck(t, err, "data")
	if !bytes.Equal(data, testMessage(1).Data) {
		t.Fatalf("data %q", data)
	}
	// The second message, then nothing: claimed recipients are not due.
	claimed2, err := s.ClaimDue(ctx, t0.Add(time.Second), 10, b)
	tcheck(t, err, "claim")
	if len(claimed2) != 1 || claimed2[0].ID != id2 {
		t.Fatalf("second claim: %+v", claimed2)
	}
	if c, _ := s.ClaimDue(ctx, t0.Add(time.Second), 10, b); len(c) != 0 {
		t.Fatalf("claimed twice: %+v", c)
	}

	m := claimed[0]
	ok, temp, perm := recipientByAddress(t, m, "ok@b.example"), recipientByAddress(t, m, "temp@b.example"), recipientByAddress(t, m, "perm@c.example")
	tcheck(t, s.UpdateRecipients(ctx, t0.Add(2*time.Second), []RecipientUpdate{
		{ID: ok.ID, State: StateDelivered, Code: 250, Enhanced: "2.0.0", Text: "queued as X", RemoteMTA: "mx.b.example"},
		{ID: temp.ID, State: StateQueued, Code: 451, Enhanced: "4.3.0", Text: "try later", RemoteMTA: "mx.b.example"},
		{ID: perm.ID, State: StateFailed, Code: 550, Enhanced: "5.1.1", Text: "no such\r\nuser", RemoteMTA: "mx.c.example"},
	}), "update")
	got := queuedByID(t, s, id)
	if r := recipientByAddress(t, got, "ok@b.example"); r.State != StateDelivered || r.Status != "250 2.0.0 queued as X" || r.RemoteMTA != "mx.b.example" {
		t.Fatalf("delivered: %+v", r)
	}
	if r := recipientByAddress(t, got, "temp@b.example"); r.State != StateQueued || r.LastCode != 451 || r.LastError != "try later" ||
		!r.NextAttempt.Equal(t0.Add(time.Second+10*time.Minute)) {
		t.Fatalf("temporary: %+v", r)
	}
	if r := recipientByAddress(t, got, "perm@c.example"); r.State != StateFailed || r.Status != "550 5.1.1 no such user" {
		t.Fatalf("failed: %+v", r)
	}

	// The failure DSN is due for perm, once.
	failed, err := s.QueueFailed(ctx, 10)
	tcheck(t, err, "failed")
	if len(failed) != 1 || failed[0].ID != id || len(failed[0].Recipients) != 1 || failed[0].Recipients[0].ID != perm.ID ||
		!bytes.Equal(failed[0].Data, testMessage(1).Data) {
		t.Fatalf("failed: %+v", failed)
	}
	tcheck(t, s.UpdateRecipients(ctx, t0, []RecipientUpdate{{ID: perm.ID, State: StateBounced}}), "bounce")
	if failed, _ := s.QueueFailed(ctx, 10); len(failed) != 0 {
		t.Fatalf("failed after bounce: %+v", failed)
	}

	// Temp is not due before its time, then is, with the doubled delay.
	if c, _ := s.ClaimDue(ctx, t0.Add(5*time.Minute), 10, b); len(c) != 0 {
		t.Fatalf("claimed early: %+v", c)
	}
	c, err := s.ClaimDue(ctx, t0.Add(11*time.Minute), 10, b)
	tcheck(t, err, "claim retry")
	if len(c) != 1 || len(c[0].Recipients) != 1 || c[0].Recipients[0].ID != temp.ID || c[0].Recipients[0].Attempts != 2 ||
		!c[0].Recipients[0].NextAttempt.Equal(t0.Add(31*time.Minute)) {
		t.Fatalf("retry claim: %+v", c)
	}
	// An update that does not follow the state is skipped.
	tcheck(t, s.UpdateRecipients(ctx, t0, []RecipientUpdate{{ID: ok.ID, State: StateQueued}, {ID: temp.ID, State: StateBounced}}), "stray updates")
	got = queuedByID(t, s, id)
	if recipientByAddress(t, got, "ok@b.example").State != StateDelivered || recipientByAddress(t, got, "temp@b.example").State != StateDelivering {
		t.Fatalf("stray updates applied: %+v", got.Recipients)
	}
	// Delivered at last: every recipient final, the data goes, the record
	// stays.
	tcheck(t, s.UpdateRecipients(ctx, t0, []RecipientUpdate{{ID: temp.ID, State: StateDelivered, Code: 250}}), "deliver")
	got = queuedByID(t, s, id)
	if len(got.Data) != 0 || got.Size == 0 {
		t.Fatalf("final message keeps %d bytes (size %d)", len(got.Data), got.Size)
	}
	list, err := s.QueueList(ctx, false)
	tcheck(t, err, "list")
	if len(list) != 1 || list[0].ID != id2 {
		t.Fatalf("pending list: %+v", list)
	}
	all, err := s.QueueList(ctx, true)
	tcheck(t, err, "list all")
	if len(all) != 2 {
		t.Fatalf("full list: %+v", all)
	}
	n, err := s.PurgeQueue(ctx, time.Now().Add(time.Hour))
	tcheck(t, err, "purge")
	if n != 1 {
		t.Fatalf("purged %d", n)
	}
	if _, err := s.QueueMessage(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purged message: %v", err)
	}
}

func TestQueueRetryDrop(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	b := Backoff{First: time.Hour, Attempts: 5}
	now := time.Now().Add(time.Second) // after Enqueue stamps its rows, whatever the clock resolution
	id, err := s.Enqueue(ctx, testMessage(1, "x@b.example"))
	tcheck(t, err, "enqueue")
	c, err := s.ClaimDue(ctx, now, 10, b)
	tcheck(t, err, "claim")
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: c[0].Recipients[0].ID, State: StateQueued, Code: 421, Text: "busy"}}), "temp")
	if c, _ := s.ClaimDue(ctx, now.Add(time.Minute), 10, b); len(c) != 0 {
		t.Fatalf("due before retry: %+v", c)
	}
	n, err := s.QueueRetry(ctx, id, now.Add(time.Minute))
	tcheck(t, err, "retry")
	if n != 1 {
		t.Fatalf("retried %d", n)
	}
	c, err = s.ClaimDue(ctx, now.Add(time.Minute), 10, b)
	tcheck(t, err, "claim after retry")
	if len(c) != 1 || c[0].Recipients[0].Attempts != 2 {
		t.Fatalf("claim after retry: %+v", c)
	}
	if _, err := s.QueueRetry(ctx, id+100, now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retry of a missing message: %v", err)
	}
	dropped, err := s.QueueDrop(ctx, id)
	tcheck(t, err, "drop")
	if dropped.ID != id || len(dropped.Recipients) != 1 {
		t.Fatalf("dropped: %+v", dropped)
	}
	if _, err := s.QueueDrop(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second drop: %v", err)
	}
	// The deliverer's late outcome for a dropped message is a no-op.
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: c[0].Recipients[0].ID, State: StateDelivered}}), "late update")
	var rows int
	tcheck(t, s.db.QueryRow(`SELECT COUNT(*) FROM queue_recipients`).Scan(&rows), "count")
	if rows != 0 {
		t.Fatalf("%d recipient rows left after drop", rows)
	}
}

func TestQueueCrashRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := testOpen(t, dir)
	tcheck(t, err, "open")
	b := Backoff{First: time.Hour, Attempts: 5}
	now := time.Now().Add(time.Second) // after Enqueue stamps its rows, whatever the clock resolution
	id, err := s.Enqueue(ctx, testMessage(1, "x@b.example", "y@c.example"))
	tcheck(t, err, "enqueue")
	_, err = s.Enqueue(ctx, testMessage(2, "z@b.example"))
	tcheck(t, err, "enqueue")
	c, err := s.ClaimDue(ctx, now, 1, b)
	tcheck(t, err, "claim")
	if len(c) != 1 || c[0].ID != id {
		t.Fatalf("claim: %+v", c)
	}
	// "Crash": the store goes away with the rows in delivering.
	tcheck(t, s.Close(), "close")

	s = openTest(t, dir)
	later := now.Add(time.Minute)
	n, err := s.RecoverQueue(ctx, later, true)
	tcheck(t, err, "recover")
	if n != 2 {
		t.Fatalf("recovered %d rows, want 2", n)
	}
	c, err = s.ClaimDue(ctx, later, 10, b)
	tcheck(t, err, "claim after recovery")
	if len(c) != 2 {
		t.Fatalf("claim after recovery: %+v", c)
	}
	for _, m := range c {
		for _, r := range m.Recipients {
			want := 1
			if m.ID == id {
				want = 2 // the interrupted attempt counts
			}
			if r.Attempts != want {
				t.Fatalf("recipient %s: %d attempts, want %d", r.Address, r.Attempts, want)
			}
		}
	}
	if n, _ := s.RecoverQueue(ctx, later, true); n != 3 {
		t.Fatalf("second recovery: %d", n)
	}
}

func TestQueueDelayedOnce(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	b := Backoff{First: time.Hour, Attempts: 5}
	t0 := time.Now().Add(-5 * time.Hour).Truncate(time.Millisecond)
	m := testMessage(1, "x@b.example", "y@c.example")
	m.Created = t0
	id, err := s.Enqueue(ctx, m)
	tcheck(t, err, "enqueue")
	// Not yet attempted: no delay notice.
	if d, _ := s.QueueDelayed(ctx, t0.Add(4*time.Hour), 10); len(d) != 0 {
		t.Fatalf("delayed before any attempt: %+v", d)
	}
	c, err := s.ClaimDue(ctx, t0, 10, b)
	tcheck(t, err, "claim")
	x, y := recipientByAddress(t, c[0], "x@b.example"), recipientByAddress(t, c[0], "y@c.example")
	tcheck(t, s.UpdateRecipients(ctx, t0, []RecipientUpdate{
		{ID: x.ID, State: StateQueued, Code: 451, Text: "later"},
		{ID: y.ID, State: StateDelivered, Code: 250},
	}), "outcomes")
	if d, _ := s.QueueDelayed(ctx, t0.Add(-time.Second), 10); len(d) != 0 {
		t.Fatalf("delayed for a newer message: %+v", d)
	}
	d, err := s.QueueDelayed(ctx, t0.Add(4*time.Hour), 10)
	tcheck(t, err, "delayed")
	if len(d) != 1 || d[0].ID != id || len(d[0].Recipients) != 1 || d[0].Recipients[0].ID != x.ID || len(d[0].Data) == 0 {
		t.Fatalf("delayed: %+v", d)
	}
	tcheck(t, s.MarkDelayNotified(ctx, id, t0.Add(4*time.Hour)), "mark")
	if d, _ := s.QueueDelayed(ctx, t0.Add(10*time.Hour), 10); len(d) != 0 {
		t.Fatalf("delayed twice: %+v", d)
	}
	if got := queuedByID(t, s, id); !got.DelayNotified.Equal(t0.Add(4 * time.Hour)) {
		t.Fatalf("delay notified at %v", got.DelayNotified)
	}
}

// BenchmarkQueueEnqueue measures durable enqueues from 16 concurrent
// callers (the submission load of the design goal), 10 KB each.
func BenchmarkQueueEnqueue(b *testing.B) {
	ctx := context.Background()
	s, err := testOpen(b, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	q := NewQueue(s, QueueOptions{})
	defer q.Close()
	m := testMessage(0, "bob@b.example")
	m.Data = bytes.Repeat([]byte("0123456789abcdef\r\n"), 10<<10/18)
	b.SetParallelism(8) // 8 × GOMAXPROCS (2 here) goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Enqueue(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	st := q.Stats()
	b.ReportMetric(float64(st.Messages)/float64(max(st.Commits, 1)), "msgs/commit")
}

// TestQueueEnqueueWith: the Sent copy is filed and the tracking stored with
// the queued message, in its transaction; a copy that cannot be filed (over
// quota) leaves the message queued and says why.
func TestQueueEnqueueWith(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	_, err = s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	for _, a := range []string{"alice@a.example", "dave@a.example"} {
		_, err = s.AddAddress(ctx, a)
		tcheck(t, err, "add address")
	}
	tcheck(t, s.SetQuota(ctx, "dave@a.example", 10), "quota")
	q := NewQueue(s, QueueOptions{})
	defer q.Close()

	plain := []byte("Subject: hello\r\n\r\nplain body\r\n")
	sent := time.Now()
	res, err := q.EnqueueWith(ctx, testMessage(1, "bob@b.example"), EnqueueExtras{
		Filing: &Filing{Address: "Alice@A.example", Mailbox: "Sent", Message: plain, Flags: []string{`\Seen`}},
		Tracking: &TrackedMessage{MessageID: "<m1@a.example>", Sender: "alice@a.example", Sent: sent,
			Recipients: []TrackedRecipient{{Address: "bob@b.example", ProcessedDeadline: sent.Add(time.Hour)}}},
	})
	tcheck(t, err, "enqueue")
	if res.ID <= 0 || res.FilingErr != nil || res.Filed.UID != 1 || res.TrackingErr != nil || res.Tracked.ID == 0 {
		t.Fatalf("enqueue with a filing and a tracking: %+v", res)
	}
	if tm, err := s.TrackedMessage(ctx, "<m1@a.example>"); err != nil || len(tm.Recipients) != 1 || tm.Recipients[0].State != TrackQueued {
		t.Fatalf("tracking: %+v, %v", tm, err)
	}
	if m := queuedByID(t, s, res.ID); len(m.Recipients) != 1 {
		t.Fatalf("queued %+v", m)
	}
	acct, err := s.MailAccount(ctx, "alice@a.example")
	tcheck(t, err, "account")
	st, err := s.MailboxStatus(ctx, acct.ID, "Sent")
	tcheck(t, err, "Sent")
	if st.Messages != 1 || st.Unseen != 0 {
		t.Fatalf("Sent holds %d messages, %d unseen", st.Messages, st.Unseen)
	}

	res, err = q.EnqueueWith(ctx, testMessage(2, "bob@b.example"), EnqueueExtras{
		Filing:   &Filing{Address: "dave@a.example", Mailbox: "Sent", Message: plain},
		Tracking: &TrackedMessage{MessageID: "", Sender: "dave@a.example"}, // invalid: left out
	})
	tcheck(t, err, "enqueue over quota")
	if res.ID <= 0 || !errors.Is(res.FilingErr, ErrOverQuota) || res.TrackingErr == nil {
		t.Fatalf("enqueue with a filing over quota and a bad tracking: %+v", res)
	}
	queuedByID(t, s, res.ID)

	if _, err := q.EnqueueWith(ctx, testMessage(3, "bob@b.example"), EnqueueExtras{Filing: &Filing{Address: "not an address", Message: plain}}); err == nil {
		t.Fatal("a filing to no address was taken")
	}
}

func TestQueueHead(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	for i := range 5 {
		_, err := s.Enqueue(ctx, testMessage(i, "bob@b.example"))
		tcheck(t, err, "enqueue")
	}
	head, total, err := s.QueueHead(ctx, 2)
	tcheck(t, err, "head")
	if total != 5 || len(head) != 2 || head[0].MessageID != "<m0@a.example>" || head[1].MessageID != "<m1@a.example>" {
		t.Fatalf("head %+v of %d", head, total)
	}
}
