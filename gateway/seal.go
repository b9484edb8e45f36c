package gateway

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
)

// A recipient is deferred when the agent could not look its certificates
// up (a DNS or LDAP failure: 4xx). Its submission is queued with it, plain
// (store.QueuedMessage.Plain, recipient state deferred), and the queue's
// one scheduler (the deliverer) hands it back here when it is due
// (SealDeferred): sealed again, it is queued like any submission; when the
// schedule runs out the sender gets a failure DSN. Deferred recipients are
// not tracked for MDNs until they are sealed to.
//
// A recipient deferred because its certificate's revocation status could
// not be established ([trust] revocation = "defer", agent.TemporaryRevocation)
// is retried on the same schedule but for [trust] revocation_grace from the
// submission, however many attempts that takes, the last one at the end of
// the grace; then it fails.

// submitter is who sent a submission.
type submitter struct {
	mailFrom string // the envelope sender
	user     string // the login's address; "" for a relay account, whose login is no address
	relay    string // the relay account's name, "" for an address's login
}

// submitterOf is the submitter of a message submitted with env.
func submitterOf(env smtp.Envelope) submitter {
	if env.RelayDomains != nil {
		return submitter{mailFrom: env.MailFrom, relay: env.User}
	}
	return submitter{mailFrom: env.MailFrom, user: env.User}
}

// submitterOfQueued is the submitter of a queued message. Its relay is "":
// recipients sealed to later join the tracking of their message, which
// has its relay already.
func submitterOfQueued(q store.QueuedMessage) submitter {
	return submitter{mailFrom: q.MailFrom, user: q.User}
}

// address is who gets the submission's notices: the login's address, else
// (a relay account) the envelope sender.
func (s submitter) address() string {
	if s.user != "" {
		return s.user
	}
	return s.mailFrom
}

// revocationDeferred reports whether a recipient of res was deferred for a
// revocation outage.
func revocationDeferred(res *agent.OutboundResult) bool {
	for _, r := range res.Recipients {
		if r.Status.Outcome == agent.TemporaryRevocation {
			return true
		}
	}
	return false
}

// deferredCopy is the plain queue message that keeps the deferred
// recipients of a submission for the scheduler, or nil when there are
// none.
func (m *mail) deferredCopy(sub submitter, res *agent.OutboundResult) *store.QueuedMessage {
	now := m.now()
	// The relay's name is checked again when sealed (SealDeferred).
	q := &store.QueuedMessage{MessageID: res.MessageID, MailFrom: sub.mailFrom, User: sub.user,
		Origin: sub.origin("deferred submission"), Data: res.Message, Plain: true, Created: now}
	for _, r := range res.Recipients {
		if r.Accepted || !r.Status.Temporary() {
			continue
		}
		revocation := r.Status.Outcome == agent.TemporaryRevocation
		q.Recipients = append(q.Recipients, store.QueuedRecipient{Address: r.Recipient, Local: r.Local,
			NextAttempt: m.nextTry(now, now, 1, revocation),
			LastCode:    r.Status.Code, LastEnhanced: r.Status.Enhanced, LastError: r.Status.Reason})
	}
	if len(q.Recipients) == 0 {
		return nil
	}
	return q
}

// relayOrigin precedes the relay account's name in the origin of a queued
// message a relay account submitted (relay names have no spaces).
const relayOrigin = " relay "

// origin is the queued origin of the submitter's message: base, and the
// relay account's name when a relay submitted it (relayOf reads it back).
func (s submitter) origin(base string) string {
	if s.relay == "" {
		return base
	}
	return base + relayOrigin + s.relay
}

// relayOf is the relay account that submitted a queued message, "" when
// an address's login did (or hisp).
func relayOf(q store.QueuedMessage) string {
	if i := strings.LastIndex(q.Origin, relayOrigin); i >= 0 {
		return q.Origin[i+len(relayOrigin):]
	}
	return ""
}

// deferAll takes a submission none of whose recipients could be sealed to
// now, some for a revocation outage: the deferred ones are queued plain,
// with the sender's Sent copy; the sender gets a DSN for any refused for
// good, and the client 250.
func (m *mail) deferAll(ctx context.Context, env smtp.Envelope, res *agent.OutboundResult) *smtp.Reply {
	sub := submitterOf(env)
	sent := m.sentCopy(sub, res)
	d := m.deferredCopy(sub, res)
	q, err := m.queue.EnqueueWith(ctx, *d, store.EnqueueExtras{Filing: sent})
	if err != nil {
		m.log.Error("enqueue deferred recipients", "message", res.MessageID, "err", err)
		return localFailure
	}
	m.wake()
	m.sentFiled(q, sent)
	m.log.Info("recipients deferred", "message", res.MessageID, "recipients", len(d.Recipients))
	m.trackFailures(ctx, sub, res, permanent)
	m.reportDropped(ctx, sub, res, permanent)
	return nil
}

