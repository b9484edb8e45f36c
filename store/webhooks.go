package store

// Webhooks: a URL per sender domain or address that hears of every state
// change of the sender's tracked messages. Deliveries are rows of
// webhook_outbox, written in the transaction of the event (insertTrackEvent),
// so a change is never lost to a stop; a worker sends them in order per
// webhook and message (DueWebhookDeliveries) and records each attempt.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Webhook is a configured endpoint; its secret is read with WebhookSecret.
type Webhook struct {
	ID      int64
	Target  string // a domain or an address, lower case
	URL     string
	Created time.Time
	Pending int64 // deliveries waiting (Webhooks only)
}

// WebhookDelivery is one event due at one webhook, with what the body needs.
type WebhookDelivery struct {
	ID       int64
	Webhook  Webhook
	Secret   []byte
	Attempts int // attempts so far
	Created  time.Time
	Event    TrackEvent
	// The message and recipient the event is about.
	TrackedID           int64
	MessageID           string
	Sender              string
	Recipient           string
	DispatchedRequested bool
	Sent                time.Time
}

func webhookAAD(target, url string) string { return "hisp webhook secret v1 " + target + " " + url }

func (s *Store) sealSecret(secret []byte, aad string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte{keyFormatV1}, nonce...)
	return s.aead.Seal(out, nonce, secret, []byte(aad)), nil
}

func (s *Store) openSecret(sealed []byte, aad string) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns || sealed[0] != keyFormatV1 {
		return nil, errors.New("decrypt webhook secret: unknown format")
	}
	b, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("decrypt webhook secret (wrong master.key?): %w", err)
	}
	return b, nil
}

// normalizeWebhookTarget accepts an address or a domain.
func normalizeWebhookTarget(target string) (string, error) {
	if strings.Contains(target, "@") {
		return normalizeTrackAddress(target)
	}
	return NormalizeDomain(target)
}

// AddWebhook adds an endpoint for the messages of a sender address or of
// every sender of a domain. The URL must be http or https; the secret keys
// the HMAC-SHA256 signature of each body and is kept encrypted under the
// master key. An existing target and URL pair gives ErrExists (wrapped).
func (s *Store) AddWebhook(ctx context.Context, target, rawURL string, secret []byte) (Webhook, error) {
	t, err := normalizeWebhookTarget(target)
	if err != nil {
		return Webhook{}, fmt.Errorf("add webhook: %w", err)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Webhook{}, fmt.Errorf("add webhook: URL %q: want http:// or https://", rawURL)
	}
	if len(secret) < 16 {
		return Webhook{}, errors.New("add webhook: secret shorter than 16 bytes")
	}
	sealed, err := s.sealSecret(secret, webhookAAD(t, rawURL))
	if err != nil {
		return Webhook{}, fmt.Errorf("add webhook: %w", err)
	}
	w := Webhook{Target: t, URL: rawURL, Created: fromMillis(millis(time.Now()))}
	err = s.tx(ctx, func(tx *txn) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM webhooks WHERE target = ? AND url = ?`, t, rawURL); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("webhook %s %s: %w", t, rawURL, ErrExists)
		}
		return tx.QueryRowContext(ctx, `INSERT INTO webhooks (target, url, secret, created) VALUES (?, ?, ?, ?) RETURNING id`,
			t, rawURL, sealed, millis(w.Created)).Scan(&w.ID)
	})
	if err != nil {
		return Webhook{}, fmt.Errorf("add webhook: %w", err)
	}
	return w, nil
}

// Webhooks lists the endpoints with their pending deliveries.
func (s *Store) Webhooks(ctx context.Context) ([]Webhook, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT w.id, w.target, w.url, w.created,
		(SELECT COUNT(*) FROM webhook_outbox o WHERE o.webhook_id = w.id AND o.state = 'pending')
		FROM webhooks w ORDER BY w.target, w.id`)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	defer rows.Close()
	var out []Webhook
	for rows.Next() {
		var w Webhook
		var created int64
		if err := rows.Scan(&w.ID, &w.Target, &w.URL, &created, &w.Pending); err != nil {
			return nil, fmt.Errorf("list webhooks: %w", err)
		}
		w.Created = fromMillis(created)
		out = append(out, w)
	}
	return out, rows.Err()
}

