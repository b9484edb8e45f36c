package gateway

// Delivery tracking (issue 6, sending side) wired into the gateway: the
// track.Tracker records every message the submission queues (mail.Outbound),
// takes every MDN and DSN the agent opened and trusted (mail.inbound) and
// decides whether it reaches the sender's INBOX, takes the recipients out of
// queue DSNs whose sender already has the final word (mail.Bounce), and
// runs its timeout loop and the webhook worker beside the other
// components. The admin listener serves the tracking as JSON to holders of
// a bearer token (hisp token add).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/track"
)

// tracking is the gateway's tracker and webhook worker.
type tracking struct {
	tr    *track.Tracker
	hooks *track.Webhooks
	st    *store.Store
	log   *slog.Logger

	mu      sync.RWMutex
	deliver func(ctx context.Context, address, mailbox string, msg []byte, flags []string) error // the mail side's, once it runs
}

// startTracking makes the tracker and the webhook worker from the
// [notifications] configuration and starts both with run.
func (s *server) startTracking(run func(string, func(context.Context) error)) *tracking {
	n := s.cfg.Notifications
	tk := &tracking{st: s.st, log: s.log}
	tk.hooks = track.NewWebhooks(track.WebhookOptions{Store: s.st, Timeout: n.WebhookTimeout.Duration,
		RetryFirst: n.WebhookRetryFirst.Duration, RetryMax: n.WebhookRetryMax.Duration, GiveUp: n.WebhookGiveUp.Duration,
		Interval: n.CheckInterval.Duration, Logger: s.log, Leader: s.leader("webhooks")})
	tk.tr = track.New(track.Options{Store: s.st, Notify: tk.file, Hostname: s.cfg.Hostname,
		ProcessedTimeout: n.ProcessedTimeout.Duration, DispatchedTimeout: n.DispatchedTimeout.Duration,
		WithholdProcessed: n.WithholdProcessed, Interval: n.CheckInterval.Duration, Changed: tk.hooks.Wake, Logger: s.log,
		Leader: s.leader("tracking")})
	run("tracker", tk.tr.Run)
	run("webhooks", tk.hooks.Run)
	return tk
}

// attach gives the mail side the tracker, and the tracker the mail side's
// delivery to mailboxes (through IMAP, so that IDLE clients hear of a DSN
// at once). Nil-safe.
func (tk *tracking) attach(m *mail) {
	if tk == nil || m == nil {
		return
	}
	m.track = tk
	tk.mu.Lock()
	tk.deliver = m.deliver
	tk.mu.Unlock()
}

// file puts a tracker's DSN in a sender's INBOX.
func (tk *tracking) file(ctx context.Context, sender string, msg []byte) error {
	tk.mu.RLock()
	deliver := tk.deliver
	tk.mu.RUnlock()
	if deliver != nil {
		return deliver(ctx, sender, "INBOX", msg, nil)
	}
	_, err := tk.st.Deliver(ctx, sender, "INBOX", msg, nil, time.Now())
	return err
}

// trackSent is the tracking of a message the submission is about to
// queue, committed with it (so that no notice can come back first): its
// recipients to be queued, the ones dropped at submission (told by the
// submission's DSN) as failed, and whether it asked for timely and
// reliable delivery. Notices (hisp's own or a user's MDN) and null-sender
// mail are not tracked: nothing answers them; nil then. A failure is
// logged; the message is queued either way.
func (m *mail) trackSent(sub submitter, res *agent.OutboundResult, join bool) *store.TrackedMessage {
	if m.track == nil || res == nil || sub.mailFrom == "" {
		return nil
	}
	h := messageHeader(res.Message) // read once per submission
	if mdn.IsNotice(h.Get("Content-Type")) {
		return nil
	}
	sender := sub.address()
	tm := track.Message{MessageID: res.MessageID, Sender: sender, Join: join, Relay: sub.relay,
		RequestedDispatched: mdn.TimelyAndReliableRequested(strings.Join(h.Values("Disposition-Notification-Options"), "; "))}
	for _, r := range res.Recipients {
		if r.Accepted {
			tm.Recipients = append(tm.Recipients, r.Recipient)
		} else if !r.Status.Temporary() { // deferred recipients are not failed (seal.go)
			tm.Failed = append(tm.Failed, failedRecipient(r))
		}
	}
	if len(tm.Recipients) == 0 {
		return nil
	}
	rec, err := m.track.tr.Record(tm)
	if err != nil {
		m.log.Error("track sent message", "message", res.MessageID, "err", err)
		return nil
	}
	return &rec
}

// trackFailures records, in the tracking of their message, the recipients
// of a deferred submission that failed for good without being queued
// (those whose status keep selects): the sender hears of them by DSN, and an
// EHR through the API, as of any other recipient.
func (m *mail) trackFailures(ctx context.Context, sub submitter, res *agent.OutboundResult, keep func(agent.Status) bool) {
	if m.track == nil || res == nil || sub.mailFrom == "" || isNotice(res.Message) {
		return
	}
	tm := track.Message{MessageID: res.MessageID, Sender: sub.address(), Join: true}
	for _, r := range res.Recipients {
		if !r.Accepted && keep(r.Status) {
			tm.Failed = append(tm.Failed, failedRecipient(r))
		}
	}
	if len(tm.Failed) == 0 {
		return
	}
	if _, err := m.track.tr.Track(context.WithoutCancel(ctx), tm); err != nil {
		m.log.Error("track failed recipients", "message", res.MessageID, "err", err)
	}
}