// SealDeferred seals a plain queued message again for its deferred
// recipients now due (smtp.Sealer): the ones the agent accepts now are
// queued as a submission of their own and tracked, the ones refused for
// good get a DSN, the others wait for their next try or, past the
// schedule (or a revocation outage past its grace), fail with a DSN.
func (m *mail) SealDeferred(ctx context.Context, q store.QueuedMessage, plain []byte) []store.RecipientUpdate {
	sub := submitterOfQueued(q)
	rcpts := make([]string, len(q.Recipients))
	for i, r := range q.Recipients {
		rcpts[i] = r.Address
	}
	env := agent.Envelope{MailFrom: q.MailFrom, Recipients: rcpts, User: q.User, RemoteAddr: "deferred"}
	var err error
	if name := relayOf(q); name != "" {
		// A relay account's message is sent as the account may send
		// now: removed since, or no longer sending for the sender's
		// domain, the message is refused like a new submission would be.
		var r store.Relay
		switch r, err = m.st.Relay(ctx, name); {
		case errors.Is(err, store.ErrNotFound):
			err = &agent.Error{Status: agent.NewStatus(agent.RefusedSender, "relay account %s was removed: its deferred message is not sent", name)}
		case err == nil:
			env.User, env.RelayDomains = r.Name, r.Domains
		}
	}
	var res *agent.OutboundResult
	if err == nil {
		res, err = m.agent.Outbound(ctx, env, plain)
	}
	var ae *agent.Error
	switch {
	case errors.As(err, &ae):
		// The whole submission is now refused (its signing certificate
		// was removed, say): every deferred recipient fails.
		res = &agent.OutboundResult{MessageID: q.MessageID, Message: plain}
		for _, r := range rcpts {
			res.Recipients = append(res.Recipients, agent.RecipientResult{Recipient: r, Status: ae.Status})
		}
		m.trackFailures(ctx, sub, res, all)
		m.reportDropped(ctx, sub, res, all)
		states := make([]store.RecipientState, len(rcpts))
		for i := range states {
			states[i] = store.StateBounced
		}
		return updatesOf(q, res, states, time.Time{})
	case err != nil:
		m.log.Error("seal deferred recipients", "message", q.MessageID, "err", err)
		return m.retryLocal(ctx, q, sub, rcpts, plain, err)
	}
	accepted := false
	for _, r := range res.Recipients {
		accepted = accepted || r.Accepted
	}
	if accepted {
		// Tracked like any submission: these recipients' MDNs are due now.
		copies := queuedCopies(store.QueuedMessage{MessageID: res.MessageID, MailFrom: q.MailFrom, User: q.User,
			Origin: "deferred submission"}, res) // one per partner profile (profiles.go)
		enq, err := m.queue.EnqueueWith(ctx, copies[0],
			store.EnqueueExtras{Tracking: m.trackSent(sub, res, true), More: copies[1:]})
		if err != nil {
			m.log.Error("enqueue sealed deferred recipients", "message", q.MessageID, "err", err)
			return m.retryLocal(ctx, q, sub, rcpts, plain, err)
		}
		m.wake()
		m.trackQueued(enq) // with the recipients refused for good
	} else {
		m.trackFailures(ctx, sub, res, permanent)
	}
	m.reportDropped(ctx, sub, res, permanent) // recipients refused for good

	now := m.now()
	states, gaveUp, revocation := m.judgeRetried(q, res, now)
	if len(gaveUp.Recipients) > 0 {
		m.trackFailures(ctx, sub, gaveUp, all)
		m.reportDropped(ctx, sub, gaveUp, all)
	}
	next := m.nextTry(now, q.Created, q.Recipients[0].Attempts, revocation)
	return updatesOf(q, res, states, next)
}

