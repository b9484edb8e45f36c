package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/store"
)

// TestRetryLocal: a deferred recipient whose sealing fails for a reason of
// ours waits for its next try on the schedule, fails with a DSN to the
// sender after its last attempt (never retried forever), and only waits
// when hisp is stopping.
func TestRetryLocal(t *testing.T) {
	now := time.Unix(1e9, 0)
	var filed [][]byte
	m := &mail{hostname: "hisp.a.example", log: slog.New(slog.DiscardHandler), now: func() time.Time { return now },
		retry: store.Backoff{First: time.Minute, Max: time.Hour, Attempts: 3}, revocationGrace: 24 * time.Hour,
		deliver: func(ctx context.Context, address, mailbox string, msg []byte, flags []string) error {
			filed = append(filed, msg)
			return nil
		}}
	plain := []byte("From: alice@a.example\r\nTo: bob@b.example\r\nSubject: s\r\nMessage-ID: <m1@a.example>\r\n\r\nhello\r\n")
	queued := func(attempts int) store.QueuedMessage {
		return store.QueuedMessage{ID: 1, MessageID: "<m1@a.example>", MailFrom: "alice@a.example", User: "alice@a.example",
			Created: now.Add(-time.Hour), Recipients: []store.QueuedRecipient{{ID: 7, Address: "bob@b.example", Attempts: attempts}}}
	}
	cause := errors.New("key store unreadable")
	ctx := context.Background()

	q := queued(1)
	us := m.retryLocal(ctx, q, submitterOfQueued(q), []string{"bob@b.example"}, plain, cause)
	if len(us) != 1 || us[0].State != store.StateDeferred || !us[0].NextAttempt.After(now) || len(filed) != 0 {
		t.Fatalf("first attempt: %+v, %d DSNs", us, len(filed))
	}
	q = queued(3)
	us = m.retryLocal(ctx, q, submitterOfQueued(q), []string{"bob@b.example"}, plain, cause)
	if len(us) != 1 || us[0].State != store.StateBounced || len(filed) != 1 {
		t.Fatalf("last attempt: %+v, %d DSNs", us, len(filed))
	}
	if dsn := string(filed[0]); !strings.Contains(dsn, "key store unreadable") || !strings.Contains(dsn, "bob@b.example") {
		t.Errorf("DSN does not say why:\n%s", dsn)
	}
	stopping, cancel := context.WithCancel(ctx)
	cancel()
	us = m.retryLocal(stopping, q, submitterOfQueued(q), []string{"bob@b.example"}, plain, cause)
	if len(us) != 1 || us[0].State != store.StateDeferred || len(filed) != 1 {
		t.Fatalf("while stopping: %+v, %d DSNs", us, len(filed))
	}
}