// trackQueued reports the outcome of a tracking queued with its message.
func (m *mail) trackQueued(res store.EnqueueResult) {
	if m.track == nil {
		return
	}
	if res.TrackingErr != nil {
		m.log.Error("track sent message", "err", res.TrackingErr)
		return
	}
	if res.Tracked.ID != 0 {
		m.track.tr.Recorded()
	}
}

// trackNotice hands an MDN or DSN that the agent opened and trusted for at
// least one recipient to the tracker, with the verified inner From as its
// author. It reports whether the tracker kept the notice back: then it is
// recorded, not filed, and the message is accepted.
func (m *mail) trackNotice(ctx context.Context, res *agent.InboundResult) bool {
	if m.track == nil || res == nil || !res.Notification {
		return false
	}
	accepted := false
	for _, r := range res.Recipients {
		accepted = accepted || r.Accepted
	}
	if !accepted {
		return false
	}
	n, err := mdn.ParseNotice(res.Message)
	if err != nil {
		m.log.Warn("notice not understood, filed as it is", "message", res.MessageID, "from", res.From, "err", err)
		return false
	}
	n.From = res.From
	v, err := m.track.tr.Notification(ctx, n)
	if err != nil {
		m.log.Error("track notice", "message", res.MessageID, "err", err)
	}
	if v.File && !(v.Tracked && m.noMailbox(ctx, res)) {
		return false
	}
	m.log.Info("notice recorded, not filed", "message", res.MessageID, "from", res.From, "original", n.OriginalMessageID)
	return true
}

// noMailbox reports whether none of the accepted recipients of a message
// has a mailbox: the addresses a relay account (an EHR) sends for, whose
// notices the EHR follows through the tracking API and webhooks.
func (m *mail) noMailbox(ctx context.Context, res *agent.InboundResult) bool {
	for _, r := range res.Recipients {
		if !r.Accepted {
			continue
		}
		if _, err := m.st.Address(ctx, r.Recipient); !errors.Is(err, store.ErrNotFound) {
			return false
		}
	}
	return true
}

// Relayed records the recipients the next hop (or the local mailbox) just
// accepted as relayed, as the deliverer learns it (smtp.RelayRecorder):
// the event comes in order, before the MDNs, and reaches webhooks as the
// queued ▶ relayed transition. hisp's own MDNs and null-sender mail are
// not tracked.
func (m *mail) Relayed(ctx context.Context, msg store.QueuedMessage, rcpts []smtp.RecipientOutcome) {
	if m.track == nil || isNotifyOrigin(msg.Origin) || msg.MailFrom == "" {
		return
	}
	rs := make([]track.Relay, len(rcpts))
	for i, r := range rcpts {
		detail := fmt.Sprintf("%d %s %s", r.Reply.Code, r.Reply.Enhanced, r.Reply.Message)
		if r.RemoteMTA != "" {
			detail = r.RemoteMTA + ": " + detail
		}
		rs[i] = track.Relay{Recipient: r.Recipient, Detail: detail}
	}
	if err := m.track.tr.RelayedAll(ctx, msg.MessageID, rs); err != nil {
		m.log.Error("track relayed", "message", msg.MessageID, "err", err)
	}
}

// trackBounce returns the recipients a queue DSN may name: those whose
// sender has no final outcome yet (or whose outcome is this queue failure).
func (m *mail) trackBounce(ctx context.Context, msg store.QueuedMessage, rcpts []smtp.RecipientOutcome, final bool) []smtp.RecipientOutcome {
	if m.track == nil {
		return rcpts
	}
	var out []smtp.RecipientOutcome
	for _, r := range rcpts {
		reason := fmt.Sprintf("%d %s %s", r.Reply.Code, r.Reply.Enhanced, r.Reply.Message)
		if r.RemoteMTA != "" {
			reason = r.RemoteMTA + ": " + reason
		}
		ok, err := m.track.tr.Bounced(ctx, msg.MessageID, r.Recipient, reason, final)
		if err != nil {
			m.log.Error("track queue failure", "message", msg.MessageID, "recipient", r.Recipient, "err", err)
		}
		if ok {
			out = append(out, r)
		} else {
			m.log.Info("queue DSN leaves out a recipient the sender has the outcome of", "message", msg.MessageID, "recipient", r.Recipient)
		}
	}
	return out
}

// isNotice reports whether a message is an MDN or a DSN (mdn.IsNotice).
func isNotice(msg []byte) bool {
	h := messageHeader(msg)
	return mdn.IsNotice(h.Get("Content-Type"))
}

// messageHeader is the header of a message (what could be read of it).
func messageHeader(msg []byte) textproto.Header {
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	return h
}

// The HTTP API of the tracking is package web's.

// failedRecipient is the tracking of a recipient the agent refused.
func failedRecipient(r agent.RecipientResult) track.FailedRecipient {
	return track.FailedRecipient{Address: r.Recipient, Reason: fmt.Sprintf("%d %s %s", r.Status.Code, r.Status.Enhanced, r.Status.Reason)}
}
