package track

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hisp-project/hisp/store"
)

// Webhook requests: POST of an Event as JSON with
//
//	Content-Type: application/json
//	X-Hisp-Event: <event id>
//	X-Hisp-Signature: sha256=<hex HMAC-SHA256 of the body under the webhook's secret>
//
// Any 2xx answer is success; anything else (or no answer within the
// timeout) is tried again with backoff, and given up after GiveUp. A
// message's events reach an endpoint one at a time, in order. Delivery is
// at least once: an endpoint that answers after hisp stopped waiting may
// see an event again, with the same id.

// SignatureHeader carries the signature of a webhook body.
const SignatureHeader = "X-Hisp-Signature"

// EventHeader carries the event id (the same as the body's id).
const EventHeader = "X-Hisp-Event"

// Event is the JSON body of a webhook request: one state change of one
// recipient of a tracked message. Fields may be added; receivers ignore
// those they do not know.
type Event struct {
	// ID is unique per hisp data directory: a receiver drops repeats by it.
	ID                  int64     `json:"id"`
	Type                string    `json:"type"` // "recipient.state"
	At                  time.Time `json:"at"`
	MessageID           string    `json:"message_id"`
	Sender              string    `json:"sender"`
	Recipient           string    `json:"recipient"`
	Sent                time.Time `json:"sent"`
	DispatchedRequested bool      `json:"dispatched_requested"`
	Kind                string    `json:"kind"` // what happened: queued, relayed, processed, timeout...
	PreviousState       string    `json:"previous_state"`
	State               string    `json:"state"`
	Outcome             string    `json:"outcome"` // "", success, failure
	Final               bool      `json:"final"`   // Outcome is set
	Detail              string    `json:"detail,omitempty"`
	Notice              string    `json:"notice,omitempty"`
}

