package mdn

import (
	"fmt"
	"mime"
	"strings"
	"time"
)

// This file holds the rules about notices that more than one part of hisp
// asks: which message is a notice, and the one DSN hisp files for a sender
// about recipients of its message (dropped at submission, failed or delayed
// by the queue, timed out in the tracking).

// IsNotice reports whether a message whose Content-Type is ct is a notice:
// an MDN or a DSN, that is multipart/report with report-type
// disposition-notification or delivery-status (RFC 6522, RFC 8098, RFC
// 3464). A notice is never answered with an MDN (IN-03, MDN-05), may go out
// with a null reverse path, and is not tracked for delivery (nothing answers
// it). A multipart/report of another report-type (a feedback or TLS
// report) is ordinary mail. A Content-Type whose parameters do not parse is
// judged on its text, so that a sloppy notice is still not answered.
func IsNotice(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		l := strings.ToLower(ct)
		return strings.HasPrefix(strings.TrimSpace(l), "multipart/report") &&
			(strings.Contains(l, "disposition-notification") || strings.Contains(l, "delivery-status"))
	}
	if mt != "multipart/report" {
		return false
	}
	rt := strings.ToLower(params["report-type"])
	return rt == "disposition-notification" || rt == "delivery-status"
}

// Postmaster is the address hisp's DSNs to addr come from: the postmaster
// of addr's domain (RFC 5321 §4.5.1), postmaster@localhost for an address
// without one.
func Postmaster(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		if d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(addr[i+1:]), ">")); d != "" {
			return "postmaster@" + d
		}
	}
	return "postmaster@localhost"
}

// SenderReport is what hisp tells a sender about some recipients of one of
// its messages.
type SenderReport struct {
	ReportingMTA string // hisp's host name
	Sender       string // the address the DSN is filed for
	MessageID    string // the reported message's Message-ID
	// Original is the reported message or its header block; only its
	// header goes in the DSN. Nil: a header naming MessageID alone (the
	// queue and the tracker keep no more).
	Original []byte
	Arrival  time.Time
	Date     time.Time // zero: now
	// Recipients are the recipients reported on: failed (TV-06, OUT-01,
	// DN-06) or delayed.
	Recipients []DSNRecipient
}

// BuildSenderDSN returns the DSN (RFC 3464) from the postmaster of the
// sender's domain to the sender about r's recipients, or nil when there are
// none. Every DSN hisp files for a sender is built here: at submission for
// the recipients the agent dropped, by the queue for those it failed or
// delayed, by the tracker for those whose MDN did not come in time.
func BuildSenderDSN(r SenderReport) ([]byte, error) {
	if len(r.Recipients) == 0 {
		return nil, nil
	}
	orig := []byte("Message-ID: " + oneLine(r.MessageID) + "\r\n")
	if r.Original != nil {
		orig, _ = splitMessage(r.Original) // with the empty line that ends it
	}
	dsn, err := BuildDSN(DSN{ReportingMTA: r.ReportingMTA, From: Postmaster(r.Sender), To: r.Sender,
		OriginalMessageID: r.MessageID, OriginalHeaders: orig, Arrival: r.Arrival, Date: r.Date,
		Recipients: r.Recipients})
	if err != nil {
		return nil, fmt.Errorf("DSN for %s to %s: %w", r.MessageID, r.Sender, err)
	}
	return dsn, nil
}