// retryLocal is SealDeferred's answer to a failure of ours (the store, a
// key): every recipient waits for its next try, on the same schedule as
// any other temporary failure, and past its last attempt fails with a DSN
// to the sender, so that an accepted message is never retried forever. A
// failure because hisp is stopping only waits for the next start.
func (m *mail) retryLocal(ctx context.Context, q store.QueuedMessage, sub submitter, rcpts []string, plain []byte, cause error) []store.RecipientUpdate {
	if ctx.Err() != nil {
		return updatesOf(q, nil, nil, time.Time{}) // at the retry time the claim recorded
	}
	res := &agent.OutboundResult{MessageID: q.MessageID, Message: plain}
	for _, r := range rcpts {
		res.Recipients = append(res.Recipients, agent.RecipientResult{Recipient: r,
			Status: agent.NewStatus(agent.TemporaryLocal, "local error sealing the message: %v", cause)})
	}
	now := m.now()
	states, gaveUp, _ := m.judgeRetried(q, res, now)
	if len(gaveUp.Recipients) > 0 {
		m.trackFailures(ctx, sub, gaveUp, all)
		m.reportDropped(ctx, sub, gaveUp, all)
	}
	return updatesOf(q, res, states, m.nextTry(now, q.Created, q.Recipients[0].Attempts, false))
}

// judgeRetried gives each deferred recipient of q the state the agent's
// new result puts it in: sealed, bounced (refused for good), deferred
// again, or bounced because it has had enough: a revocation outage after
// the grace, anything else after the schedule's attempts. gaveUp holds
// the last, for their DSN; revocation is set when a recipient waits for a
// revocation status.
func (m *mail) judgeRetried(q store.QueuedMessage, res *agent.OutboundResult, now time.Time) (states []store.RecipientState, gaveUp *agent.OutboundResult, revocation bool) {
	expired := now.Sub(q.Created) >= m.revocationGrace
	gaveUp = &agent.OutboundResult{MessageID: res.MessageID, Message: res.Message}
	states = make([]store.RecipientState, len(res.Recipients))
	for i, r := range res.Recipients {
		switch {
		case r.Accepted:
			states[i] = store.StateSealed
		case !r.Status.Temporary():
			states[i] = store.StateBounced
		case r.Status.Outcome == agent.TemporaryRevocation && !expired:
			states[i], revocation = store.StateDeferred, true
		case r.Status.Outcome == agent.TemporaryRevocation:
			res.Recipients[i].Status = agent.NewStatus(agent.RefusedRevocationUnknown,
				"revocation status still unavailable after the %s grace ([trust] revocation_grace): %s", m.revocationGrace, r.Status.Reason)
			gaveUp.Recipients = append(gaveUp.Recipients, res.Recipients[i])
			states[i] = store.StateBounced
		case q.Recipients[i].Attempts >= m.retry.MaxAttempts():
			gaveUp.Recipients = append(gaveUp.Recipients, r)
			states[i] = store.StateBounced
		default:
			states[i] = store.StateDeferred
		}
	}
	return states, gaveUp, revocation
}

// updatesOf are the updates of q's recipients from the agent's results
// (one per recipient, in order) and their new states; with no results, each
// is deferred for a local error, at the retry time the claim recorded. The
// deferred ones are due at next.
func updatesOf(q store.QueuedMessage, res *agent.OutboundResult, states []store.RecipientState, next time.Time) []store.RecipientUpdate {
	out := make([]store.RecipientUpdate, len(q.Recipients))
	for i, r := range q.Recipients {
		if res == nil || i >= len(res.Recipients) {
			out[i] = store.RecipientUpdate{ID: r.ID, State: store.StateDeferred, Code: 451, Enhanced: "4.3.0",
				Text: "local error sealing the message, will retry"}
			continue
		}
		rr := res.Recipients[i]
		u := store.RecipientUpdate{ID: r.ID, State: states[i], Code: rr.Status.Code, Enhanced: rr.Status.Enhanced, Text: rr.Status.Reason}
		if u.State == store.StateDeferred {
			u.NextAttempt = next
		}
		out[i] = u
	}
	return out
}

// nextTry is when a deferred recipient of a submission made at created is
// tried again after attempt: on the retry schedule, and for a revocation
// outage no later than the end of the grace, so that the last try is made
// then.
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

// all selects every status.
func all(agent.Status) bool { return true }

// fileDSN files a DSN in the submitter's INBOX.
func (m *mail) fileDSN(ctx context.Context, sub submitter, dsn []byte) {
	if dsn == nil {
		return
	}
	if err := m.deliver(ctx, sub.address(), "INBOX", dsn, nil); err != nil {
		m.log.Error("file DSN", "to", sub.address(), "err", err)
	}
}
