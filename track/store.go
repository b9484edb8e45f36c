package track

import (
	"context"
	"time"

	"github.com/hisp-project/hisp/store"
)

// Store is the part of the store a Tracker uses; *store.Store implements
// it, on SQLite and on PostgreSQL alike. Its decisions are made in store
// transactions, so several Trackers may share one store.
type Store interface {
	// Recording: a message sent, and the state changes of its recipients
	// (decide is called inside the transaction, once per reference).
	TrackMessage(ctx context.Context, m store.TrackedMessage) (store.TrackedMessage, error)
	UpdateTrackedMany(ctx context.Context, refs []store.TrackRef, now time.Time,
		decide func(int, store.TrackedMessage, store.TrackedRecipient) store.TrackChange) ([]store.TrackUpdate, error)

	// The periodic checks: relayed by the outbound queue, past their
	// deadline, finished long ago.
	TrackedRelayed(ctx context.Context, since time.Time, limit int) ([]store.RelayedRecipient, error)
	DueTracked(ctx context.Context, now time.Time, limit int) ([]int64, error)
	PurgeTracked(ctx context.Context, sentBefore time.Time) (int64, error)

	// Failure notices (DSNs) due to local senders, and their filing.
	PendingNotices(ctx context.Context, limit int) ([]store.TrackedMessage, error)
	NoticesDone(ctx context.Context, recipientIDs []int64, now time.Time) error
}

// WebhookStore is the part of the store a Webhooks worker uses: the
// webhook outbox. *store.Store implements it.
type WebhookStore interface {
	HasWebhooks(ctx context.Context) (bool, error)
	DueWebhookDeliveries(ctx context.Context, now time.Time, limit int) ([]store.WebhookDelivery, error)
	// WebhookDelivered records an accepted delivery; WebhookRetry a failed
	// attempt, due again at next, or abandoned when next is zero.
	WebhookDelivered(ctx context.Context, id int64, now time.Time) error
	WebhookRetry(ctx context.Context, id int64, now, next time.Time, reason string) error
}
