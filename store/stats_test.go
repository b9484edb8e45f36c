package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// certExpiring makes a self-signed certificate for an address that
// expires at notAfter.
func certExpiring(t *testing.T, email string, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "generate key")
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: email},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter, EmailAddresses: []string{email},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	tcheck(t, err, "create certificate")
	c, err := x509.ParseCertificate(der)
	tcheck(t, err, "parse certificate")
	return c, key
}

func TestStats(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	now := time.Now().Truncate(time.Millisecond)
	day := 24 * time.Hour
	q := StatsQuery{Now: now, TrackedSince: now.Add(-day), ExpiringBefore: now.Add(30 * day)}

	// An empty store: every state present at zero, no times.
	st, err := s.Stats(ctx, q)
	tcheck(t, err, "stats of an empty store")
	if len(st.QueueRecipients) != 5 || len(st.Tracked) != 5 || st.QueueRecipients[StateQueued] != 0 ||
		!st.OldestQueued.IsZero() || !st.EarliestCertExpiry.IsZero() || st.Deferred != 0 || st.CertsExpiring != 0 || len(st.Bundles) != 0 {
		t.Fatalf("empty store: %+v", st)
	}

	// Certificates: with a key in 10 days (expiring) and in 60 (not); one
	// without a key in 5 days (earliest, not counted as expiring: hisp
	// holds no key of it); one with a key that expired yesterday (neither).
	_, err = s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	for _, c := range []struct {
		addr    string
		expires time.Duration
		withKey bool
	}{{"soon@a.example", 10 * day, true}, {"later@a.example", 60 * day, true}, {"nokey@a.example", 5 * day, false},
		{"expired@a.example", -day, true}} {
		_, err := s.AddAddress(ctx, c.addr)
		tcheck(t, err, "add address")
		cert, key := certExpiring(t, c.addr, now.Add(c.expires))
		if c.withKey {
			_, err = s.AddCertificate(ctx, c.addr, cert, nil, key)
		} else {
			_, err = s.AddCertificate(ctx, c.addr, cert, nil, nil)
		}
		tcheck(t, err, "add certificate")
	}

	// Queue: message 1 (two hours old) with one recipient delivered, one
	// failed, one waiting again after a 4xx; message 2 (an hour old) with
	// one recipient being delivered.
	m1 := testMessage(1, "x@b.example", "y@b.example", "z@b.example")
	m1.Created = now.Add(-2 * time.Hour)
	id1, err := s.Enqueue(ctx, m1)
	tcheck(t, err, "enqueue 1")
	claimed, err := s.ClaimDue(ctx, now, 10, Backoff{})
	tcheck(t, err, "claim")
	if len(claimed) != 1 {
		t.Fatalf("claimed %d messages", len(claimed))
	}
	c1 := claimed[0]
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{
		{ID: recipientByAddress(t, c1, "x@b.example").ID, State: StateDelivered, Code: 250},
		{ID: recipientByAddress(t, c1, "y@b.example").ID, State: StateFailed, Code: 550},
		{ID: recipientByAddress(t, c1, "z@b.example").ID, State: StateQueued, Code: 451},
	}), "update recipients")
	m2 := testMessage(2, "w@b.example")
	m2.Created = now.Add(-time.Hour)
	_, err = s.Enqueue(ctx, m2)
	tcheck(t, err, "enqueue 2")
	if claimed, err := s.ClaimDue(ctx, now, 10, Backoff{}); err != nil || len(claimed) != 1 || claimed[0].Recipients[0].Address != "w@b.example" {
		t.Fatalf("claim of message 2: %v %+v", err, claimed)
	}

	_, err = s.Enqueue(ctx, QueuedMessage{MessageID: "<d@a.example>", MailFrom: "soon@a.example", Plain: true,
		Recipients: []QueuedRecipient{{Address: "v@c.example", NextAttempt: now.Add(time.Minute)}},
		Data:       []byte("Subject: d\r\n\r\nd\r\n"), Created: now})
	tcheck(t, err, "add deferred")

	// Tracking: a message sent two days ago (outside the window) and one
	// an hour ago with a queued and a failed recipient.
	_, err = s.TrackMessage(ctx, trackTestMessage(now.Add(-2*day), false, "old@b.example"))
	tcheck(t, err, "track old message")
	recent := trackTestMessage(now.Add(-time.Hour), false, "bob@b.example")
	recent.MessageID = "<t2@a.example>"
	recent.Recipients = append(recent.Recipients, TrackedRecipient{Address: "dan@d.example", State: TrackFailed,
		OutcomeBy: "agent", Reason: "no trusted certificate"})
	_, err = s.TrackMessage(ctx, recent)
	tcheck(t, err, "track recent message")

	// Bundles: one refreshed, one whose last refresh failed after an
	// earlier success, one never fetched.
	good, err := s.AddBundle(ctx, Bundle{Domain: "a.example", Location: "https://bundles.example/good.p7b", Direction: DirectionBoth, Refresh: time.Hour})
	tcheck(t, err, "add bundle")
	bad, err := s.AddBundle(ctx, Bundle{Domain: "a.example", Location: "/etc/hisp/bad.p7b", Direction: DirectionIn, Refresh: time.Hour})
	tcheck(t, err, "add bundle")
	fresh, err := s.AddBundle(ctx, Bundle{Domain: "a.example", Location: "https://bundles.example/new.p7b", Direction: DirectionOut, Refresh: time.Hour})
	tcheck(t, err, "add bundle")
	tcheck(t, s.SetBundleAnchors(ctx, good.ID, nil, "sum", now.Add(-time.Minute)), "bundle refreshed")
	tcheck(t, s.SetBundleAnchors(ctx, bad.ID, nil, "sum", now.Add(-3*time.Hour)), "bundle refreshed once")
	tcheck(t, s.BundleFailed(ctx, bad.ID, now.Add(-2*time.Minute), "fetch: no such file"), "bundle failed")

	st, err = s.Stats(ctx, q)
	tcheck(t, err, "stats")
	wantQueue := map[RecipientState]int64{StateQueued: 1, StateDelivering: 1, StateDelivered: 1, StateFailed: 1, StateBounced: 0}
	for k, v := range wantQueue {
		if st.QueueRecipients[k] != v {
			t.Errorf("queue %s = %d, want %d (%v)", k, st.QueueRecipients[k], v, st.QueueRecipients)
		}
	}
	if !st.OldestQueued.Equal(m1.Created) {
		t.Errorf("oldest queued %v, want %v", st.OldestQueued, m1.Created)
	}
	if st.Deferred != 1 {
		t.Errorf("deferred %d", st.Deferred)
	}
	wantTracked := map[TrackState]int64{TrackQueued: 1, TrackFailed: 1, TrackRelayed: 0, TrackProcessed: 0, TrackDispatched: 0}
	for k, v := range wantTracked {
		if st.Tracked[k] != v {
			t.Errorf("tracked %s = %d, want %d (%v)", k, st.Tracked[k], v, st.Tracked)
		}
	}
	if st.CertsExpiring != 1 {
		t.Errorf("expiring certificates %d, want 1", st.CertsExpiring)
	}
	if want := now.Add(5 * day).Truncate(time.Second); !st.EarliestCertExpiry.Equal(want) {
		t.Errorf("earliest expiry %v, want %v", st.EarliestCertExpiry, want)
	}
	if len(st.Bundles) != 3 {
		t.Fatalf("bundles %+v", st.Bundles)
	}
	b0, b1, b2 := st.Bundles[0], st.Bundles[1], st.Bundles[2]
	if b0.ID != good.ID || b0.Failed || !b0.LastSuccess.Equal(now.Add(-time.Minute)) || b0.Location != good.Location || b0.Domain != "a.example" {
		t.Errorf("refreshed bundle %+v", b0)
	}
	if b1.ID != bad.ID || !b1.Failed || !b1.LastSuccess.Equal(now.Add(-3*time.Hour)) || !b1.LastAttempt.Equal(now.Add(-2*time.Minute)) {
		t.Errorf("failed bundle %+v", b1)
	}
	if b2.ID != fresh.ID || b2.Failed || !b2.LastSuccess.IsZero() || !b2.LastAttempt.IsZero() || b2.Created.IsZero() {
		t.Errorf("new bundle %+v", b2)
	}

	// The waiting recipient of message 1 is delivered: the oldest still
	// to deliver is message 2.
	claimed, err = s.ClaimDue(ctx, now.Add(day), 10, Backoff{})
	tcheck(t, err, "claim again")
	for _, m := range claimed {
		if m.ID == id1 {
			tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: m.Recipients[0].ID, State: StateDelivered, Code: 250}}), "deliver z")
		}
	}
	st, err = s.Stats(ctx, q)
	tcheck(t, err, "stats after delivery")
	if !st.OldestQueued.Equal(m2.Created) || st.QueueRecipients[StateDelivered] != 2 {
		t.Errorf("after delivery: oldest %v (want %v), queue %v", st.OldestQueued, m2.Created, st.QueueRecipients)
	}
}
