package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"
	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
)

// The receiving side of Direct delivery notification: which MDNs a
// message earns, and when, is mdn.OwedFor and the rules beside it
// (mdn/when.go). This file sends them.
//
// The notices are Direct messages like any other: signed with the
// recipient's certificate and encrypted to the sender by the same agent
// Outbound path, with MAIL FROM the recipient's address (the remote agent
// requires MAIL FROM to be the From), and queued durably before the SMTP
// reply to the message they answer: those of a filed copy in the very
// transaction that files it, so a store failure there refuses the message
// with 451 and files nothing. A notice that cannot be built or sealed is
// logged and audited and the copy is filed without it; it never turns the
// message into a refusal. A queued notice that cannot be delivered is not
// bounced to the recipient (see mdnUndeliverable).

// notifyOrigin starts the queue Origin of the MDNs hisp sends.
const notifyOrigin = "mdn"

// filing is an accepted recipient's copy of an inbound message that could
// not be filed, with the notices sealed for it.
type filing struct {
	recipient string
	failure   string // why, for the failed MDN
	notices   recipientMDNs
}

// fileFailure returns the Failure text of a filing error that is final for
// the message (the SMTP reply refuses the recipient, or it is accepted for
// others), and "" for an error the client should retry.
func fileFailure(err error) string {
	switch {
	case errors.Is(err, store.ErrOverQuota):
		return "mailbox full: the recipient's mailbox is over its quota"
	case errors.Is(err, store.ErrNotFound):
		return "no such mailbox"
	}
	return ""
}

// mdnPlan sends the notices an inbound message the agent accepted earns
// (mdn.Owed). A nil plan sends none.
type mdnPlan struct {
	m       *mail
	res     *agent.InboundResult
	owed    mdn.Owed
	subject string
}

func (m *mail) planMDNs(res *agent.InboundResult) *mdnPlan {
	if res == nil {
		return nil
	}
	owed := mdn.OwedFor(res.Notification, res.From, res.DispositionOptions)
	if owed.None {
		return nil
	}
	if owed.MalformedRequest {
		m.log.Info("mdn: malformed or unsupported Disposition-Notification-Options, no dispatched MDN",
			"message", res.MessageID, "options", limitString(res.DispositionOptions, 200))
	}
	return &mdnPlan{m: m, res: res, owed: owed, subject: subjectOf(res.Message)}
}

// base is the MDN of a recipient, without its disposition.
func (p *mdnPlan) base(recipient string) mdn.MDN {
	return mdn.MDN{From: recipient, To: p.res.From, OriginalSubject: p.subject,
		ReportingUA: p.m.reportingUA(recipient), FinalRecipient: recipient, OriginalMessageID: p.res.MessageID}
}

// recipientMDNs are the notices sealed for one recipient before its copy
// is filed: processed, and dispatched when asked for. A notice that could
// not be sealed is absent (its failure is logged and audited).
type recipientMDNs struct {
	processed, dispatched *sealedMDN
}

// seal seals a recipient's notices for a filed copy; nothing on a nil plan.
func (p *mdnPlan) seal(ctx context.Context, recipient string) recipientMDNs {
	if p == nil {
		return recipientMDNs{}
	}
	var out recipientMDNs
	for _, n := range p.owed.OnFiled(p.base(recipient)) {
		if n.Disposition == mdn.DispositionProcessed {
			out.processed = p.m.sealOrReport(ctx, n)
		} else {
			out.dispatched = p.m.sealOrReport(ctx, n)
		}
	}
	return out
}

// onFiled are the messages to queue with the filed copy: processed first.
func (r recipientMDNs) onFiled() []store.QueuedMessage {
	var out []store.QueuedMessage
	for _, s := range []*sealedMDN{r.processed, r.dispatched} {
		if s != nil {
			out = append(out, s.q)
		}
	}
	return out
}

// queued logs the notices queued with a filed copy and wakes the
// deliverer.
func (r recipientMDNs) queued(m *mail) {
	for _, s := range []*sealedMDN{r.processed, r.dispatched} {
		if s != nil {
			m.logQueuedMDN(s)
			m.wake()
		}
	}
}

// notifyFailures sends the notices of copies that could not be filed: the
// processed MDN (the message was processed), then a failed MDN with the
// reason. It reports
// whether every such copy has its failed MDN queued (so that the SMTP reply
// may leave the failure to the MDN, DN-04); false on a nil plan.
func (p *mdnPlan) notifyFailures(ctx context.Context, failed []filing) bool {
	if p == nil {
		return false
	}
	reported := true
	for _, f := range failed {
		if f.notices.processed != nil {
			p.m.enqueueMDN(ctx, f.notices.processed)
		}
		s := p.m.sealOrReport(ctx, *p.owed.OnFilingFailed(p.base(f.recipient), f.failure))
		reported = s != nil && p.m.enqueueMDN(ctx, s) && reported
	}
	return reported
}