// RemoveWebhook deletes an endpoint and its pending deliveries; ErrNotFound
// (wrapped) if there is none.
func (s *Store) RemoveWebhook(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhooks WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("remove webhook: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("remove webhook: %w", err)
	} else if n == 0 {
		return fmt.Errorf("webhook %d: %w", id, ErrNotFound)
	}
	return nil
}

// HasWebhooks reports whether any webhook is configured.
func (s *Store) HasWebhooks(ctx context.Context) (bool, error) {
	var any bool
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM webhooks)`).Scan(&any); err != nil {
		return false, fmt.Errorf("webhooks: %w", err)
	}
	return any, nil
}

// DueWebhookDeliveries returns up to limit pending deliveries due at now,
// each the oldest pending one of its webhook and message, so that a
// message's events reach an endpoint in order: a later one waits until the
// earlier is delivered or abandoned.
func (s *Store) DueWebhookDeliveries(ctx context.Context, now time.Time, limit int) ([]WebhookDelivery, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, `SELECT o.id, o.attempts, o.created, w.id, w.target, w.url, w.created, w.secret,
		`+trackEventColumns+`, m.id, m.message_id, m.sender, m.dispatched_requested, m.sent, r.recipient
		FROM webhook_outbox o
		JOIN webhooks w ON w.id = o.webhook_id
		JOIN tracking_events e ON e.id = o.event_id
		JOIN tracked_recipients r ON r.id = e.recipient_id
		JOIN tracked_messages m ON m.id = o.tracked_id
		WHERE o.state = 'pending' AND o.next_attempt <= ?
		AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.webhook_id = o.webhook_id
			AND p.tracked_id = o.tracked_id AND p.state = 'pending' AND p.id < o.id)
		ORDER BY o.next_attempt, o.id LIMIT ?`, millis(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due webhook deliveries: %w", err)
	}
	defer rows.Close()
	var out []WebhookDelivery
	for rows.Next() {
		var d WebhookDelivery
		var created, wcreated, sent, at int64
		var sealed []byte
		var prev, state, outcome string
		e := &d.Event
		if err := rows.Scan(&d.ID, &d.Attempts, &created, &d.Webhook.ID, &d.Webhook.Target, &d.Webhook.URL, &wcreated, &sealed,
			&e.ID, &e.RecipientID, &at, &e.Kind, &prev, &state, &outcome, &e.Detail, &e.Notice,
			&d.TrackedID, &d.MessageID, &d.Sender, &d.DispatchedRequested, &sent, &d.Recipient); err != nil {
			return nil, fmt.Errorf("due webhook deliveries: %w", err)
		}
		d.Created, d.Webhook.Created, d.Sent = fromMillis(created), fromMillis(wcreated), fromMillis(sent)
		e.At, e.PreviousState, e.State, e.Outcome = fromMillis(at), TrackState(prev), TrackState(state), Outcome(outcome)
		if d.Secret, err = s.openSecret(sealed, webhookAAD(d.Webhook.Target, d.Webhook.URL)); err != nil {
			return nil, fmt.Errorf("webhook %d: %w", d.Webhook.ID, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// WebhookDelivered records a delivery that the endpoint accepted.
func (s *Store) WebhookDelivered(ctx context.Context, id int64, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1,
		last_error = '', updated = ? WHERE id = ? AND state = 'pending'`, millis(now), id)
	if err != nil {
		return fmt.Errorf("record webhook delivery %d: %w", id, err)
	}
	return nil
}

// WebhookRetry records a failed attempt; the delivery is due again at next,
// or abandoned (kept, no longer tried) when next is zero.
func (s *Store) WebhookRetry(ctx context.Context, id int64, now, next time.Time, reason string) error {
	state := "pending"
	if next.IsZero() {
		state = "abandoned"
	}
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_outbox SET state = ?, attempts = attempts + 1, next_attempt = ?,
		last_error = ?, updated = ? WHERE id = ? AND state = 'pending'`,
		state, millis(next), oneLineText(reason), millis(now), id)
	if err != nil {
		return fmt.Errorf("record webhook attempt %d: %w", id, err)
	}
	return nil
}
