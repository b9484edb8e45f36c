package mdn

// When each MDN goes out: the receiving side of Direct delivery
// notification (MDN-01..MDN-05, DN-01..DN-05), as one set of rules the
// gateway asks.
//
//   - A message the agent refused (untrusted, tampered, not encrypted...)
//     earns no MDN at all (TV-06, MDN-05): the sender's HISP times out and
//     tells its sender.
//   - A message the agent accepted that is itself a notice (IsNotice), or
//     that has no From to answer, earns none either (IN-03).
//   - Any other accepted message earns, from each accepted recipient's
//     address, a processed MDN (MDN-01); when it asked for timely and
//     reliable delivery with a well-formed Disposition-Notification-Options
//     request (DN-01), a dispatched MDN with the
//     X-DIRECT-FINAL-DESTINATION-DELIVERY field follows once the copy is in
//     the mailbox (DN-03). A malformed request gets processed and no
//     dispatched MDN (DN-05).
//   - A recipient whose copy could not be filed (over quota, no such
//     mailbox) gets, after the processed MDN, a failed MDN with a Failure
//     field (DN-04), asked for or not: the message was processed and then
//     failed, the sequence the Implementation Guide for Delivery
//     Notification gives for failures after processing.
//   - When no copy could be filed and every failure went out as a failed
//     MDN, the message is accepted (250) rather than refused, so that the
//     sender learns the outcome once, from the MDN, as from the reference
//     implementation; if a failed MDN could not be queued, the refusal
//     stays (LeaveToMDN).
//
// The MDNs carry no Disposition-Notification-To of their own (MDN-03).

// Owed is what MDNs the recipients of one accepted message owe its sender.
type Owed struct {
	// None: the message earns no MDN (a notice, or no From).
	None bool
	// Dispatched: a dispatched MDN follows the processed one once the copy
	// is filed (timely and reliable delivery was asked for, DN-03).
	Dispatched bool
	// MalformedRequest: the message carried a Disposition-Notification-
	// Options field that is malformed or asks for something unsupported:
	// processed only (DN-05). For the log.
	MalformedRequest bool
}

// OwedFor returns the MDNs owed for a message the agent accepted: whether it
// is a notice, its verified From, and its Disposition-Notification-Options
// field ("" if absent).
func OwedFor(notice bool, from, dispositionOptions string) Owed {
	if notice || from == "" {
		return Owed{None: true}
	}
	timely := TimelyAndReliableRequested(dispositionOptions)
	return Owed{Dispatched: timely, MalformedRequest: dispositionOptions != "" && !timely}
}

// OnFiled returns the MDNs of one recipient whose copy is filed, in the
// order they go out, made from base (the MDN without its disposition):
// processed, then dispatched when owed. None when o.None.
func (o Owed) OnFiled(base MDN) []MDN {
	if o.None {
		return nil
	}
	p := base
	p.Disposition = DispositionProcessed
	out := []MDN{p}
	if o.Dispatched {
		d := base
		d.Disposition, d.FinalDestination = DispositionDispatched, true
		out = append(out, d)
	}
	return out
}

// OnFilingFailed returns the failed MDN of one recipient whose copy could
// not be filed, for why (DN-04); it follows the processed MDN of OnFiled,
// never the dispatched one. Nil when o.None.
func (o Owed) OnFilingFailed(base MDN, why string) *MDN {
	if o.None {
		return nil
	}
	f := base
	f.Disposition, f.Failure = DispositionFailed, why
	return &f
}

// LeaveToMDN reports whether a message none of whose copies could be filed
// is accepted all the same, its failures told by failed MDNs: only when
// every recipient's copy failed and every failed MDN was queued (DN-04).
func LeaveToMDN(recipients, failed int, allReported bool) bool {
	return allReported && failed > 0 && failed == recipients
}
