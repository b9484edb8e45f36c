package mdn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Notice is an MDN or a DSN about a sent message, as the tracker reads it
// (the sending side of delivery notification, DN-06, DN-07).
type Notice struct {
	Type              string // "mdn" or "dsn"
	OriginalMessageID string
	// From is the notice's author, the verified inner From of the Direct
	// message that carried it; the tracker believes it only about
	// recipients of its own organization.
	From       string
	Recipients []NoticeRecipient
}

// NoticeRecipient is what a notice says about one recipient.
type NoticeRecipient struct {
	// Addresses are the ways the notice names the recipient, best first:
	// Final-Recipient, Original-Recipient, the MDN's From.
	Addresses []string
	// Kind is processed, dispatched, failed, delayed or notice (anything
	// else: displayed, deleted, a delivered DSN).
	Kind string
	// FinalDestination is set on a dispatched MDN with the
	// X-DIRECT-FINAL-DESTINATION-DELIVERY field (DN-03).
	FinalDestination bool
	Detail           string // Failure, Error, Diagnostic-Code, Status
}

// ParseNotice reads an MDN (multipart/report;
// report-type=disposition-notification) or a DSN (report-type
// delivery-status).
func ParseNotice(msg []byte) (*Notice, error) {
	m, mdnErr := ParseMDN(msg)
	if mdnErr == nil {
		return FromMDN(m), nil
	}
	d, dsnErr := ParseDSN(msg)
	if dsnErr == nil {
		return FromDSN(d, headerFrom(msg)), nil
	}
	return nil, fmt.Errorf("not a notice: %w", errors.Join(mdnErr, dsnErr))
}

// FromMDN turns a parsed MDN into a Notice. A disposition with the error
// modifier, failed and denied are failures; processed and dispatched are
// themselves; others (displayed, deleted) are information.
func FromMDN(m *MDN) *Notice {
	n := &Notice{Type: "mdn", OriginalMessageID: m.OriginalMessageID, From: strings.ToLower(m.From)}
	nr := NoticeRecipient{FinalDestination: m.FinalDestination}
	for _, a := range []string{m.FinalRecipient, m.OriginalRecipient, m.From} {
		if a != "" {
			nr.Addresses = append(nr.Addresses, a)
		}
	}
	failed := false
	for _, mod := range m.Modifiers {
		if mod == "error" || mod == "failed" {
			failed = true
		}
	}
	switch {
	case failed, m.Disposition == DispositionFailed, m.Disposition == DispositionDenied:
		nr.Kind = KindFailed
		nr.Detail = joinDetail(joinDetail(m.Failure, m.Error), "disposition "+string(m.Disposition))
	case m.Disposition == DispositionProcessed:
		nr.Kind = KindProcessed
	case m.Disposition == DispositionDispatched:
		nr.Kind = KindDispatched
	default:
		nr.Kind = KindInformation
		nr.Detail = "disposition " + string(m.Disposition)
	}
	if nr.Detail == "" {
		nr.Detail = "MDN from " + m.From
	}
	n.Recipients = []NoticeRecipient{nr}
	return n
}

// FromDSN turns a parsed DSN into a Notice; from is the DSN's From.
// Action failed is a failure, delayed a delay, others information.
func FromDSN(d *ParsedDSN, from string) *Notice {
	n := &Notice{Type: "dsn", OriginalMessageID: d.OriginalMessageID, From: strings.ToLower(from)}
	for _, r := range d.Recipients {
		nr := NoticeRecipient{Addresses: []string{r.Recipient}, Detail: joinDetail(r.Status, r.Diagnostic)}
		switch r.Action {
		case Failed:
			nr.Kind = KindFailed
		case Delayed:
			nr.Kind = KindDelayed
		default:
			nr.Kind = KindInformation
			nr.Detail = joinDetail("DSN action "+string(r.Action), nr.Detail)
		}
		n.Recipients = append(n.Recipients, nr)
	}
	return n
}

// headerFrom returns the address of a message's From field, "" if none.
func headerFrom(msg []byte) string {
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	a, err := mail.ParseAddress(h.Get("From"))
	if err != nil {
		return ""
	}
	return a.Address
}
