package track

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/store"
)

const (
	alice = "alice@a.example"
	bob   = "bob@b.example"
	carol = "carol@c.example"
	msgID = "<m1@a.example>"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// clock is the injected time of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t0.Add(d)
}

// mailboxes records what the tracker files, by sender.
type mailboxes struct {
	mu   sync.Mutex
	msgs map[string][][]byte
	fail error // Notify fails with this while set
}

func (m *mailboxes) notify(_ context.Context, sender string, msg []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if m.msgs == nil {
		m.msgs = map[string][][]byte{}
	}
	m.msgs[sender] = append(m.msgs[sender], msg)
	return nil
}

func (m *mailboxes) of(sender string) [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][]byte(nil), m.msgs[sender]...)
}

type fixture struct {
	dir   string
	st    *store.Store
	clk   *clock
	boxes *mailboxes
	tr    *Tracker
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), clk: &clock{t: t0}, boxes: &mailboxes{}}
	f.open(t)
	return f
}

// open opens the store and a tracker over it, as a (re)started hisp does.
func (f *fixture) open(t *testing.T) {
	t.Helper()
	st, err := store.Open(context.Background(), f.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	f.tr = New(Options{Store: st, Notify: f.boxes.notify, Hostname: "hisp.a.example", WithholdProcessed: true, Now: f.clk.now})
}

func (f *fixture) restart(t *testing.T) {
	t.Helper()
	f.st.Close()
	f.open(t)
}

func mdnNotice(t *testing.T, from string, d mdn.Disposition, ext bool) *mdn.Notice {
	t.Helper()
	msg, err := mdn.BuildMDN(mdn.MDN{From: from, To: alice, OriginalMessageID: msgID, Disposition: d, FinalDestination: ext,
		Failure: map[bool]string{true: "mailbox full"}[d == mdn.DispositionFailed]})
	if err != nil {
		t.Fatal(err)
	}
	n, err := mdn.ParseNotice(msg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) notice(t *testing.T, n *mdn.Notice, wantFile bool) {
	t.Helper()
	v, err := f.tr.Notification(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Tracked || v.File != wantFile {
		t.Fatalf("notice %+v: verdict %+v, want file %v", n.Recipients, v, wantFile)
	}
}

func (f *fixture) check(t *testing.T, at time.Duration) {
	t.Helper()
	f.clk.set(at)
	if err := f.tr.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) recipient(t *testing.T, addr string) store.TrackedRecipient {
	t.Helper()
	m, err := f.st.TrackedMessage(context.Background(), msgID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Recipients {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no recipient %s in %+v", addr, m)
	return store.TrackedRecipient{}
}

// failureDSNs returns the failure DSNs filed for alice, parsed.
func (f *fixture) failureDSNs(t *testing.T) []*mdn.ParsedDSN {
	t.Helper()
	var out []*mdn.ParsedDSN
	for _, msg := range f.boxes.of(alice) {
		d, err := mdn.ParseDSN(msg)
		if err != nil {
			t.Fatalf("filed message is not a DSN: %v\n%s", err, msg)
		}
		out = append(out, d)
	}
	return out
}

func TestProcessedThenDispatchedOneSuccess(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, "m1@a.example", "Alice@a.example", []string{"Bob@B.example"}, true); err != nil {
		t.Fatal(err)
	}
	f.clk.set(10 * time.Minute)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false) // withheld
	if r := f.recipient(t, bob); r.State != store.TrackProcessed || r.Outcome != "" || !r.Deadline.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after processed %+v", r)
	}
	f.clk.set(20 * time.Minute)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, true), true) // the one success
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, true), false)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionFailed, false), false)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDisplayed, false), true) // bob's own read receipt is relayed
	f.check(t, 3*time.Hour)
	if n := len(f.boxes.of(alice)); n != 0 {
		t.Fatalf("%d notices filed by the tracker after success", n)
	}
	r := f.recipient(t, bob)
	if r.State != store.TrackDispatched || r.Outcome != store.OutcomeSuccess {
		t.Fatalf("final %+v", r)
	}
	var notices []string
	for _, e := range r.Events {
		notices = append(notices, e.Kind+":"+e.Notice)
	}
	want := "queued: processed:withheld dispatched:filed dispatched:suppressed processed:suppressed failed:suppressed notice:filed"
	if got := strings.Join(notices, " "); got != want {
		t.Fatalf("events %s\nwant   %s", got, want)
	}
}

