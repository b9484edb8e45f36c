package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
)

// A recipient is deferred when the agent could not look its certificates
// up (a DNS or LDAP failure: 4xx). Its submission is kept, plain, and
// sealed again for it on the queue's retry schedule; once sealed it is
// queued like any submission, and when the schedule runs out the sender
// gets a failure DSN. Deferred recipients are not tracked for MDNs.
//
// A recipient deferred because its certificate's revocation status could
// not be established ([trust] revocation = "defer", agent.RevocationDeferred)
// is retried on the same schedule but for [trust] revocation_grace from the
// submission, however many attempts that takes, the last one at the end of
// the grace; then it fails.

// deferRecipients records the deferred recipients of a submission.
func (m *mail) deferRecipients(ctx context.Context, env envelopeLike, res *agent.OutboundResult) {
	var rcpts []string
	reason := ""
	revocation := false
	for _, r := range res.Recipients {
		if !r.Accepted && r.Status.Temporary() {
			rcpts = append(rcpts, r.Recipient)
			reason = r.Status.String()
			revocation = revocation || r.Status.Enhanced == agent.RevocationDeferred
		}
	}
	if len(rcpts) == 0 {
		return
	}
	now := m.now()
	_, err := m.st.AddDeferred(context.WithoutCancel(ctx), store.Deferred{MessageID: res.MessageID, MailFrom: env.from(),
		User: env.user(), Recipients: rcpts, Data: res.Message, Attempts: 1, Created: now,
		NextAttempt: m.nextTry(now, now, 1, revocation), LastError: reason})
	if err != nil {
		// Not kept: the sender must know now.
		m.log.Error("defer recipients", "message", res.MessageID, "err", err)
		m.reportDropped(context.WithoutCancel(ctx), env, res, agent.Status.Temporary)
		return
	}
	m.log.Info("recipients deferred", "message", res.MessageID, "recipients", rcpts, "reason", reason)
}

// revocationDeferred reports whether a recipient of res was deferred for a
// revocation outage.
func revocationDeferred(res *agent.OutboundResult) bool {
	for _, r := range res.Recipients {
		if r.Status.Enhanced == agent.RevocationDeferred {
			return true
		}
	}
	return false
}

// deferAll takes a submission none of whose recipients could be sealed to
// now, some for a revocation outage: the deferred ones are kept and retried,
// the sender gets its Sent copy and a DSN for any refused for good, and the
// client 250.
func (m *mail) deferAll(ctx context.Context, env smtp.Envelope, res *agent.OutboundResult) *smtp.Reply {
	m.deferRecipients(ctx, smtpEnv{env}, res)
	sender := senderOf(smtpEnv{env})
	if env.RelayDomains == nil {
		if err := m.deliver(ctx, sender, "Sent", res.Message, []string{`\Seen`}); err != nil {
			m.log.Warn("file Sent copy", "user", sender, "err", err)
		}
	}
	m.trackFailures(ctx, smtpEnv{env}, res, permanent)
	m.reportDropped(ctx, smtpEnv{env}, res, permanent)
	return nil
}

// runDeferred retries due deferred submissions until ctx ends.
func (m *mail) runDeferred(ctx context.Context) error {
	every := min(m.retry.Delay(1), 30*time.Second)
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		m.retryDeferred(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// retryDeferred seals the due deferred submissions again.
func (m *mail) retryDeferred(ctx context.Context) {
	due, err := m.st.DueDeferred(ctx, m.now(), 20)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("deferred submissions", "err", err)
		}
		return
	}
	for _, d := range due {
		if ctx.Err() != nil {
			return
		}
		m.retryOne(ctx, d)
	}
}

