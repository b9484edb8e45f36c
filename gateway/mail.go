package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
)

// mail joins the agent, the queue and the mailboxes: it implements the
// handlers the SMTP servers and the deliverer call.
type mail struct {
	st       *store.Store
	agent    *agent.Agent
	queue    *store.Queue
	hostname string
	log      *slog.Logger
	// deliver files a message in a local mailbox (through the IMAP server
	// when it runs, so that IDLE sessions hear of it at once).
	deliver func(ctx context.Context, address, mailbox string, msg []byte, flags []string) error
	// filed tells the IMAP server of a message filed through the store
	// directly (the Sent copy, queued with its message).
	filed func()
	// wake tells the deliverer that the queue has work.
	wake func()
	// handoff is the deliverer, which takes the messages submitted here
	// in memory; nil: it finds them in the queue.
	handoff handoff
	track   *tracking // delivery tracking (track.go); nil: none
	// retry is the schedule of deferred recipients (seal.go).
	retry store.Backoff
	// revocationGrace is how long a recipient deferred for a revocation
	// outage is retried ([trust] revocation_grace, seal.go).
	revocationGrace time.Duration
	now             func() time.Time
}

// handoff is the part of smtp.Deliverer that takes queued messages in
// memory (Reserve, Take).
type handoff interface {
	Reserve(size int64) bool
	Release(size int64)
	Take(msgs []store.QueuedMessage, size int64)
	Backoff() store.Backoff
}

func agentEnvelope(env smtp.Envelope) agent.Envelope {
	return agent.Envelope{MailFrom: env.MailFrom, Recipients: env.Recipients, User: env.User, RelayDomains: env.RelayDomains,
		RemoteAddr: env.RemoteAddr}
}

func reply(s agent.Status) *smtp.Reply {
	return &smtp.Reply{Code: s.Code, Enhanced: s.Enhanced, Message: s.Reason}
}

// localFailure is the reply to a failure of ours: the client tries again.
var localFailure = &smtp.Reply{Code: 451, Enhanced: "4.3.0", Message: "local error, try again later"}

// Outbound handles a submitted message: the agent seals it, the sealed
// message is queued durably for every accepted recipient, dropped ones get
// a failure DSN in the sender's mailbox, and a copy of the plain message
// goes to the sender's Sent folder. 250 goes out only after the queue
// commit.
func (m *mail) Outbound(ctx context.Context, env smtp.Envelope, msg []byte) (*smtp.Reply, error) {
	// The queue's commit waits a moment for messages being sealed, so
	// that concurrent submissions share one.
	ann := m.queue.Announce()
	defer ann.Done()
	res, err := m.agent.Outbound(ctx, agentEnvelope(env), msg)
	var ae *agent.Error
	if errors.As(err, &ae) {
		return reply(ae.Status), nil
	}
	if err != nil {
		m.log.Error("outbound", "from", env.MailFrom, "err", err)
		return localFailure, nil
	}
	var rcpts []store.QueuedRecipient
	var temporary *agent.Status
	for _, r := range res.Recipients {
		switch {
		case r.Accepted:
			rcpts = append(rcpts, store.QueuedRecipient{Address: r.Recipient, Local: r.Local})
		case r.Status.Temporary() && temporary == nil:
			s := r.Status
			temporary = &s
		}
	}
	if len(rcpts) == 0 {
		if revocationDeferred(res) {
			// A revocation outage: keep the message and retry it for the
			// grace (seal.go), as if it were queued.
			return m.deferAll(ctx, env, res), nil
		}
		// Nothing to send: tell the client now rather than by DSN.
		if temporary != nil {
			return reply(*temporary), nil
		}
		for _, r := range res.Recipients {
			if !r.Accepted {
				return reply(r.Status), nil
			}
		}
		return &smtp.Reply{Code: 554, Enhanced: "5.5.0", Message: "no recipient accepted"}, nil
	}
	// The sender is the login's address; for a relay account (an EHR
	// sending for its domains) the envelope sender, whose mailbox, when it
	// has one, gets the notices. A relay gets no Sent copy.
	sub := submitterOf(env)
	origin := sub.origin("submission " + env.RemoteAddr)
	sent := m.sentCopy(sub, res)
	// The delivery tracking and the sender's Sent copy are committed in
	// the transaction that queues the message: no commit of their own, and
	// there exactly when it was sent (so no notice can come back before
	// the tracking).
	// One queued message per partner profile among the recipients
	// (profiles.go), committed together.
	// Recipients whose certificates could not be looked up wait in the
	// queue with the plain message, to be sealed to later (seal.go).
	copies := queuedCopies(store.QueuedMessage{
		MessageID: res.MessageID, MailFrom: env.MailFrom, User: sub.user, Origin: origin,
	}, res)
	d := m.deferredCopy(sub, res)
	if d != nil {
		copies = append(copies, *d)
	}
	x := store.EnqueueExtras{Filing: sent, Tracking: m.trackSent(sub, res, false), More: copies[1:], Announced: ann}
	// The deliverer takes the sealed copies as they are committed, claimed
	// for their first attempt, rather than claiming them in a transaction
	// of its own and reading them back.
	var size int64
	for _, c := range copies {
		if !c.Plain {
			size += int64(len(c.Data))
		}
	}
	handed := m.handoff != nil && m.handoff.Reserve(size)
	if handed {
		b := m.handoff.Backoff()
		x.Claim = &b
	}
	q, err := m.queue.EnqueueWith(ctx, copies[0], x)
	if err != nil {
		if handed {
			m.handoff.Release(size)
		}
		m.log.Error("enqueue", "message", res.MessageID, "err", err)
		return localFailure, nil
	}
	if handed {
		m.handoff.Take(q.Claimed, size)
	}
	if !handed || len(q.Claimed) < len(copies) {
		m.wake()
	}
	if d != nil {
		m.log.Info("recipients deferred", "message", res.MessageID, "recipients", len(d.Recipients))
	}
	m.trackQueued(q)
	m.sentFiled(q, sent)
	m.reportDropped(ctx, sub, res, permanent)
	return nil, nil
}

