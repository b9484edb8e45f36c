package smtp

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/store"
)

// sealerFunc is a Sealer of a function.
type sealerFunc func(ctx context.Context, msg store.QueuedMessage, plain []byte) []store.RecipientUpdate

func (f sealerFunc) SealDeferred(ctx context.Context, msg store.QueuedMessage, plain []byte) []store.RecipientUpdate {
	return f(ctx, msg, plain)
}

// TestDeliverSealsDeferred: the deliverer's one scheduler also retries the
// recipients deferred at submission: their plain message goes to the
// Sealer, never to the network nor the local path, and the Sealer's
// verdicts (try again, sealed, bounced) are recorded, without a DSN of the
// queue's own.
func TestDeliverSealsDeferred(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	b := &fakeBouncer{}
	now := time.Now()
	plain := []byte("From: alice@a.example\r\nSubject: plain\r\n\r\nnot sealed yet\r\n")
	id, err := st.Enqueue(context.Background(), store.QueuedMessage{MessageID: "<p1@a.example>", MailFrom: "alice@a.example",
		User: "alice@a.example", Origin: "deferred submission", Data: plain, Plain: true, Created: now,
		Recipients: []store.QueuedRecipient{{Address: "bob@route.test", NextAttempt: now}, {Address: "carol@route.test", NextAttempt: now},
			{Address: "dave@a.example", Local: true, NextAttempt: now}}})
	tcheck(t, err, "enqueue plain")

	var mu sync.Mutex
	calls := 0
	sealer := sealerFunc(func(ctx context.Context, m store.QueuedMessage, data []byte) []store.RecipientUpdate {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if string(data) != string(plain) || !m.Plain {
			t.Errorf("sealer got %+v %q", m, data)
		}
		var out []store.RecipientUpdate
		for _, r := range m.Recipients {
			u := store.RecipientUpdate{ID: r.ID, State: store.StateSealed, Code: 250, Enhanced: "2.0.0", Text: "sealed and queued"}
			switch {
			case r.Address == "carol@route.test":
				u = store.RecipientUpdate{ID: r.ID, State: store.StateBounced, Code: 550, Enhanced: "5.7.1", Text: "no trusted certificate"}
			case r.Address == "bob@route.test" && calls == 1:
				u = store.RecipientUpdate{ID: r.ID, State: store.StateDeferred, Code: 451, Enhanced: "4.4.3",
					Text: "discovery failed", NextAttempt: time.Now()}
			}
			out = append(out, u)
		}
		return out
	})
	local := LocalFunc(func(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
		t.Errorf("a plain message went to local delivery: %+v", env)
		return nil, nil
	})
	runDeliverer(t, DelivererConfig{Queue: st, Local: local, Bouncer: b, Sealer: sealer,
		Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	r := waitState(t, st, id, "bob@route.test", inState(store.StateSealed))
	if r.Attempts != 3 { // at submission, the deferral, the seal
		t.Errorf("bob: %+v", r)
	}
	if r := waitState(t, st, id, "carol@route.test", inState(store.StateBounced)); r.Status != "550 5.7.1 no trusted certificate" {
		t.Errorf("carol: %+v", r)
	}
	waitState(t, st, id, "dave@a.example", inState(store.StateSealed))
	if _, _, msgs := sk.snapshot(); len(msgs) != 0 {
		t.Errorf("the network got a plain message: %+v", msgs)
	}
	if got := b.all(); len(got) != 0 {
		t.Errorf("the queue bounced a recipient the sealer had told of: %+v", got)
	}
	if list, err := st.QueueList(context.Background(), false); err != nil || len(list) != 0 {
		t.Errorf("work left: %+v %v", list, err)
	}
	if m, err := st.QueueMessage(context.Background(), id); err != nil || strings.Contains(string(m.Data), "not sealed") {
		t.Errorf("the plain message kept: %v", err)
	}
}
