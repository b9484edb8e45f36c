package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func trackTestMessage(sent time.Time, requested bool, rcpts ...string) TrackedMessage {
	m := TrackedMessage{MessageID: "<t1@a.example>", Sender: "Alice@A.example", DispatchedRequested: requested, Sent: sent}
	for _, r := range rcpts {
		tr := TrackedRecipient{Address: r, ProcessedDeadline: sent.Add(time.Hour)}
		if requested {
			tr.DispatchedDeadline = sent.Add(2 * time.Hour)
		}
		m.Recipients = append(m.Recipients, tr)
	}
	return m
}

func TestTrackingCRUDAndRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	sent := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	m := trackTestMessage(sent, true, "bob@B.example", "BOB@b.example", "carol@c.example")
	m.Recipients = append(m.Recipients, TrackedRecipient{Address: "dan@d.example", State: TrackFailed, OutcomeBy: "agent",
		Reason: "no trusted\r\ncertificate"})
	tm, err := s.TrackMessage(ctx, m)
	tcheck(t, err, "track")
	if len(tm.Recipients) != 3 || tm.Recipients[0].Address != "bob@b.example" || tm.Sender != "alice@a.example" {
		t.Fatalf("tracked %+v", tm)
	}
	if r := tm.Recipients[2]; r.Outcome != OutcomeFailure || r.Reason != "no trusted certificate" || !r.Deadline.IsZero() {
		t.Fatalf("failed recipient %+v", r)
	}
	if !tm.Recipients[0].Deadline.Equal(sent.Add(time.Hour)) {
		t.Fatalf("deadline %v", tm.Recipients[0].Deadline)
	}

	// A processed notice for bob moves him on, to the dispatched deadline.
	_, r, _, err := s.UpdateTracked(ctx, TrackRef{MessageID: "<t1@a.example>", Recipients: []string{"nobody@b.example", "Bob@b.example"}},
		sent.Add(time.Minute), func(m TrackedMessage, r TrackedRecipient) TrackChange {
			if r.State != TrackQueued || !m.DispatchedRequested {
				t.Errorf("decide saw %+v %+v", m, r)
			}
			return TrackChange{Kind: "processed", State: TrackProcessed, Notice: "withheld"}
		})
	tcheck(t, err, "update")
	if r.State != TrackProcessed || !r.Deadline.Equal(sent.Add(2*time.Hour)) {
		t.Fatalf("after processed: %+v", r)
	}
	// Unknown message or recipient.
	_, _, _, err = s.UpdateTracked(ctx, TrackRef{MessageID: "<t1@a.example>", Recipients: []string{"eve@b.example"}}, sent,
		func(TrackedMessage, TrackedRecipient) TrackChange {
			t.Error("decide called")
			return TrackChange{Skip: true}
		})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown recipient: %v", err)
	}
	_, _, _, err = s.UpdateTracked(ctx, TrackRef{MessageID: "<t1@a.example>", Recipients: []string{"bob@b.example"}, Sender: "mallory@a.example"}, sent,
		func(TrackedMessage, TrackedRecipient) TrackChange { return TrackChange{Skip: true} })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("other sender: %v", err)
	}

	// Deadlines: carol at +1h, bob at +2h.
	ids, err := s.DueTracked(ctx, sent.Add(90*time.Minute), 0)
	tcheck(t, err, "due")
	if len(ids) != 1 || ids[0] != tm.Recipients[1].ID {
		t.Fatalf("due %v, want carol %d", ids, tm.Recipients[1].ID)
	}
	_, _, _, err = s.UpdateTracked(ctx, TrackRef{RecipientID: ids[0]}, sent.Add(90*time.Minute), func(_ TrackedMessage, r TrackedRecipient) TrackChange {
		return TrackChange{Kind: "timeout", State: TrackFailed, Outcome: OutcomeFailure, OutcomeBy: "timeout",
			Reason: "no processed MDN within 1h0m0s", NoticePending: true, Notice: "dsn"}
	})
	tcheck(t, err, "timeout")

	// Everything survives a restart.
	s.Close()
	s = openTest(t, dir)
	pend, err := s.PendingNotices(ctx, 0)
	tcheck(t, err, "pending")
	if len(pend) != 1 || len(pend[0].Recipients) != 1 || pend[0].Recipients[0].Address != "carol@c.example" {
		t.Fatalf("pending %+v", pend)
	}
	tcheck(t, s.NoticesDone(ctx, []int64{pend[0].Recipients[0].ID}, sent.Add(91*time.Minute)), "done")
	if pend, _ := s.PendingNotices(ctx, 0); len(pend) != 0 {
		t.Fatalf("still pending %+v", pend)
	}
	ids, _ = s.DueTracked(ctx, sent.Add(3*time.Hour), 0)
	if len(ids) != 1 || ids[0] != tm.Recipients[0].ID {
		t.Fatalf("due after restart %v", ids)
	}
	got, err := s.TrackedMessage(ctx, "<t1@a.example>")
	tcheck(t, err, "read")
	if len(got.Recipients) != 3 {
		t.Fatalf("read %+v", got)
	}
	bob, carol := got.Recipients[0], got.Recipients[1]
	if len(bob.Events) != 2 || bob.Events[0].Kind != "queued" || bob.Events[1].PreviousState != TrackQueued ||
		bob.Events[1].State != TrackProcessed || bob.Events[1].Notice != "withheld" {
		t.Fatalf("bob events %+v", bob.Events)
	}
	if carol.State != TrackFailed || carol.Outcome != OutcomeFailure || carol.Notice != NoticeDone || carol.OutcomeBy != "timeout" {
		t.Fatalf("carol %+v", carol)
	}
	list, err := s.TrackedMessages(ctx, TrackFilter{Sender: "ALICE@a.example", State: TrackFailed})
	tcheck(t, err, "list")
	if len(list) != 1 {
		t.Fatalf("list %+v", list)
	}
	for _, f := range []TrackFilter{{Sender: "bob@a.example"}, {State: TrackDispatched}, {Since: sent.Add(time.Second)}, {Until: sent}} {
		if list, err := s.TrackedMessages(ctx, f); err != nil || len(list) != 0 {
			t.Fatalf("filter %+v: %v %+v", f, err, list)
		}
	}
	if _, err := s.TrackedMessages(ctx, TrackFilter{State: "lost"}); err == nil {
		t.Fatal("unknown state accepted")
	}
	if _, err := s.TrackedMessage(ctx, "<none@a.example>"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown message: %v", err)
	}
	// Not purged while bob has no outcome.
	if n, err := s.PurgeTracked(ctx, sent.Add(24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("purge: %d %v", n, err)
	}
}