// sentCopy is the copy of a submission for its sender's Sent folder, nil
// for a relay account's (an EHR keeps its own records).
func (m *mail) sentCopy(sub submitter, res *agent.OutboundResult) *store.Filing {
	if sub.relay != "" {
		return nil
	}
	return &store.Filing{Address: sub.address(), Mailbox: "Sent", Message: res.Message, Flags: []string{`\Seen`}, Date: m.now()}
}

// sentFiled says how the Sent copy queued with q went: the IMAP server
// hears of a filed one, a failed one is logged (the message is queued
// all the same).
func (m *mail) sentFiled(q store.EnqueueResult, sent *store.Filing) {
	switch {
	case q.FilingErr != nil:
		m.log.Warn("file Sent copy", "user", sent.Address, "err", q.FilingErr)
	case sent != nil:
		m.filed()
	}
}

// reportDropped files in the sender's INBOX the DSN about the recipients
// of res the agent dropped whose status keep selects (TV-06, OUT-01): those
// refused for good at submission (permanent), or every one when the
// retries ran out.
func (m *mail) reportDropped(ctx context.Context, sub submitter, res *agent.OutboundResult, keep func(agent.Status) bool) {
	now := m.now()
	var rs []mdn.DSNRecipient
	for _, r := range res.Recipients {
		if r.Accepted || !keep(r.Status) {
			continue
		}
		rs = append(rs, mdn.DSNRecipient{Recipient: envAddr(r.Recipient), Action: mdn.Failed, Status: r.Status.Enhanced,
			Diagnostic: r.Status.Reason, LastAttempt: now})
	}
	sender := sub.address()
	if sender == "" {
		return // a null reverse path is never bounced (RFC 3464 §2, RFC 8098 §2.1)
	}
	dsn, err := mdn.BuildSenderDSN(mdn.SenderReport{ReportingMTA: m.hostname, Sender: sender, MessageID: res.MessageID,
		Original: res.Message, Arrival: now, Date: now, Recipients: rs})
	if err != nil {
		// The DSN is a courtesy; the message itself is fine.
		m.log.Error("build DSN", "message", res.MessageID, "err", err)
		return
	}
	m.fileDSN(ctx, sub, dsn)
}

// permanent selects the statuses of recipients refused for good.
func permanent(s agent.Status) bool { return !s.Temporary() }

// envAddr is an envelope address without its angle brackets.
func envAddr(a string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a), "<"), ">")
}

// Inbound handles a Direct message another HISP delivered on the
// backbone: the agent opens and verifies it, and each accepted recipient
// gets it in their INBOX. Trust failures are refused in DATA.
func (m *mail) Inbound(ctx context.Context, env smtp.Envelope, msg []byte) (*smtp.Reply, error) {
	return m.inbound(ctx, env, msg)
}

// DeliverLocal delivers a queued message to a local recipient through the
// same inbound rules, without a network hop.
func (m *mail) DeliverLocal(ctx context.Context, env smtp.Envelope, msg []byte) (*smtp.Reply, error) {
	env.User = ""
	return m.inbound(ctx, env, msg)
}

