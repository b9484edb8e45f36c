package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Stats is a snapshot of the store's numbers for monitoring (the gauges of
// the admin listener's /metrics). It holds counts, times and bundle
// locations only: no address, message or key.
type Stats struct {
	// QueueRecipients counts the outbound queue's recipients by state;
	// every state is present, zero or not.
	QueueRecipients map[RecipientState]int64
	// OldestQueued is when the oldest message that still has a recipient
	// waiting for delivery or being delivered (queued, delivering) was
	// queued; zero when there is none.
	OldestQueued time.Time
	// Deferred counts the submissions deferred for some of their
	// recipients (certificate look-ups to try again).
	Deferred int64
	// Tracked counts the tracked recipients of messages sent at or after
	// StatsQuery.TrackedSince by state; every state is present.
	Tracked map[TrackState]int64
	// CertsExpiring counts the local certificates with a private key that
	// are still valid at StatsQuery.Now and expire before
	// StatsQuery.ExpiringBefore.
	CertsExpiring int64
	// EarliestCertExpiry is the earliest NotAfter of the local
	// certificates still valid at StatsQuery.Now (expired ones left in the
	// store would pin it in the past); zero when there is none.
	EarliestCertExpiry time.Time
	// Bundles are the trust bundles' refresh states, by id.
	Bundles []BundleStat
}

// BundleStat is the refresh state of one trust bundle.
type BundleStat struct {
	ID          int64
	Domain      string
	Location    string // as configured: a URL or a file name
	Created     time.Time
	LastAttempt time.Time // zero: never fetched
	LastSuccess time.Time // zero: never fetched successfully
	Failed      bool      // the last attempt failed
}

// StatsQuery is the moment and the windows of Stats.
type StatsQuery struct {
	Now            time.Time // time.Now() when zero
	TrackedSince   time.Time // tracked messages sent at or after this count
	ExpiringBefore time.Time // certificates expiring before this count as expiring
}

// Stats reads the monitoring numbers. It only reads, outside any
// transaction (no write lock), so the numbers are each current but not
// one snapshot. Each query walks an index or a small table: queue
// recipients by state (a scan of the covering index queue_recipients_due),
// the oldest still to deliver (that index's range of the queued and
// delivering states, then each message by id), tracked recipients of the
// window (tracked_messages_sent, then the recipients by message),
// certificates by NotAfter (certificates_not_after, migration 0008).
func (s *Store) Stats(ctx context.Context, q StatsQuery) (Stats, error) {
	if q.Now.IsZero() {
		q.Now = time.Now()
	}
	st := Stats{
		QueueRecipients: map[RecipientState]int64{StateQueued: 0, StateDelivering: 0, StateDelivered: 0, StateFailed: 0, StateBounced: 0},
		Tracked:         map[TrackState]int64{TrackQueued: 0, TrackRelayed: 0, TrackProcessed: 0, TrackDispatched: 0, TrackFailed: 0},
	}
	fail := func(what string, err error) (Stats, error) {
		return Stats{}, fmt.Errorf("store stats: %s: %w", what, err)
	}
	if err := countBy(ctx, s.db, `SELECT state, COUNT(*) FROM queue_recipients GROUP BY state`, nil,
		func(k string, n int64) { st.QueueRecipients[RecipientState(k)] = n }); err != nil {
		return fail("queue", err)
	}
	var oldest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(m.created) FROM queue_recipients r
		JOIN queue_messages m ON m.id = r.queue_id WHERE r.state IN ('queued', 'delivering')`).Scan(&oldest); err != nil {
		return fail("oldest queued", err)
	}
	st.OldestQueued = nullMillis(oldest)
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(DISTINCT queue_id) FROM queue_recipients WHERE state IN ('deferred', 'sealing')`).Scan(&st.Deferred); err != nil {
		return fail("deferred", err)
	}
	if err := countBy(ctx, s.db, `SELECT r.state, COUNT(*) FROM tracked_messages m
		JOIN tracked_recipients r ON r.tracked_id = m.id WHERE m.sent >= ? GROUP BY r.state`,
		[]any{millis(q.TrackedSince)}, func(k string, n int64) { st.Tracked[TrackState(k)] = n }); err != nil {
		return fail("tracking", err)
	}
	now := millis(q.Now)
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM certificates
		WHERE not_after >= ? AND not_after < ? AND private_key IS NOT NULL`, now, millis(q.ExpiringBefore)).Scan(&st.CertsExpiring); err != nil {
		return fail("expiring certificates", err)
	}
	var earliest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(not_after) FROM certificates WHERE not_after >= ?`, now).Scan(&earliest); err != nil {
		return fail("earliest certificate expiry", err)
	}
	st.EarliestCertExpiry = nullMillis(earliest)
	bs, err := queryAll(ctx, s.db, "bundles", func(r rowScanner) (BundleStat, error) {
		var b BundleStat
		var created int64
		var attempt, success sql.NullInt64
		var lastError string
		if err := r.Scan(&b.ID, &b.Domain, &b.Location, &created, &attempt, &success, &lastError); err != nil {
			return BundleStat{}, err
		}
		b.Created, b.LastAttempt, b.LastSuccess = fromMillis(created), nullMillis(attempt), nullMillis(success)
		b.Failed = lastError != ""
		return b, nil
	}, `SELECT id, domain, location, created, last_attempt, last_success, last_error FROM bundles ORDER BY id`)
	if err != nil {
		return fail("bundles", err)
	}
	st.Bundles = bs
	return st, nil
}

// countBy runs a query of (key, count) rows and hands each to set.
func countBy(ctx context.Context, q queryer, query string, args []any, set func(string, int64)) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		set(k, n)
	}
	return rows.Err()
}