// sealedMDN is a notice sealed through the agent, ready to queue.
type sealedMDN struct {
	n mdn.MDN
	q store.QueuedMessage
}

// sealOrReport seals a notice; a failure is logged and audited, and nil.
func (m *mail) sealOrReport(ctx context.Context, n mdn.MDN) *sealedMDN {
	s, err := m.sealMDN(ctx, n)
	if err != nil {
		m.reportMDNFailure(ctx, n, err)
		return nil
	}
	return s
}

// enqueueMDN queues a sealed notice on its own and reports whether it was.
func (m *mail) enqueueMDN(ctx context.Context, s *sealedMDN) bool {
	if _, err := m.queue.Enqueue(ctx, s.q); err != nil {
		m.reportMDNFailure(ctx, s.n, fmt.Errorf("enqueue: %w", err))
		return false
	}
	m.wake()
	m.logQueuedMDN(s)
	return true
}

func (m *mail) logQueuedMDN(s *sealedMDN) {
	m.log.Info("mdn queued", "disposition", s.n.Disposition, "from", s.n.From, "to", s.n.To,
		"original", s.n.OriginalMessageID, "message", s.q.MessageID)
}

func (m *mail) reportMDNFailure(ctx context.Context, n mdn.MDN, err error) {
	m.log.Error("mdn not sent", "disposition", n.Disposition, "from", n.From, "to", n.To,
		"original", n.OriginalMessageID, "err", err)
	m.auditMDN(ctx, "mdn.send", n.OriginalMessageID+" "+n.From, "failed",
		fmt.Sprintf("%s MDN to %s: %v", n.Disposition, n.To, err))
}

// sealMDN builds one notice and seals it through the agent's outbound
// path, from the recipient's address.
func (m *mail) sealMDN(ctx context.Context, n mdn.MDN) (*sealedMDN, error) {
	msg, err := mdn.BuildMDN(n)
	if err != nil {
		return nil, err
	}
	res, err := m.agent.Outbound(ctx, agent.Envelope{MailFrom: n.From, Recipients: []string{n.To}}, msg)
	if err != nil {
		return nil, err
	}
	var rcpts []store.QueuedRecipient
	for _, r := range res.Recipients {
		if r.Accepted {
			rcpts = append(rcpts, store.QueuedRecipient{Address: r.Recipient, Local: r.Local})
		} else {
			err = fmt.Errorf("agent refused %s: %s", r.Recipient, r.Status)
		}
	}
	if len(rcpts) == 0 || res.Sealed == nil {
		if err == nil {
			err = errors.New("no recipient accepted")
		}
		return nil, err
	}
	return &sealedMDN{n: n, q: store.QueuedMessage{
		MessageID: res.MessageID, MailFrom: n.From,
		Origin: fmt.Sprintf("%s %s for %s", notifyOrigin, n.Disposition, oneLine(n.OriginalMessageID)),
		Data:   res.Sealed, Recipients: rcpts,
	}}, nil
}

// isNotifyOrigin reports whether a queued message is an MDN hisp sent.
func isNotifyOrigin(origin string) bool {
	return origin == notifyOrigin || strings.HasPrefix(origin, notifyOrigin+" ")
}

// mdnUndeliverable records that a queued MDN could not be delivered (or is
// delayed). No DSN goes to the recipient whose address sent it: the notice
// was hisp's, not theirs, and an MDN is never bounced (RFC 8098 §2.1).
func (m *mail) mdnUndeliverable(ctx context.Context, msg store.QueuedMessage, rcpts []smtp.RecipientOutcome, final bool) {
	verdict := "delayed"
	if final {
		verdict = "failed"
	}
	for _, r := range rcpts {
		reason := fmt.Sprintf("%s (%s) to %s: %d %s %s", msg.Origin, msg.MessageID, r.Recipient, r.Reply.Code, r.Reply.Enhanced, r.Reply.Message)
		m.log.Warn("mdn undeliverable", "final", final, "reason", reason)
		m.auditMDN(ctx, "mdn.deliver", msg.MessageID+" "+r.Recipient, verdict, reason)
	}
}

func (m *mail) auditMDN(ctx context.Context, action, subject, verdict, reason string) {
	if m.st == nil {
		return
	}
	ev := store.Event{Actor: "hisp", Action: action, Subject: subject, Verdict: verdict, Reason: reason}
	if err := m.st.Audit(context.WithoutCancel(ctx), ev); err != nil {
		m.log.Warn("audit record failed", "err", err)
	}
}

// reportingUA is the Reporting-UA of the MDNs for a recipient: this host,
// or the recipient's domain when the host has no real name.
func (m *mail) reportingUA(recipient string) string {
	host := m.hostname
	if host == "" || host == "localhost" {
		_, host, _ = strings.Cut(recipient, "@")
	}
	return host + "; hisp"
}

// subjectOf returns the decoded Subject of a message, "" if none.
func subjectOf(msg []byte) string {
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	s := h.Get("Subject")
	if d, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		s = d
	}
	return oneLine(s)
}

func limitString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
