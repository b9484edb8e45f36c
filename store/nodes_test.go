package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// postgresOnly skips a test of what only a PostgreSQL store does (several
// nodes on one database).
func postgresOnly(t testing.TB) {
	if !testPostgres() {
		t.Skip("PostgreSQL only (HISP_TEST_STORE=postgres)")
	}
}

// TestMailNotifications: mail filed through one node reaches another
// node's listener as a notification, which is what wakes IMAP IDLE there.
func TestMailNotifications(t *testing.T) {
	postgresOnly(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, dir := mailTest(t)
	b := openTest(t, dir)
	changes := b.MailNotifications(ctx, func(msg string, err error) { t.Logf("%s: %v", msg, err) })
	// The first value says the listener is up.
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("no listener")
	}
	before, err := b.MailChanged(ctx)
	tcheck(t, err, "mail changed")
	_, err = a.Deliver(ctx, "alice@clinic.example", "", testMail("from node a", 10), nil, time.Time{})
	tcheck(t, err, "deliver on a")
	select {
	case <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("node b heard nothing of node a's delivery")
	}
	if after, _ := b.MailChanged(ctx); after <= before {
		t.Fatalf("modseq %d → %d", before, after)
	}
}

// TestNodesDrainOneQueue: two nodes (a database connection pool each, as
// two processes have) claim from one queue of 2,000 messages at the same
// time, several workers each, until it is empty: every recipient is
// claimed and delivered exactly once.
func TestNodesDrainOneQueue(t *testing.T) {
	postgresOnly(t)
	ctx := context.Background()
	dir := t.TempDir()
	nodes := []*Store{openNode(t, dir, "node-a", time.Minute), openNode(t, dir, "node-b", time.Minute)}
	const total = 2000
	q := NewQueue(nodes[0], QueueOptions{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 8 {
				if _, err := q.Enqueue(ctx, testMessage(i, fmt.Sprintf("bob%d@b.example", i%3))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	q.Close()

	var mu sync.Mutex
	claims := map[int64]string{} // recipient → node
	var twice []string
	for _, s := range nodes {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				node, _ := s.Node()
				for {
					msgs, err := s.ClaimDue(ctx, time.Now(), 20, Backoff{})
					if err != nil {
						t.Error(err)
						return
					}
					if len(msgs) == 0 {
						return
					}
					var ups []RecipientUpdate
					mu.Lock()
					for _, m := range msgs {
						for _, r := range m.Recipients {
							if prev, ok := claims[r.ID]; ok {
								twice = append(twice, fmt.Sprintf("recipient %d by %s and %s", r.ID, prev, node))
							}
							claims[r.ID] = node
							ups = append(ups, RecipientUpdate{ID: r.ID, State: StateDelivered, Code: 250})
						}
					}
					mu.Unlock()
					if err := s.UpdateRecipients(ctx, time.Now(), ups); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if len(twice) > 0 {
		t.Fatalf("%d recipients claimed twice: %v", len(twice), twice[:min(5, len(twice))])
	}
	if len(claims) != total {
		t.Fatalf("%d recipients claimed, want %d", len(claims), total)
	}
	per := map[string]int{}
	for _, n := range claims {
		per[n]++
	}
	t.Logf("claims per node: %v", per)
	if pending, err := nodes[1].QueueList(ctx, false); err != nil || len(pending) != 0 {
		t.Fatalf("left in the queue: %d, %v", len(pending), err)
	}
}

// TestNodesFileIntoOneMailbox: two nodes filing into one mailbox at the
// same time take turns: every delivery succeeds, with a UID of its own.
func TestNodesFileIntoOneMailbox(t *testing.T) {
	postgresOnly(t)
	ctx := context.Background()
	a, dir := mailTest(t)
	nodes := []*Store{a, openTest(t, dir)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	uids := map[uint32]bool{}
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid, err := nodes[i%2].Deliver(ctx, "alice@clinic.example", "", testMail(fmt.Sprint(i), 100), nil, time.Time{})
			if err != nil {
				t.Errorf("deliver %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if uids[uid] {
				t.Errorf("UID %d twice", uid)
			}
			uids[uid] = true
		}()
	}
	wg.Wait()
	acct, err := a.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "account")
	st, err := a.MailboxStatus(ctx, acct.ID, "INBOX")
	tcheck(t, err, "status")
	if st.Messages != 40 || len(uids) != 40 {
		t.Fatalf("INBOX has %d messages, %d UIDs given", st.Messages, len(uids))
	}
}
