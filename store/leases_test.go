package store

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// enqueueMessages queues n messages to bob@b.example through s.
func enqueueMessages(t *testing.T, s *Store, n int) {
	t.Helper()
	q := NewQueue(s, QueueOptions{})
	defer q.Close()
	for i := range n {
		_, err := q.Enqueue(context.Background(), testMessage(i, "bob@b.example"))
		tcheck(t, err, "enqueue")
	}
}

// openNode opens a second view of the store in dir as another node, as a
// second hisp node on the same database would.
func openNode(t *testing.T, dir, node string, lease time.Duration) *Store {
	t.Helper()
	s := openTest(t, dir)
	s.SetNode(node, lease)
	return s
}

// TestClaimsAcrossNodes: a recipient claimed by one node is not claimed by
// another; its claim passes to another node only when its lease runs out
// (a node that died), after which the first node's late outcome counts for
// nothing; a live node's renewal keeps its claim.
func TestClaimsAcrossNodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openNode(t, dir, "node-a", time.Minute)
	b := openNode(t, dir, "node-b", time.Minute)
	enqueueMessages(t, a, 3)
	now := time.Now()
	got, err := a.ClaimDue(ctx, now, 2, Backoff{})
	tcheck(t, err, "claim on a")
	if len(got) != 2 {
		t.Fatalf("a claimed %d messages, want 2", len(got))
	}
	// b sees only the third; then nothing.
	gotB, err := b.ClaimDue(ctx, now, 10, Backoff{})
	tcheck(t, err, "claim on b")
	if len(gotB) != 1 || gotB[0].ID == got[0].ID || gotB[0].ID == got[1].ID {
		t.Fatalf("b claimed %+v, a had %d and %d", gotB, got[0].ID, got[1].ID)
	}
	if more, _ := b.ClaimDue(ctx, now.Add(time.Hour), 10, Backoff{}); len(more) != 0 {
		t.Fatalf("claimed twice: %+v", more)
	}
	// a renews at +50s: its claims hold past the first minute; b's lapse.
	if n, err := a.RenewClaims(ctx, now.Add(50*time.Second)); err != nil || n != 2 {
		t.Fatalf("renew: %d, %v", n, err)
	}
	n, err := a.RecoverQueue(ctx, now.Add(90*time.Second), false)
	tcheck(t, err, "recover")
	if n != 1 {
		t.Fatalf("recovered %d at +90s, want b's one", n)
	}
	// b, late, records a delivery of the recipient a node took over:
	// nothing changes; a claims it and its outcome counts.
	r := gotB[0].Recipients[0]
	tcheck(t, b.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: r.ID, State: StateDelivered, Code: 250}}), "late update")
	if m := queuedByID(t, a, gotB[0].ID); m.Recipients[0].State != StateQueued {
		t.Fatalf("late outcome of an expired claim applied: %+v", m.Recipients[0])
	}
	again, err := a.ClaimDue(ctx, now.Add(90*time.Second), 10, Backoff{})
	tcheck(t, err, "claim again")
	if len(again) != 1 || again[0].ID != gotB[0].ID {
		t.Fatalf("a took over %+v", again)
	}
	tcheck(t, a.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: r.ID, State: StateDelivered, Code: 250}}), "update")
	if m := queuedByID(t, a, gotB[0].ID); m.Recipients[0].State != StateDelivered || m.Recipients[0].Attempts != 2 {
		t.Fatalf("after takeover: %+v", m.Recipients[0])
	}
	// A restarted node takes its own claims back at once.
	n, err = a.RecoverQueue(ctx, now.Add(time.Second), true)
	tcheck(t, err, "recover own")
	if n != 2 {
		t.Fatalf("own claims recovered: %d, want 2", n)
	}
}

// TestLeases: one node at a time holds a job; the holder renews it; another
// takes it when it runs out or is released.
func TestLeases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openNode(t, dir, "node-a", time.Minute)
	b := openNode(t, dir, "node-b", time.Minute)
	now := time.Now()
	take := func(s *Store, at time.Time) bool {
		t.Helper()
		ok, err := s.takeLease(ctx, "tracking", at)
		tcheck(t, err, "take lease")
		return ok
	}
	if !take(a, now) || take(b, now) || !take(a, now.Add(40*time.Second)) || take(b, now.Add(90*time.Second)) {
		t.Fatal("a should hold the job and renew it; b should not get it")
	}
	if !take(b, now.Add(101*time.Second)) || take(a, now.Add(102*time.Second)) {
		t.Fatal("b should take the lapsed job from a")
	}
	tcheck(t, b.ReleaseLease(ctx, "tracking"), "release")
	if !take(a, now.Add(103*time.Second)) {
		t.Fatal("a should take the released job")
	}
	ls, err := a.Leases(ctx)
	tcheck(t, err, "leases")
	if len(ls) != 1 || ls[0].Holder != "node-a" || ls[0].Job != "tracking" {
		t.Fatalf("leases: %+v", ls)
	}
}