func TestTrackedRelayedFromQueue(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	now := time.Now()
	qid, err := s.Enqueue(ctx, QueuedMessage{MessageID: "<t1@a.example>", MailFrom: "alice@a.example", Data: []byte("x"),
		Recipients: []QueuedRecipient{{Address: "Bob@b.example"}, {Address: "carol@c.example"}}})
	tcheck(t, err, "enqueue")
	_, err = s.TrackMessage(ctx, trackTestMessage(now, false, "bob@b.example", "carol@c.example"))
	tcheck(t, err, "track")
	rel, err := s.TrackedRelayed(ctx, now.Add(-time.Hour), 0)
	tcheck(t, err, "relayed")
	if len(rel) != 0 {
		t.Fatalf("relayed before delivery: %+v", rel)
	}
	// Enqueue dates the message by its own clock, after now.
	claimed, err := s.ClaimDue(ctx, time.Now(), 10, Backoff{})
	tcheck(t, err, "claim")
	if len(claimed) != 1 || claimed[0].ID != qid {
		t.Fatalf("claimed %+v", claimed)
	}
	bob := recipientByAddress(t, claimed[0], "Bob@b.example")
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: bob.ID, State: StateDelivered, Code: 250, Enhanced: "2.0.0",
		Text: "ok", RemoteMTA: "mx.b.example"}}), "delivered")
	rel, err = s.TrackedRelayed(ctx, now.Add(-time.Hour), 0)
	tcheck(t, err, "relayed")
	if len(rel) != 1 || rel[0].RemoteMTA != "mx.b.example" || rel[0].Status != "250 2.0.0 ok" {
		t.Fatalf("relayed %+v", rel)
	}
	_, r, _, err := s.UpdateTracked(ctx, TrackRef{RecipientID: rel[0].RecipientID}, now, func(TrackedMessage, TrackedRecipient) TrackChange {
		return TrackChange{Kind: "relayed", State: TrackRelayed, Relayed: true}
	})
	tcheck(t, err, "mark relayed")
	if r.Address != "bob@b.example" || r.Relayed.IsZero() {
		t.Fatalf("relayed recipient %+v", r)
	}
	if rel, _ := s.TrackedRelayed(ctx, now.Add(-time.Hour), 0); len(rel) != 0 {
		t.Fatalf("relayed twice: %+v", rel)
	}
}