// Sign returns the signature header value of a body: "sha256=" and the hex
// HMAC-SHA256 under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature header value against a body, in constant time.
func Verify(secret, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// WebhookOptions configure a Webhooks worker.
type WebhookOptions struct {
	Store WebhookStore // required; a *store.Store
	// Client sends the requests; a client with Timeout when nil.
	Client     *http.Client
	Timeout    time.Duration // one request; 10s
	RetryFirst time.Duration // wait after the first failure, doubling; 10s
	RetryMax   time.Duration // longest wait; 1h
	GiveUp     time.Duration // after this long since the event, stop trying; 72h
	Interval   time.Duration // look for due deliveries at least this often; 5s
	Workers    int           // requests at once; 4
	// Leader, if set, says whether this node runs the deliveries now: when
	// several nodes share one store, one node at a time does (a job
	// lease, store.Job); nil runs it always.
	Leader func(context.Context) bool
	Now    func() time.Time
	Logger *slog.Logger
}

// Webhooks delivers the webhook outbox.
type Webhooks struct {
	opts WebhookOptions
	st   WebhookStore
	log  *slog.Logger
	wake chan struct{}
	// idle is set while no webhook is configured: Wake then does nothing
	// (the tracker calls it on every change), and Run looks once per
	// interval, which also finds a webhook added meanwhile.
	idle atomic.Bool
}

// NewWebhooks returns a worker; Run starts it.
func NewWebhooks(opts WebhookOptions) *Webhooks {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.RetryFirst <= 0 {
		opts.RetryFirst = 10 * time.Second
	}
	if opts.RetryMax < opts.RetryFirst {
		opts.RetryMax = max(time.Hour, opts.RetryFirst)
	}
	if opts.GiveUp <= 0 {
		opts.GiveUp = 72 * time.Hour
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Webhooks{opts: opts, st: opts.Store, log: opts.Logger, wake: make(chan struct{}, 1)}
}

// Wake makes Run look for due deliveries now. It never blocks.
func (w *Webhooks) Wake() {
	if w.idle.Load() {
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends. A request in flight when ctx ends is let
// finish (up to the timeout) and recorded, so that a stop does not make an
// endpoint see an event twice.
func (w *Webhooks) Run(ctx context.Context) error {
	tick := time.NewTicker(w.opts.Interval)
	defer tick.Stop()
	for {
		if leads(ctx, w.opts.Leader) {
			if _, err := w.Deliver(ctx); err != nil && ctx.Err() == nil {
				w.log.Error("webhooks", "err", err)
			}
		}
		if any, err := w.st.HasWebhooks(ctx); err == nil {
			w.idle.Store(!any)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-w.wake:
		}
	}
}

// Deliver sends what is due until nothing is, and returns how many
// deliveries succeeded.
func (w *Webhooks) Deliver(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		due, err := w.st.DueWebhookDeliveries(ctx, w.opts.Now(), 100)
		if err != nil {
			return total, err
		}
		if len(due) == 0 {
			return total, nil
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, w.opts.Workers)
		ok := 0
		for _, d := range due {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if w.deliverOne(ctx, d) {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		total += ok
		if ok == 0 {
			// Everything due failed: wait for the retry times.
			return total, nil
		}
	}
	return total, nil
}

// deliverOne sends one delivery and records the outcome; it reports
// success.
func (w *Webhooks) deliverOne(ctx context.Context, d store.WebhookDelivery) bool {
	body, err := json.Marshal(EventOf(d))
	if err != nil {
		w.log.Error("webhook body", "err", err)
		return false
	}
	// The request outlives a stop, within its timeout: its outcome is
	// recorded either way.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.Timeout)
	defer cancel()
	err = w.post(rctx, d, body)
	now := w.opts.Now()
	rec := context.WithoutCancel(ctx)
	if err == nil {
		if err := w.st.WebhookDelivered(rec, d.ID, now); err != nil {
			w.log.Error("webhook delivered, not recorded", "delivery", d.ID, "err", err)
		}
		return true
	}
	next := now.Add(w.backoff(d.Attempts + 1))
	if now.Sub(d.Created) >= w.opts.GiveUp {
		next = time.Time{}
		w.log.Error("webhook delivery given up", "url", d.Webhook.URL, "event", d.Event.ID, "attempts", d.Attempts+1, "err", err)
	} else {
		w.log.Warn("webhook delivery failed", "url", d.Webhook.URL, "event", d.Event.ID, "attempt", d.Attempts+1,
			"retry", next.Format(time.RFC3339), "err", err)
	}
	if err := w.st.WebhookRetry(rec, d.ID, now, next, err.Error()); err != nil {
		w.log.Error("webhook attempt not recorded", "delivery", d.ID, "err", err)
	}
	return false
}

func (w *Webhooks) post(ctx context.Context, d store.WebhookDelivery, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hisp-webhook/1")
	req.Header.Set(EventHeader, fmt.Sprint(d.Event.ID))
	req.Header.Set(SignatureHeader, Sign(d.Secret, body))
	resp, err := w.opts.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

// backoff is the wait after attempt n: RetryFirst doubling to RetryMax,
// ±10 %.
func (w *Webhooks) backoff(n int) time.Duration {
	d := w.opts.RetryFirst
	for i := 1; i < n && d < w.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.opts.RetryMax)
	return d + time.Duration(float64(d)*0.1*(2*rand.Float64()-1))
}

// EventOf returns the body of a delivery.
func EventOf(d store.WebhookDelivery) Event {
	e := d.Event
	return Event{ID: e.ID, Type: "recipient.state", At: e.At.UTC(), MessageID: d.MessageID, Sender: d.Sender,
		Recipient: d.Recipient, Sent: d.Sent.UTC(), DispatchedRequested: d.DispatchedRequested, Kind: e.Kind,
		PreviousState: string(e.PreviousState), State: string(e.State), Outcome: string(e.Outcome),
		Final: e.Outcome != store.OutcomeNone, Detail: e.Detail, Notice: e.Notice}
}
