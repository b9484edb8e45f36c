// Package mdn builds and parses the notices Direct sends about a message:
// delivery status notifications (DSN, RFC 3464) that a HISP sends to a
// local sender when it cannot deliver (BuildDSN, ParseDSN), and message
// disposition notifications (MDN, RFC 8098) that the recipient's HISP
// sends back: processed, dispatched for timely and reliable delivery, or
// failed (BuildMDN, ParseMDN, TimelyAndReliableRequested).
//
// It is the one home of hisp's rules about notices, so each question is
// answered by opening one file:
//
//   - which message is a notice: IsNotice (notices.go);
//   - the DSN hisp files for a sender about dropped, failed or delayed
//     recipients: BuildSenderDSN (notices.go);
//   - when the receiving side sends processed, dispatched and failed MDNs:
//     OwedFor and LeaveToMDN (when.go);
//   - how a notice that comes back is read: ParseNotice (read.go);
//   - the sending side's one-final-outcome state machine that decides what
//     each notice does to a recipient and whether it reaches the sender:
//     Machine.Decide (outcome.go).
//
// The gateway and the tracker (package track) do the sending, queueing
// and storing; the agent only says which recipients it dropped and why.
package mdn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"

	"strings"
	"time"

	gotextproto "github.com/emersion/go-message/textproto"
)

// Action is a DSN per-recipient action (RFC 3464 §2.3.3).
type Action string

// The actions hisp reports.
const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
)

// DSNRecipient is the status of one recipient.
type DSNRecipient struct {
	Recipient string // final recipient address
	Action    Action
	Status    string // enhanced status code, e.g. "5.7.1"
	// Diagnostic is the reason: an SMTP reply ("550 5.1.1 no such user")
	// or text of hisp's own ("no trusted certificate found for ...").
	Diagnostic     string
	DiagnosticSMTP bool   // Diagnostic is an SMTP reply from RemoteMTA
	RemoteMTA      string // host name, when a remote server answered
	LastAttempt    time.Time
	WillRetryUntil time.Time // for Delayed
}

// DSN is a delivery status notification about one message.
type DSN struct {
	ReportingMTA string // hisp's host name
	From         string // sender of the notice, e.g. postmaster@<sender domain>
	To           string // the original sender
	// OriginalMessageID and OriginalHeaders identify the message reported
	// on (text/rfc822-headers: headers only, never the body).
	OriginalMessageID string
	OriginalHeaders   []byte
	Arrival           time.Time
	Date              time.Time // zero: now
	Recipients        []DSNRecipient
}

// BuildDSN returns the DSN as an RFC 5322 message: multipart/report with a
// human-readable part, message/delivery-status and the original headers.
func BuildDSN(d DSN) ([]byte, error) {
	if d.To == "" || d.From == "" || len(d.Recipients) == 0 {
		return nil, errors.New("build DSN: need From, To and at least one recipient")
	}
	for _, s := range []string{d.To, d.From, d.ReportingMTA, d.OriginalMessageID} {
		if strings.ContainsAny(s, "\r\n") {
			return nil, errors.New("build DSN: line break in a header value")
		}
	}
	date := d.Date
	if date.IsZero() {
		date = time.Now()
	}
	status, err := deliveryStatus(d)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	worst := worstAction(d.Recipients)
	subject := map[Action]string{Failed: "Delivery Status Notification (Failure)", Delayed: "Delivery Status Notification (Delay)",
		Delivered: "Delivery Status Notification (Success)", Relayed: "Delivery Status Notification (Relayed)"}[worst]

	var h bytes.Buffer
	fmt.Fprintf(&h, "From: Mail Delivery System <%s>\r\n", d.From)
	fmt.Fprintf(&h, "To: <%s>\r\n", d.To)
	fmt.Fprintf(&h, "Subject: %s\r\n", subject)
	fmt.Fprintf(&h, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&h, "Message-ID: <%s@%s>\r\n", randomID(), hostOr(d.ReportingMTA))
	h.WriteString("Auto-Submitted: auto-replied\r\n")
	h.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&h, "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"%s\"\r\n\r\n", mw.Boundary())

	// The human-readable part.
	pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Transfer-Encoding": {"8bit"}})
	if err != nil {
		return nil, err
	}
	io.WriteString(pw, dsnText(d, worst))

	// message/delivery-status (RFC 3464 §2.1).
	pw, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"message/delivery-status"}})
	if err != nil {
		return nil, err
	}
	io.WriteString(pw, status)

	if len(d.OriginalHeaders) > 0 {
		pw, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/rfc822-headers"}})
		if err != nil {
			return nil, err
		}
		pw.Write(d.OriginalHeaders)
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return append(h.Bytes(), buf.Bytes()...), nil
}