func (m *mail) inbound(ctx context.Context, env smtp.Envelope, msg []byte) (*smtp.Reply, error) {
	res, err := m.agent.Inbound(ctx, agentEnvelope(env), msg)
	var ae *agent.Error
	if errors.As(err, &ae) {
		return reply(ae.Status), nil
	}
	if err != nil {
		m.log.Error("inbound", "from", env.MailFrom, "err", err)
		return nil, err
	}
	if m.trackNotice(ctx, res) {
		return nil, nil // an MDN or DSN the tracker keeps from the mailbox
	}
	var first *smtp.Reply
	plan := m.planMDNs(res)
	var ds []store.Delivery
	var notices []recipientMDNs
	for _, r := range res.Recipients {
		if !r.Accepted {
			if first == nil {
				first = reply(r.Status)
			}
			continue
		}
		// The notices that report a filed copy are sealed now and queued
		// in the transaction that files it (notify.go).
		n := plan.seal(ctx, r.Recipient)
		ds = append(ds, store.Delivery{Filing: store.Filing{Address: r.Recipient, Mailbox: store.Inbox, Message: res.Message, Date: m.now()},
			Then: n.onFiled()})
		notices = append(notices, n)
	}
	// Every accepted recipient's copy, and its notices, in one
	// transaction: a failure of the store files and queues nothing, so that
	// the sender's retry after 451 duplicates nobody's copy.
	_, errs, err := m.st.DeliverEach(ctx, ds)
	if err != nil {
		m.log.Error("deliver to mailboxes", "message", res.MessageID, "err", err)
		return nil, err
	}
	m.filed()
	delivered := 0
	var failed []filing // what the failed MDNs report (notify.go)
	for i, d := range ds {
		err := errs[i]
		switch {
		case errors.Is(err, store.ErrOverQuota):
			m.log.Warn("mailbox over quota", "recipient", d.Address, "message", res.MessageID)
			if first == nil {
				first = &smtp.Reply{Code: 552, Enhanced: "5.2.2", Message: d.Address + ": mailbox full"}
			}
			failed = append(failed, filing{d.Address, fileFailure(err), notices[i]})
		case errors.Is(err, store.ErrNotFound): // the address went away since RCPT
			m.log.Warn("no mailbox", "recipient", d.Address, "message", res.MessageID)
			if first == nil {
				first = &smtp.Reply{Code: 550, Enhanced: "5.1.1", Message: d.Address + ": no such mailbox"}
			}
			failed = append(failed, filing{d.Address, fileFailure(err), notices[i]})
		default:
			delivered++
			notices[i].queued(m)
		}
	}
	reported := plan.notifyFailures(ctx, failed)
	if delivered == 0 {
		if mdn.LeaveToMDN(len(res.Recipients), len(failed), reported) {
			return nil, nil // each failure went to the sender as a failed MDN (DN-04, notify.go)
		}
		if first == nil {
			first = &smtp.Reply{Code: 550, Enhanced: "5.1.1", Message: "no recipient accepted"}
		}
		return first, nil
	}
	// Recipients refused on trust (another local domain's anchors) get no
	// MDN (TV-06): the sender's HISP times out and tells the sender.
	return nil, nil
}

// Bounce files a DSN for a queued message in its sender's mailbox.
func (m *mail) Bounce(ctx context.Context, msg store.QueuedMessage, rcpts []smtp.RecipientOutcome, final bool) error {
	if isNotifyOrigin(msg.Origin) { // hisp's own MDN: recorded, never bounced
		m.mdnUndeliverable(ctx, msg, rcpts, final)
		return nil
	}
	sender := msg.User
	if sender == "" {
		sender = msg.MailFrom
	}
	if sender == "" {
		return nil
	}
	if rcpts = m.trackBounce(ctx, msg, rcpts, final); len(rcpts) == 0 {
		return nil // the sender has the outcome of every one (track.go)
	}
	action := mdn.Failed
	if !final {
		action = mdn.Delayed
	}
	var rs []mdn.DSNRecipient
	for _, r := range rcpts {
		rs = append(rs, mdn.DSNRecipient{Recipient: r.Recipient, Action: action, Status: r.Reply.Enhanced,
			Diagnostic: fmt.Sprintf("%d %s %s", r.Reply.Code, r.Reply.Enhanced, r.Reply.Message), DiagnosticSMTP: r.RemoteMTA != "",
			RemoteMTA: r.RemoteMTA, LastAttempt: r.LastAttempt, WillRetryUntil: r.RetryUntil})
	}
	dsn, err := mdn.BuildSenderDSN(mdn.SenderReport{ReportingMTA: m.hostname, Sender: sender,
		MessageID: msg.MessageID, Arrival: msg.Created, Recipients: rs})
	if err != nil {
		return err
	}
	err = m.deliver(ctx, sender, "INBOX", dsn, nil)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrOverQuota) {
		// The sender has no mailbox to take it (an address a relay account
		// sent for) or no room: the tracking holds the outcome, and trying
		// again would not help.
		m.log.Warn("DSN not filed", "to", sender, "message", msg.MessageID, "err", err)
		return nil
	}
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