// TestClaimedAtEnqueueAcrossNodes: a submission queued claimed for this
// node's deliverer (handed over in memory) is this node's claim like one
// from ClaimDue: another node neither claims it nor takes it over until
// the lease runs out.
func TestClaimedAtEnqueueAcrossNodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openNode(t, dir, "node-a", time.Minute)
	b := openNode(t, dir, "node-b", time.Minute)
	q := NewQueue(a, QueueOptions{})
	defer q.Close()
	res, err := q.EnqueueWith(ctx, testMessage(1, "bob@b.example"), EnqueueExtras{Claim: &Backoff{}})
	tcheck(t, err, "enqueue claimed")
	if len(res.Claimed) != 1 {
		t.Fatalf("claimed: %+v", res.Claimed)
	}
	now := time.Now()
	if n, err := b.RecoverQueue(ctx, now.Add(30*time.Second), false); err != nil || n != 0 {
		t.Fatalf("b took over a live claim: %d, %v", n, err)
	}
	if got, _ := b.ClaimDue(ctx, now.Add(time.Hour), 10, Backoff{}); len(got) != 0 {
		t.Fatalf("b claimed a's recipient: %+v", got)
	}
	if n, err := b.RecoverQueue(ctx, now.Add(2*time.Minute), false); err != nil || n != 1 {
		t.Fatalf("b after a's lease: %d, %v", n, err)
	}
}

// TestJobHeld: a job's lease as a node's loop asks for it: taken and
// reported as a change; answered from memory within a third of the lease
// (no write); another node gets it only once it ran out.
func TestJobHeld(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openNode(t, dir, "node-a", time.Minute)
	b := openNode(t, dir, "node-b", time.Minute)
	ja, jb := a.Job("tracking"), b.Job("tracking")
	now := time.Now()
	held, changed, err := ja.Held(ctx, now)
	if err != nil || !held || !changed {
		t.Fatalf("a first: held %v changed %v err %v", held, changed, err)
	}
	if held, changed, err := jb.Held(ctx, now); err != nil || held || !changed {
		t.Fatalf("b: held %v changed %v err %v", held, changed, err)
	}
	ls, err := a.Leases(ctx)
	tcheck(t, err, "leases")
	until := ls[0].Until
	if held, changed, _ := ja.Held(ctx, now.Add(10*time.Second)); !held || changed {
		t.Fatalf("a again: held %v changed %v", held, changed)
	}
	if ls, _ := a.Leases(ctx); !ls[0].Until.Equal(until) {
		t.Fatalf("asked within a third of the lease, the lease was written: %v → %v", until, ls[0].Until)
	}
	if held, changed, _ := ja.Held(ctx, now.Add(30*time.Second)); !held || changed {
		t.Fatal("a renewing should keep the job")
	}
	if held, _, _ := jb.Held(ctx, now.Add(80*time.Second)); held {
		t.Fatal("b took a job a renewed at +30s")
	}
	if held, changed, _ := jb.Held(ctx, now.Add(100*time.Second)); !held || !changed {
		t.Fatalf("b after a's lease ran out: held %v changed %v", held, changed)
	}
}