func TestAPITokens(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	if _, _, err := s.CreateAPIToken(ctx, "scoped to nowhere", "nowhere.example"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token for an unknown domain: %v", err)
	}
	tok, secret, err := s.CreateAPIToken(ctx, "ehr one")
	tcheck(t, err, "create")
	if _, _, err := s.CreateAPIToken(ctx, "ehr one"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	got, err := s.CheckAPIToken(ctx, secret)
	tcheck(t, err, "check")
	if got.ID != tok.ID || got.Name != "ehr one" {
		t.Fatalf("check %+v", got)
	}
	last := "A" // the secret with its last character changed
	if strings.HasSuffix(secret, last) {
		last = "B"
	}
	for _, bad := range []string{"", secret + "x", secret[:len(secret)-1] + last, hashToken(secret)} {
		if _, err := s.CheckAPIToken(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Fatalf("token %q accepted: %v", bad, err)
		}
	}
	var n int
	tcheck(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_tokens WHERE hash = ? OR name = ?`, secret, secret).Scan(&n), "count")
	if n != 0 {
		t.Fatal("token stored in clear")
	}
	list, err := s.APITokens(ctx)
	tcheck(t, err, "list")
	if len(list) != 1 {
		t.Fatalf("list %+v", list)
	}
	tcheck(t, s.RemoveAPIToken(ctx, "ehr one"), "remove")
	if _, err := s.CheckAPIToken(ctx, secret); !errors.Is(err, ErrNotFound) {
		t.Fatal("removed token still valid")
	}
	if err := s.RemoveAPIToken(ctx, "ehr one"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
}

func TestWebhookOutbox(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	secret := []byte("0123456789abcdef secret")
	if _, err := s.AddWebhook(ctx, "a.example", "ftp://x", secret); err == nil {
		t.Fatal("ftp URL accepted")
	}
	if _, err := s.AddWebhook(ctx, "a.example", "https://ehr.example/hook", []byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
	wd, err := s.AddWebhook(ctx, "A.example", "https://ehr.example/hook", secret)
	tcheck(t, err, "add domain webhook")
	wa, err := s.AddWebhook(ctx, "alice@a.example", "https://alice.example/hook", secret)
	tcheck(t, err, "add address webhook")
	if _, err := s.AddWebhook(ctx, "a.example", "https://ehr.example/hook", secret); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	_, err = s.AddWebhook(ctx, "other.example", "https://other.example/hook", secret)
	tcheck(t, err, "add other webhook")

	now := time.Now()
	_, err = s.TrackMessage(ctx, trackTestMessage(now, false, "bob@b.example"))
	tcheck(t, err, "track")
	step := func(kind string, st TrackState) {
		t.Helper()
		_, _, _, err := s.UpdateTracked(ctx, TrackRef{MessageID: "<t1@a.example>", Recipients: []string{"bob@b.example"}}, now,
			func(TrackedMessage, TrackedRecipient) TrackChange { return TrackChange{Kind: kind, State: st} })
		tcheck(t, err, kind)
	}
	step("relayed", TrackRelayed)
	step("duplicate", "") // no transition: no delivery
	step("processed", TrackProcessed)

	// Each webhook gets the first pending event of the message only.
	due, err := s.DueWebhookDeliveries(ctx, now, 0)
	tcheck(t, err, "due")
	if len(due) != 2 {
		t.Fatalf("due %+v", due)
	}
	for _, d := range due {
		if d.Event.Kind != "queued" || string(d.Secret) != string(secret) || d.MessageID != "<t1@a.example>" ||
			d.Recipient != "bob@b.example" || (d.Webhook.ID != wd.ID && d.Webhook.ID != wa.ID) {
			t.Fatalf("delivery %+v", d)
		}
	}
	// The domain webhook fails once: its next event waits, the address
	// webhook goes on.
	tcheck(t, s.WebhookRetry(ctx, due[0].ID, now, now.Add(time.Minute), "500 boom"), "retry")
	tcheck(t, s.WebhookDelivered(ctx, due[1].ID, now), "delivered")
	due, err = s.DueWebhookDeliveries(ctx, now, 0)
	tcheck(t, err, "due")
	if len(due) != 1 || due[0].Event.Kind != "relayed" || due[0].Webhook.ID != wa.ID {
		t.Fatalf("due after retry %+v", due)
	}

	// Pending deliveries survive a restart.
	s.Close()
	s = openTest(t, dir)
	due, err = s.DueWebhookDeliveries(ctx, now.Add(2*time.Minute), 0)
	tcheck(t, err, "due after restart")
	kinds := map[int64]string{}
	for _, d := range due {
		kinds[d.Webhook.ID] = d.Event.Kind
	}
	if len(due) != 2 || kinds[wd.ID] != "queued" || kinds[wa.ID] != "relayed" {
		t.Fatalf("due after restart %+v", due)
	}
	hooks, err := s.Webhooks(ctx)
	tcheck(t, err, "list")
	if len(hooks) != 3 {
		t.Fatalf("webhooks %+v", hooks)
	}
	for _, h := range hooks {
		if h.ID == wd.ID && h.Pending != 3 {
			t.Fatalf("pending of %+v", h)
		}
	}
	// Abandoned deliveries no longer block the message's next events.
	tcheck(t, s.WebhookRetry(ctx, kindDelivery(due, wd.ID), now, time.Time{}, "gone"), "abandon")
	due, _ = s.DueWebhookDeliveries(ctx, now.Add(2*time.Minute), 0)
	if kinds := deliveryKinds(due, wd.ID); len(kinds) != 1 || kinds[0] != "relayed" {
		t.Fatalf("after abandon %v", kinds)
	}
	tcheck(t, s.RemoveWebhook(ctx, wd.ID), "remove")
	if err := s.RemoveWebhook(ctx, wd.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	due, _ = s.DueWebhookDeliveries(ctx, now.Add(2*time.Minute), 0)
	if len(deliveryKinds(due, wd.ID)) != 0 {
		t.Fatal("removed webhook still has deliveries")
	}
}

func kindDelivery(ds []WebhookDelivery, webhook int64) int64 {
	for _, d := range ds {
		if d.Webhook.ID == webhook {
			return d.ID
		}
	}
	return 0
}

func deliveryKinds(ds []WebhookDelivery, webhook int64) []string {
	var out []string
	for _, d := range ds {
		if d.Webhook.ID == webhook {
			out = append(out, d.Event.Kind)
		}
	}
	return out
}

func TestTrackMessagesBatch(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	now := time.Now()
	good := trackTestMessage(now, false, "bob@b.example")
	bad := trackTestMessage(now, false, "not an address")
	bad.MessageID = "<t2@a.example>"
	out, errs, err := s.TrackMessages(ctx, []TrackedMessage{bad, good, {MessageID: "<t3@a.example>"}})
	tcheck(t, err, "batch")
	if errs[0] == nil || errs[1] != nil || errs[2] == nil || out[1].ID == 0 {
		t.Fatalf("errs %v out %+v", errs, out)
	}
	if _, err := s.TrackedMessage(ctx, "<t2@a.example>"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bad message stored: %v", err)
	}
	us, err := s.UpdateTrackedMany(ctx, []TrackRef{{MessageID: "<t1@a.example>", Recipients: []string{"eve@b.example"}},
		{MessageID: "<t1@a.example>", Recipients: []string{"bob@b.example"}}}, now,
		func(i int, _ TrackedMessage, _ TrackedRecipient) TrackChange {
			return TrackChange{Kind: "relayed", State: TrackRelayed}
		})
	tcheck(t, err, "update many")
	if !errors.Is(us[0].Err, ErrNotFound) || us[1].Err != nil || us[1].Recipient.State != TrackRelayed {
		t.Fatalf("updates %+v", us)
	}
}
