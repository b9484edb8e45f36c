package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	netmail "net/mail"
	"strings"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
)

// The receiving side of Direct delivery notification (MDN-01..05,
// DN-03..05): for every message the agent accepted that is not itself an
// MDN or a DSN, each recipient's address answers the original sender with
// a processed MDN; when the message asked for timely and reliable delivery
// (a well-formed Disposition-Notification-Options request), a dispatched
// MDN with the X-DIRECT-FINAL-DESTINATION-DELIVERY field follows once the
// message is in the mailbox. A malformed request gets processed and no
// dispatched MDN (DN-05).
//
// A recipient whose copy could not be filed (over quota, no such mailbox)
// gets a failed MDN with a Failure field (DN-04), asked for or not: after
// the processed MDN when timely and reliable delivery was asked for, and
// instead of it otherwise, since without the request a processed MDN is the
// sender's final word that the message arrived (DN-07, DN-10). When no copy
// could be filed and every failure went out as a failed MDN, the message is
// accepted (250) rather than refused with 552, so that the sender learns the
// outcome once, from the MDN, as from the reference implementation; if a
// failed MDN could not be queued, the refusal stays.
//
// The notices are Direct messages like any other: signed with the
// recipient's certificate and encrypted to the sender by the same agent
// Outbound path, with MAIL FROM the recipient's address (the remote agent
// requires MAIL FROM to be the From), and queued durably before the SMTP
// reply to the message they answer. They carry no Disposition-Notification-To
// of their own. A notice that cannot be built, sealed or queued is logged
// and audited; it never turns the accepted message into a refusal. A queued
// notice that cannot be delivered is not bounced to the recipient (see
// mdnUndeliverable).

// notifyOrigin starts the queue Origin of the MDNs hisp sends.
const notifyOrigin = "mdn"

// filing is what became of one accepted recipient's copy of an inbound
// message.
type filing struct {
	recipient string
	// failure says why the copy could not be filed; "" when it was.
	failure string
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

// notify sends the MDNs that a message the agent accepted earns, one
// recipient after another, each as its own queued Direct message: processed
// first, then dispatched or failed. It reports whether every copy that
// could not be filed has its failed MDN queued (true when all were filed),
// so that the SMTP reply may leave the failure to the MDN (DN-04).
func (m *mail) notify(ctx context.Context, res *agent.InboundResult, filed []filing) bool {
	if res == nil || res.Notification || len(filed) == 0 || res.From == "" {
		return false
	}
	timely := mdn.TimelyAndReliableRequested(res.DispositionOptions)
	if res.DispositionOptions != "" && !timely {
		m.log.Info("mdn: malformed or unsupported Disposition-Notification-Options, no dispatched MDN",
			"message", res.MessageID, "options", limitString(res.DispositionOptions, 200))
	}
	subject := subjectOf(res.Message)
	reported := true
	for _, f := range filed {
		base := mdn.MDN{
			From: f.recipient, To: res.From, OriginalSubject: subject,
			ReportingUA: m.reportingUA(f.recipient), FinalRecipient: f.recipient,
			OriginalMessageID: res.MessageID,
		}
		n := base
		if f.failure == "" || timely {
			n.Disposition = mdn.DispositionProcessed
			m.sendMDN(ctx, n)
			n = base
		}
		switch {
		case f.failure != "":
			n.Disposition, n.Failure = mdn.DispositionFailed, f.failure
			reported = m.sendMDN(ctx, n) && reported
		case timely:
			n.Disposition, n.FinalDestination = mdn.DispositionDispatched, true
			m.sendMDN(ctx, n)
		}
	}
	return reported
}

// sendMDN builds one notice, seals it through the agent and queues it. It
// reports failure in the log and the audit log, and returns whether the
// notice was queued.
func (m *mail) sendMDN(ctx context.Context, n mdn.MDN) bool {
	id, err := m.queueMDN(ctx, n)
	if err != nil {
		m.log.Error("mdn not sent", "disposition", n.Disposition, "from", n.From, "to", n.To,
			"original", n.OriginalMessageID, "err", err)
		m.auditMDN(ctx, "mdn.send", n.OriginalMessageID+" "+n.From, "failed",
			fmt.Sprintf("%s MDN to %s: %v", n.Disposition, n.To, err))
		return false
	}
	m.log.Info("mdn queued", "disposition", n.Disposition, "from", n.From, "to", n.To,
		"original", n.OriginalMessageID, "message", id)
	return true
}

func (m *mail) queueMDN(ctx context.Context, n mdn.MDN) (string, error) {
	msg, err := mdn.BuildMDN(n)
	if err != nil {
		return "", err
	}
	res, err := m.agent.Outbound(ctx, agent.Envelope{MailFrom: n.From, Recipients: []string{n.To}}, msg)
	if err != nil {
		return "", err
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
		return "", err
	}
	if _, err := m.queue.Enqueue(ctx, store.QueuedMessage{
		MessageID: res.MessageID, MailFrom: n.From,
		Origin: fmt.Sprintf("%s %s for %s", notifyOrigin, n.Disposition, oneLine(n.OriginalMessageID)),
		Data:   res.Sealed, Recipients: rcpts,
	}); err != nil {
		return "", fmt.Errorf("enqueue: %w", err)
	}
	m.wake()
	return res.MessageID, nil
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
	r, err := netmail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return ""
	}
	s := r.Header.Get("Subject")
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