// TestDispatchedOvertakesProcessed: the two notices travel as two queue
// entries and may arrive in either order. A processed MDN after the
// dispatched one is recorded (and withheld as it would have been in order),
// not taken for a duplicate; only a second processed MDN is one.
func TestDispatchedOvertakesProcessed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, true); err != nil {
		t.Fatal(err)
	}
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, true), true)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false)
	r := f.recipient(t, bob)
	if r.State != store.TrackDispatched || r.Outcome != store.OutcomeSuccess {
		t.Fatalf("final %+v", r)
	}
	var notices []string
	for _, e := range r.Events {
		notices = append(notices, e.Kind+":"+e.Notice)
	}
	want := "queued: dispatched:filed processed:withheld processed:suppressed"
	if got := strings.Join(notices, " "); got != want {
		t.Fatalf("events %s\nwant   %s", got, want)
	}

	// Not requested: the dispatched MDN was the one success.
	const other = "<m2@a.example>"
	if err := f.tr.Sent(ctx, other, alice, []string{bob}, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d    mdn.Disposition
		file bool
	}{{mdn.DispositionDispatched, true}, {mdn.DispositionProcessed, false}} {
		n := mdnNotice(t, bob, tc.d, false)
		n.OriginalMessageID = other
		f.notice(t, n, tc.file)
	}
}

func TestWithoutRequestProcessedIsTheSuccess(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob, carol}, false); err != nil {
		t.Fatal(err)
	}
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), true)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, false), false) // the sender has the success
	// carol's mailbox is full: processed, then failed, both filed.
	f.notice(t, mdnNotice(t, carol, mdn.DispositionProcessed, false), true)
	f.notice(t, mdnNotice(t, carol, mdn.DispositionFailed, false), true)
	f.check(t, 2*time.Hour)
	if n := len(f.boxes.of(alice)); n != 0 {
		t.Fatalf("%d timeout notices", n)
	}
	if r := f.recipient(t, carol); r.State != store.TrackFailed || r.Outcome != store.OutcomeFailure || !strings.Contains(r.Reason, "mailbox full") {
		t.Fatalf("carol %+v", r)
	}
}

func TestTimeoutOneFailureDSNLateDispatchedSuppressed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob, carol}, true); err != nil {
		t.Fatal(err)
	}
	f.clk.set(5 * time.Minute)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false)
	f.notice(t, mdnNotice(t, carol, mdn.DispositionProcessed, false), false)
	f.notice(t, mdnNotice(t, carol, mdn.DispositionDispatched, true), true)
	f.check(t, 59*time.Minute)
	if n := len(f.boxes.of(alice)); n != 0 {
		t.Fatalf("%d notices before the deadline", n)
	}
	f.check(t, 61*time.Minute)
	f.check(t, 62*time.Minute)
	f.check(t, 5*time.Hour)
	dsns := f.failureDSNs(t)
	if len(dsns) != 1 || len(dsns[0].Recipients) != 1 {
		t.Fatalf("want one failure DSN for bob, got %d: %+v", len(dsns), dsns)
	}
	d := dsns[0]
	if r := d.Recipients[0]; r.Recipient != bob || r.Action != mdn.Failed || r.Status != "5.4.7" ||
		!strings.Contains(r.Diagnostic, "no dispatched MDN") || d.OriginalMessageID != msgID {
		t.Fatalf("DSN %+v", d)
	}
	// The late dispatched MDN is recorded, not filed.
	f.clk.set(70 * time.Minute)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, true), false)
	if r := f.recipient(t, bob); r.State != store.TrackFailed || r.Outcome != store.OutcomeFailure || r.Notice != store.NoticeDone {
		t.Fatalf("bob %+v", r)
	}
	// The queue's own DSN would not name bob either.
	if ok, err := f.tr.Bounced(ctx, msgID, bob, "550 5.1.1 no such user", true); err != nil || ok {
		t.Fatalf("bounce after timeout: %v %v", ok, err)
	}
}