// TestHoldNode: on PostgreSQL a node's name is held by one running process
// at a time (two with one name would take each other's claims); another
// name is free, and the name is free again once its holder closes.
func TestHoldNode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openNode(t, dir, "node-a", time.Minute)
	tcheck(t, a.HoldNode(ctx), "hold node-a")
	tcheck(t, a.HoldNode(ctx), "hold node-a again in the same process")
	if !testPostgres() {
		return // one process per SQLite data directory: nothing to hold
	}
	twin := openNode(t, dir, "node-a", time.Minute)
	if err := twin.HoldNode(ctx); !errors.Is(err, ErrNodeInUse) || !strings.Contains(err.Error(), `"node-a"`) {
		t.Fatalf("a second node-a: %v", err)
	}
	b := openNode(t, dir, "node-b", time.Minute)
	tcheck(t, b.HoldNode(ctx), "hold node-b")

	// The database ends node-b's session (a restart, a failover): its
	// next check takes the name again on a new session; had another
	// process taken it meanwhile, the check says so.
	lost := func() {
		t.Helper()
		var n int
		err := b.db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1 AND pid <> pg_backend_pid()`, nodeLockClass).Scan(&n)
		tcheck(t, err, "end the sessions holding node names")
		if n == 0 {
			t.Fatal("no session held a node name")
		}
	}
	tcheck(t, a.Close(), "close node-a")
	lost()
	tcheck(t, b.HoldNode(ctx), "hold node-b again after its session ended")
	other := openNode(t, dir, "node-b", time.Minute)
	if err := other.HoldNode(ctx); !errors.Is(err, ErrNodeInUse) {
		t.Fatalf("node-b taken by another process while held again: %v", err)
	}
	lost()
	tcheck(t, other.HoldNode(ctx), "another process takes node-b while its holder's session is gone")
	if err := b.HoldNode(ctx); !errors.Is(err, ErrNodeInUse) {
		t.Fatalf("node-b's check after another took the name: %v", err)
	}
	tcheck(t, twin.HoldNode(ctx), "hold node-a after its holder closed")
}

// TestQueueListShowsClaims: the queue's listing says which node's attempt
// holds a recipient being delivered, and until when.
func TestQueueListShowsClaims(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openNode(t, dir, "node-a", time.Minute)
	enqueueMessages(t, a, 2)
	now := time.Now()
	got, err := a.ClaimDue(ctx, now, 1, Backoff{})
	tcheck(t, err, "claim")
	if len(got) != 1 {
		t.Fatalf("claimed %d", len(got))
	}
	list, err := a.QueueList(ctx, false)
	tcheck(t, err, "list")
	claimed := 0
	for _, m := range list {
		r := m.Recipients[0]
		switch {
		case m.ID == got[0].ID:
			claimed++
			if r.State != StateDelivering || r.ClaimedBy != "node-a" || !r.ClaimedUntil.After(now) {
				t.Errorf("claimed recipient listed as %+v", r)
			}
		case r.ClaimedBy != "":
			t.Errorf("unclaimed recipient listed as claimed by %q", r.ClaimedBy)
		}
	}
	if claimed != 1 || len(list) != 2 {
		t.Fatalf("listed %d messages, %d claimed", len(list), claimed)
	}
	one, err := a.QueueMessage(ctx, got[0].ID)
	tcheck(t, err, "read claimed message")
	if one.Recipients[0].ClaimedBy != "node-a" {
		t.Errorf("claimed message read as %+v", one.Recipients[0])
	}
}

// cuttableProxy forwards TCP connections to target until cut, which
// closes the client sides only: the server goes on holding its sessions,
// as after a network cut it has not noticed.
type cuttableProxy struct {
	l      net.Listener
	mu     sync.Mutex
	client []net.Conn
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	p := &cuttableProxy{l: l}
	var servers []net.Conn
	t.Cleanup(func() {
		l.Close()
		p.cut()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range servers {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.client, servers = append(p.client, c), append(servers, s)
			p.mu.Unlock()
			go io.Copy(s, c) // ends when the client side is cut; s stays open
			go io.Copy(c, s)
		}
	}()
	return p
}

func (p *cuttableProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.client {
		c.Close()
	}
	p.client = nil
}

// TestHoldNodeAfterNetworkCut: a node whose session was cut on its side
// while the server still runs it (and holds the name's lock) takes its
// name back on a new session, ending the old one, instead of taking itself
// for a second node of that name.
func TestHoldNodeAfterNetworkCut(t *testing.T) {
	postgresOnly(t)
	ctx := context.Background()
	loc := testLocation(t, t.TempDir())
	u, err := url.Parse(loc.URL)
	tcheck(t, err, "parse URL")
	proxy := newCuttableProxy(t, u.Host)
	u.Host = proxy.l.Addr().String()
	loc.URL = u.String()
	s, err := OpenAt(ctx, loc)
	tcheck(t, err, "open through the proxy")
	defer s.Close()
	s.SetNode("node-cut", time.Minute)
	tcheck(t, s.HoldNode(ctx), "hold")
	proxy.cut()
	tcheck(t, s.HoldNode(ctx), "hold again after the cut")
	other := openNode(t, loc.Dir, "node-cut", time.Minute)
	if err := other.HoldNode(ctx); !errors.Is(err, ErrNodeInUse) {
		t.Fatalf("another process took the name back from the cut node: %v", err)
	}
}
