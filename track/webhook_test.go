package track

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/mdn"
)

// receiver is a webhook endpoint that verifies signatures and records the
// events it accepted.
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	down   bool // answer 503 while set
	tries  int
	events []Event
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.tries++
	if !Verify(rc.secret, body, r.Header.Get(SignatureHeader)) {
		rc.t.Errorf("bad signature %q", r.Header.Get(SignatureHeader))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if rc.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		rc.t.Errorf("body %s: %v", body, err)
	}
	if r.Header.Get(EventHeader) == "" {
		rc.t.Error("no event header")
	}
	rc.events = append(rc.events, e)
}

func (rc *receiver) seen() []Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Event(nil), rc.events...)
}

func (rc *receiver) setDown(d bool) { rc.mu.Lock(); rc.down = d; rc.mu.Unlock() }

func TestSignVerify(t *testing.T) {
	secret, body := []byte("0123456789abcdef"), []byte(`{"id":1}`)
	sig := Sign(secret, body)
	// echo -n '{"id":1}' | openssl dgst -sha256 -hmac 0123456789abcdef
	if sig != "sha256=564c88996eca094e86962bc8c3ca28f6868b19f1646c542d29b5132b84f93dc3" || !Verify(secret, body, sig) {
		t.Fatalf("signature %s", sig)
	}
	for _, bad := range []string{"", "sha1=" + sig[7:], sig[:len(sig)-2] + "00", "sha256=zz"} {
		if Verify(secret, body, bad) {
			t.Errorf("%q verified", bad)
		}
	}
	if Verify([]byte("another secret!!"), body, sig) || Verify(secret, []byte(`{"id":2}`), sig) {
		t.Error("signature verified with another key or body")
	}
}

func TestWebhooksEveryTransitionOnceInOrder(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rc := &receiver{t: t, secret: []byte("a webhook secret of enough bytes")}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	if _, err := f.st.AddWebhook(ctx, "a.example", srv.URL+"/hook", rc.secret); err != nil {
		t.Fatal(err)
	}
	hooks := func() *Webhooks {
		return NewWebhooks(WebhookOptions{Store: f.st, RetryFirst: time.Minute, Now: f.clk.now})
	}
	wh := hooks()
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, true); err != nil {
		t.Fatal(err)
	}
	if n, err := wh.Deliver(ctx); err != nil || n != 1 {
		t.Fatalf("deliver: %d %v", n, err)
	}
	// The endpoint goes down: processed waits, and dispatched waits behind
	// it.
	rc.setDown(true)
	f.clk.set(time.Minute)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), false) // duplicate: no transition
	f.notice(t, mdnNotice(t, bob, mdn.DispositionDispatched, true), true)
	if n, _ := wh.Deliver(ctx); n != 0 {
		t.Fatalf("%d delivered while down", n)
	}
	if n, _ := wh.Deliver(ctx); n != 0 || rc.tries != 2 {
		t.Fatalf("retried before the backoff: %d delivered, %d tries", n, rc.tries)
	}
	// hisp restarts; the endpoint is back.
	f.restart(t)
	rc.setDown(false)
	f.clk.set(10 * time.Minute)
	wh = hooks()
	if n, err := wh.Deliver(ctx); err != nil || n != 2 {
		t.Fatalf("after restart: %d %v", n, err)
	}
	if n, _ := wh.Deliver(ctx); n != 0 {
		t.Fatalf("delivered again: %d", n)
	}
	var got []string
	ids := map[int64]bool{}
	for _, e := range rc.seen() {
		got = append(got, e.PreviousState+">"+e.State)
		if ids[e.ID] {
			t.Errorf("event %d twice", e.ID)
		}
		ids[e.ID] = true
		if e.MessageID != msgID || e.Sender != alice || e.Recipient != bob || !e.DispatchedRequested || e.Type != "recipient.state" {
			t.Errorf("event %+v", e)
		}
	}
	if s := strings.Join(got, " "); s != ">queued queued>processed processed>dispatched" {
		t.Fatalf("events %s", s)
	}
	if last := rc.seen()[2]; !last.Final || last.Outcome != "success" || last.Notice != "filed" {
		t.Fatalf("last event %+v", last)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rc := &receiver{t: t, secret: []byte("a webhook secret of enough bytes"), down: true}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	if _, err := f.st.AddWebhook(ctx, alice, srv.URL, rc.secret); err != nil {
		t.Fatal(err)
	}
	wh := NewWebhooks(WebhookOptions{Store: f.st, RetryFirst: time.Minute, GiveUp: time.Hour, Now: f.clk.now})
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, false); err != nil {
		t.Fatal(err)
	}
	f.clk.set(time.Minute)
	f.notice(t, mdnNotice(t, bob, mdn.DispositionProcessed, false), true)
	for _, at := range []time.Duration{0, 2 * time.Minute, 2 * time.Hour} {
		f.clk.set(at)
		wh.Deliver(ctx)
	}
	// queued was given up after an hour; processed is next in line.
	rc.setDown(false)
	f.clk.set(3 * time.Hour)
	if n, _ := wh.Deliver(ctx); n != 1 {
		t.Fatalf("delivered %d", n)
	}
	if e := rc.seen(); len(e) != 1 || e[0].State != "processed" {
		t.Fatalf("seen %+v", e)
	}
}

// TestWebhooksIdle: without webhooks the tracker's wake-ups cost nothing
// (Wake does not signal); one added later is found on the next interval and
// the outbox it queued is delivered.
func TestWebhooksIdle(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wh := NewWebhooks(WebhookOptions{Store: f.st, Interval: 50 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- wh.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); !wh.idle.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no webhook, yet not idle")
		}
	}
	wh.Wake()
	if len(wh.wake) != 0 {
		t.Fatal("Wake signalled while no webhook is configured")
	}
	rc := &receiver{t: t, secret: []byte("a webhook secret of enough bytes")}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	if _, err := f.st.AddWebhook(ctx, alice, srv.URL, rc.secret); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.Sent(ctx, msgID, alice, []string{bob}, false); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(rc.seen()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the webhook added while idle heard nothing")
		}
	}
	cancel()
	<-done
}