func TestRemoteDSNIsFailure(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, true); err != nil {
		t.Fatal(err)
	}
	dsn, err := mdn.BuildDSN(mdn.DSN{ReportingMTA: "mx.b.example", From: "postmaster@b.example", To: alice,
		OriginalMessageID: msgID, Recipients: []mdn.DSNRecipient{{Recipient: bob, Action: mdn.Failed, Status: "5.1.1",
			Diagnostic: "550 5.1.1 no such user", DiagnosticSMTP: true}}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := mdn.ParseNotice(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if n.Type != "dsn" || n.From != "postmaster@b.example" {
		t.Fatalf("notice %+v", n)
	}
	f.notice(t, n, true)
	f.notice(t, n, false) // duplicate
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, true), false)
	f.check(t, 2*time.Hour)
	if n := len(f.boxes.of(alice)); n != 0 {
		t.Fatalf("%d timeout notices after a remote failure", n)
	}
	if r := f.recipient(t, bob); r.State != store.TrackFailed || r.OutcomeBy != "dsn" || !strings.Contains(r.Reason, "no such user") {
		t.Fatalf("bob %+v", r)
	}
}

func TestQueueFailureAndUntracked(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.tr.Track(ctx, Message{MessageID: msgID, Sender: alice, Recipients: []string{bob},
		Failed: []FailedRecipient{{Address: carol, Reason: "no trusted certificate"}}}); err != nil {
		t.Fatal(err)
	}
	if r := f.recipient(t, carol); r.State != store.TrackFailed || r.Outcome != store.OutcomeFailure {
		t.Fatalf("carol %+v", r)
	}
	for i := 0; i < 2; i++ { // a second call is the queue trying its DSN again
		if ok, err := f.tr.Bounced(ctx, msgID, "BOB@b.example", "550 5.1.1 no such user", true); err != nil || !ok {
			t.Fatalf("bounce %d: %v %v", i, ok, err)
		}
	}
	f.check(t, 2*time.Hour)
	if n := len(f.boxes.of(alice)); n != 0 {
		t.Fatalf("%d timeout notices after a queue failure", n)
	}
	// Untracked messages and recipients pass.
	if ok, _ := f.tr.Bounced(ctx, "<other@a.example>", bob, "x", true); !ok {
		t.Fatal("untracked bounce held back")
	}
	v, err := f.tr.Notification(ctx, &mdn.Notice{Type: "mdn", OriginalMessageID: "<other@a.example>", From: bob,
		Recipients: []mdn.NoticeRecipient{{Addresses: []string{bob}, Kind: mdn.KindProcessed}}})
	if err != nil || v.Tracked || !v.File {
		t.Fatalf("untracked notice: %+v %v", v, err)
	}
}

func TestNoticeFromAnotherDomainIgnored(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, true); err != nil {
		t.Fatal(err)
	}
	n := mdnNotice(t, bob, mdn.DispositionDispatched, true)
	n.From = "mallory@evil.example"
	v, err := f.tr.Notification(ctx, n)
	if err != nil || v.Tracked || !v.File {
		t.Fatalf("spoofed notice: %+v %v", v, err)
	}
	if r := f.recipient(t, bob); r.State != store.TrackQueued {
		t.Fatalf("spoofed notice moved %+v", r)
	}
	// A sub-domain of the recipient's may speak for it.
	n.From = "postmaster@mx.b.example"
	f.notice(t, n, true)
}

func TestTimeoutAfterRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, false); err != nil {
		t.Fatal(err)
	}
	f.check(t, 30*time.Minute)
	// hisp stops; the deadline passes while it is down.
	f.clk.set(3 * time.Hour)
	f.restart(t)
	f.boxes.fail = errors.New("disk full")
	if err := f.tr.Check(ctx); err == nil {
		t.Fatal("filing error not reported")
	}
	if r := f.recipient(t, bob); r.State != store.TrackFailed || r.Notice != store.NoticePending {
		t.Fatalf("after the failed filing %+v", r)
	}
	// Stopped again before the DSN was filed: the next start files it,
	// once.
	f.restart(t)
	f.boxes.fail = nil
	f.check(t, 3*time.Hour+time.Minute)
	f.check(t, 4*time.Hour)
	dsns := f.failureDSNs(t)
	if len(dsns) != 1 || dsns[0].Recipients[0].Recipient != bob || !strings.Contains(dsns[0].Recipients[0].Diagnostic, "no processed MDN") {
		t.Fatalf("DSNs %+v", dsns)
	}
}