// worstAction is the action a DSN's subject and text speak of: failed
// before delayed before the others.
func worstAction(rs []DSNRecipient) Action {
	worst := Delivered
	for _, r := range rs {
		if r.Action == Failed || (r.Action == Delayed && worst != Failed) {
			worst = r.Action
		}
	}
	return worst
}

// dsnText is the human-readable part of a DSN.
func dsnText(d DSN, worst Action) string {
	var t strings.Builder
	switch worst {
	case Failed:
		fmt.Fprintf(&t, "Your message %s could not be delivered to one or more recipients.\r\n\r\n", d.OriginalMessageID)
	case Delayed:
		fmt.Fprintf(&t, "Your message %s has not been delivered yet to one or more recipients. Delivery will be retried.\r\n\r\n", d.OriginalMessageID)
	default:
		fmt.Fprintf(&t, "Status of your message %s:\r\n\r\n", d.OriginalMessageID)
	}
	for _, r := range d.Recipients {
		fmt.Fprintf(&t, "  %s: %s (%s)", r.Recipient, r.Action, r.Status)
		if r.Diagnostic != "" {
			fmt.Fprintf(&t, ": %s", oneLine(r.Diagnostic))
		}
		t.WriteString("\r\n")
	}
	return t.String()
}

// deliveryStatus is the message/delivery-status part of a DSN (RFC 3464
// §2.1): the per-message fields, then a block per recipient.
func deliveryStatus(d DSN) (string, error) {
	var s strings.Builder
	fmt.Fprintf(&s, "Reporting-MTA: dns; %s\r\n", hostOr(d.ReportingMTA))
	if d.OriginalMessageID != "" {
		// Direct HISPs correlate notices by the original Message-ID.
		fmt.Fprintf(&s, "X-Original-Message-ID: %s\r\n", d.OriginalMessageID)
	}
	if !d.Arrival.IsZero() {
		fmt.Fprintf(&s, "Arrival-Date: %s\r\n", d.Arrival.Format(time.RFC1123Z))
	}
	for _, r := range d.Recipients {
		if strings.ContainsAny(r.Recipient+r.Status+r.RemoteMTA, "\r\n") {
			return "", errors.New("build DSN: line break in a recipient field")
		}
		s.WriteString("\r\n")
		fmt.Fprintf(&s, "Final-Recipient: rfc822; %s\r\n", r.Recipient)
		fmt.Fprintf(&s, "Action: %s\r\n", r.Action)
		fmt.Fprintf(&s, "Status: %s\r\n", r.Status)
		if r.RemoteMTA != "" {
			fmt.Fprintf(&s, "Remote-MTA: dns; %s\r\n", r.RemoteMTA)
		}
		if r.Diagnostic != "" {
			kind := "X-Direct"
			if r.DiagnosticSMTP {
				kind = "smtp"
			}
			fmt.Fprintf(&s, "Diagnostic-Code: %s; %s\r\n", kind, oneLine(r.Diagnostic))
		}
		if !r.LastAttempt.IsZero() {
			fmt.Fprintf(&s, "Last-Attempt-Date: %s\r\n", r.LastAttempt.Format(time.RFC1123Z))
		}
		if !r.WillRetryUntil.IsZero() {
			fmt.Fprintf(&s, "Will-Retry-Until: %s\r\n", r.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return s.String(), nil
}

// ParsedDSN is what ParseDSN reads from a received DSN.
type ParsedDSN struct {
	ReportingMTA      string
	OriginalMessageID string // from X-Original-Message-ID or the returned headers
	Recipients        []DSNRecipient
}

// ParseDSN reads a multipart/report; report-type=delivery-status message.
func ParseDSN(msg []byte) (*ParsedDSN, error) {
	br := bufio.NewReader(bytes.NewReader(msg))
	hdr, err := gotextproto.ReadHeader(br)
	if err != nil && hdr.Len() == 0 {
		return nil, fmt.Errorf("parse DSN header: %w", err)
	}
	mt, params, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("parse DSN Content-Type: %w", err)
	}
	if !strings.EqualFold(mt, "multipart/report") || !strings.EqualFold(params["report-type"], "delivery-status") {
		return nil, fmt.Errorf("not a DSN: Content-Type %s report-type %q", mt, params["report-type"])
	}
	if params["boundary"] == "" {
		return nil, errors.New("parse DSN: no boundary")
	}
	mr := multipart.NewReader(br, params["boundary"])
	out := &ParsedDSN{}
	found := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse DSN part: %w", err)
		}
		pmt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		body, err := io.ReadAll(io.LimitReader(p, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("parse DSN part: %w", err)
		}
		switch strings.ToLower(pmt) {
		case "message/delivery-status", "message/global-delivery-status":
			found = true
			if err := parseStatusFields(body, out); err != nil {
				return nil, err
			}
		case "text/rfc822-headers", "message/rfc822":
			if out.OriginalMessageID == "" {
				h, _ := gotextproto.ReadHeader(bufio.NewReader(bytes.NewReader(body)))
				out.OriginalMessageID = strings.TrimSpace(h.Get("Message-Id"))
			}
		}
	}
	if !found {
		return nil, errors.New("parse DSN: no message/delivery-status part")
	}
	return out, nil
}

// parseStatusFields reads the per-message block and the per-recipient
// blocks of a delivery-status body (RFC 3464 §2.1: blocks of fields
// separated by empty lines).
func parseStatusFields(body []byte, out *ParsedDSN) error {
	body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	for i, block := range bytes.Split(bytes.TrimSpace(body), []byte("\n\n")) {
		h, err := gotextproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(block, "\n\n"...))))
		if err != nil && h.Len() == 0 {
			return fmt.Errorf("parse delivery-status block %d: %w", i+1, err)
		}
		if i == 0 {
			out.ReportingMTA = afterType(h.Get("Reporting-Mta"))
			if id := h.Get("X-Original-Message-Id"); id != "" {
				out.OriginalMessageID = strings.TrimSpace(id)
			}
			continue
		}
		rc := DSNRecipient{
			Recipient:  afterType(h.Get("Final-Recipient")),
			Action:     Action(strings.ToLower(strings.TrimSpace(h.Get("Action")))),
			Status:     strings.TrimSpace(h.Get("Status")),
			Diagnostic: afterType(h.Get("Diagnostic-Code")),
			RemoteMTA:  afterType(h.Get("Remote-Mta")),
		}
		if rc.Recipient == "" {
			rc.Recipient = afterType(h.Get("Original-Recipient"))
		}
		if rc.Recipient != "" {
			out.Recipients = append(out.Recipients, rc)
		}
	}
	if len(out.Recipients) == 0 {
		return errors.New("parse DSN: no recipient status")
	}
	return nil
}

// afterType strips the "rfc822;" / "dns;" / "smtp;" type of a field value.
func afterType(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		return strings.TrimSpace(rest)
	}
	return strings.TrimSpace(v)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func hostOr(h string) string {
	if h == "" {
		return "localhost"
	}
	return h
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