func (m *mail) retryOne(ctx context.Context, d store.Deferred) {
	env := deferredEnv{d}
	res, err := m.agent.Outbound(ctx, agent.Envelope{MailFrom: d.MailFrom, Recipients: d.Recipients, User: d.User, RemoteAddr: "deferred"}, d.Data)
	var ae *agent.Error
	switch {
	case errors.As(err, &ae):
		// The whole submission is now refused (its signing certificate
		// was removed, say): every deferred recipient fails.
		res = &agent.OutboundResult{MessageID: d.MessageID, Message: d.Data}
		for _, r := range d.Recipients {
			res.Recipients = append(res.Recipients, agent.RecipientResult{Recipient: r, Status: ae.Status})
		}
		all := func(agent.Status) bool { return true }
		m.trackFailures(ctx, env, res, all)
		m.reportDropped(ctx, env, res, all)
		m.removeDeferred(ctx, d)
		return
	case err != nil:
		m.later(ctx, d, d.Recipients, err.Error())
		return
	}
	var queued []store.QueuedRecipient
	var still []string
	reason := ""
	for _, r := range res.Recipients {
		switch {
		case r.Accepted:
			queued = append(queued, store.QueuedRecipient{Address: r.Recipient, Local: r.Local})
		case r.Status.Temporary():
			still = append(still, r.Recipient)
			reason = r.Status.String()
		}
	}
	if len(queued) > 0 {
		// Tracked like any submission: these recipients' MDNs are due now.
		copies := queuedCopies(store.QueuedMessage{MessageID: res.MessageID, MailFrom: d.MailFrom, User: d.User,
			Origin: "deferred submission"}, res) // one per partner profile (profiles.go)
		q, err := m.queue.EnqueueWith(ctx, copies[0],
			store.EnqueueExtras{Tracking: m.trackSent(env, res, true), More: copies[1:]})
		if err != nil {
			m.later(ctx, d, d.Recipients, "enqueue: "+err.Error())
			return
		}
		m.wake()
		m.trackQueued(q) // with the recipients refused for good
	} else {
		m.trackFailures(ctx, env, res, permanent)
	}
	m.reportDropped(ctx, env, res, permanent) // recipients refused for good
	if len(still) == 0 {
		m.removeDeferred(ctx, d)
		return
	}
	// Who has had enough: a revocation outage after the grace, anything
	// else after the schedule's attempts.
	expired := m.now().Sub(d.Created) >= m.revocationGrace
	gaveUp := &agent.OutboundResult{MessageID: res.MessageID, Message: res.Message}
	still, reason = still[:0], ""
	revocation := false
	for _, r := range res.Recipients {
		switch {
		case r.Accepted || !r.Status.Temporary():
		case r.Status.Enhanced == agent.RevocationDeferred && !expired:
			still, reason, revocation = append(still, r.Recipient), r.Status.String(), true
		case r.Status.Enhanced == agent.RevocationDeferred:
			r.Status = agent.Status{Code: 550, Enhanced: "5.7.5", Reason: fmt.Sprintf(
				"revocation status still unavailable after the %s grace ([trust] revocation_grace): %s", m.revocationGrace, r.Status.Reason)}
			gaveUp.Recipients = append(gaveUp.Recipients, r)
		case d.Attempts+1 >= m.retry.MaxAttempts():
			gaveUp.Recipients = append(gaveUp.Recipients, r)
		default:
			still, reason = append(still, r.Recipient), r.Status.String()
		}
	}
	if len(gaveUp.Recipients) > 0 {
		all := func(agent.Status) bool { return true }
		m.trackFailures(ctx, env, gaveUp, all)
		m.reportDropped(ctx, env, gaveUp, all)
	}
	if len(still) == 0 {
		m.removeDeferred(ctx, d)
		return
	}
	next := m.nextTry(m.now(), d.Created, d.Attempts+1, revocation)
	if err := m.st.RetryDeferred(ctx, d.ID, still, next, reason); err != nil {
		m.log.Error("reschedule deferred submission", "message", d.MessageID, "err", err)
	}
}

// nextTry is when a deferred submission made at created is tried again
// after attempt: on the retry schedule, and for a revocation outage no later
// than the end of the grace, so that the last try is made then.
func (m *mail) nextTry(now, created time.Time, attempt int, revocation bool) time.Time {
	next := now.Add(m.retry.Delay(attempt))
	if end := created.Add(m.revocationGrace); revocation && next.After(end) {
		next = end
		if end.Before(now) {
			next = now
		}
	}
	return next
}

func (m *mail) later(ctx context.Context, d store.Deferred, rcpts []string, reason string) {
	next := m.now().Add(m.retry.Delay(d.Attempts + 1))
	if err := m.st.RetryDeferred(ctx, d.ID, rcpts, next, reason); err != nil {
		m.log.Error("reschedule deferred submission", "message", d.MessageID, "err", err)
	}
}

func (m *mail) removeDeferred(ctx context.Context, d store.Deferred) {
	if err := m.st.RemoveDeferred(ctx, d.ID); err != nil {
		m.log.Error("remove deferred submission", "message", d.MessageID, "err", err)
	}
}

func (m *mail) fileDSN(ctx context.Context, env envelopeLike, dsn []byte) {
	if dsn == nil {
		return
	}
	if err := m.deliver(ctx, senderOf(env), "INBOX", dsn, nil); err != nil {
		m.log.Error("file DSN", "to", senderOf(env), "err", err)
	}
}

// envelopeLike is what deferral needs of an envelope: a submission's or a
// stored deferred one's.
type envelopeLike interface {
	from() string
	user() string
	relay() string // the relay account's name, "" for an address's login
}

type deferredEnv struct{ d store.Deferred }

type smtpEnv struct{ e smtp.Envelope }

func (e smtpEnv) from() string { return e.e.MailFrom }

// user is the login's address; "" for a relay account, whose login is no
// address (the envelope sender stands for it).
func (e smtpEnv) user() string {
	if e.e.RelayDomains != nil {
		return ""
	}
	return e.e.User
}

func (e smtpEnv) relay() string {
	if e.e.RelayDomains != nil {
		return e.e.User
	}
	return ""
}

// relay is "": a deferred submission's recipients join the tracking of
// their message, which has its relay already.
func (e deferredEnv) relay() string { return "" }

func (e deferredEnv) from() string { return e.d.MailFrom }
func (e deferredEnv) user() string { return e.d.User }

func senderOf(e envelopeLike) string {
	if u := e.user(); u != "" {
		return u
	}
	return e.from()
}