func TestRelayedFromTheQueue(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.st.Enqueue(ctx, store.QueuedMessage{MessageID: msgID, MailFrom: alice, Data: []byte("sealed"),
		Recipients: []store.QueuedRecipient{{Address: bob}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, false); err != nil {
		t.Fatal(err)
	}
	f.check(t, time.Minute)
	if r := f.recipient(t, bob); r.State != store.TrackQueued {
		t.Fatalf("relayed before delivery: %+v", r)
	}
	ms, err := f.st.ClaimDue(ctx, time.Now(), 10, store.Backoff{})
	if err != nil || len(ms) != 1 {
		t.Fatalf("claim: %v %+v", err, ms)
	}
	if err := f.st.UpdateRecipients(ctx, time.Now(), []store.RecipientUpdate{{ID: ms[0].Recipients[0].ID,
		State: store.StateDelivered, Code: 250, Enhanced: "2.0.0", Text: "queued as 42", RemoteMTA: "mx.b.example"}}); err != nil {
		t.Fatal(err)
	}
	f.check(t, 2*time.Minute)
	f.check(t, 3*time.Minute)
	r := f.recipient(t, bob)
	if r.State != store.TrackRelayed || r.Relayed.IsZero() || len(r.Events) != 2 || !strings.Contains(r.Events[1].Detail, "mx.b.example: 250 2.0.0 queued as 42") {
		t.Fatalf("after delivery %+v", r)
	}
	// The processed MDN then ends it; Relayed again changes nothing.
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), true)
	if err := f.tr.Relayed(ctx, msgID, bob, "again"); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Relayed(ctx, "<unknown@a.example>", bob, ""); err != nil {
		t.Fatal(err)
	}
	if r := f.recipient(t, bob); r.State != store.TrackProcessed || len(r.Events) != 3 {
		t.Fatalf("final %+v", r)
	}
}

func TestNormalizeMessageID(t *testing.T) {
	for in, want := range map[string]string{"": "", " <a@b> ": "<a@b>", "a@b": "<a@b>", "<a@b": "<a@b>"} {
		if got := NormalizeMessageID(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestTrackConcurrentSubmissions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- f.tr.Sent(ctx, fmt.Sprintf("<c%d@a.example>", i), alice, []string{bob}, i%2 == 0)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ms, err := f.st.TrackedMessages(ctx, store.TrackFilter{Sender: alice, Limit: 100})
	if err != nil || len(ms) != 40 {
		t.Fatalf("%d tracked, %v", len(ms), err)
	}
}

// TestRelayedAll: the relays of one delivery are recorded together, with
// the next hop's reply, as the queued ▶ relayed transition; unknown
// recipients and messages are no error, and a repeat changes nothing.
func TestRelayedAll(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	carol := "carol@b.example"
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob, carol}, false); err != nil {
		t.Fatal(err)
	}
	rs := []Relay{{Recipient: bob, Detail: "mx.b.example: 250 2.0.0 ok"}, {Recipient: carol, Detail: "mx.b.example: 250 2.0.0 ok"},
		{Recipient: "nobody@b.example", Detail: "250"}}
	if err := f.tr.RelayedAll(ctx, msgID, rs); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.RelayedAll(ctx, "<unknown@a.example>", rs); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{bob, carol} {
		r := f.recipient(t, who)
		if r.State != store.TrackRelayed || r.Relayed.IsZero() || len(r.Events) != 2 || r.Events[1].Kind != "relayed" ||
			r.Events[1].PreviousState != store.TrackQueued || r.Events[1].Detail != "mx.b.example: 250 2.0.0 ok" {
			t.Fatalf("%s: %+v", who, r)
		}
	}
	if err := f.tr.RelayedAll(ctx, msgID, rs[:1]); err != nil {
		t.Fatal(err)
	}
	if r := f.recipient(t, bob); len(r.Events) != 2 {
		t.Fatalf("a repeat recorded an event: %+v", r.Events)
	}
}
