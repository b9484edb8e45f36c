package agent

import "strconv"

// Outcome is what the agent made of a message or of one recipient, by name:
// the agent decides outcomes, and OutcomeReplies says, in one table, which
// SMTP reply (and enhanced status code, RFC 3463, also used in DSNs) each
// one is answered with.
type Outcome uint8

// The outcomes.
const (
	_ Outcome = iota
	// Accepted: sealed for the recipient, or opened, verified and trusted.
	Accepted

	// RefusedMalformed: a header field the rules need does not parse, or is
	// missing (MF-06).
	RefusedMalformed
	// RefusedNoRecipients: the envelope names nobody.
	RefusedNoRecipients
	// RefusedBadAddress: a recipient address does not parse.
	RefusedBadAddress
	// RefusedBadSender: the From address does not parse.
	RefusedBadSender
	// RefusedNoSuchAddress: a recipient in a local domain that is no
	// local address.
	RefusedNoSuchAddress
	// RefusedNotLocal: hisp sends only for its own domains.
	RefusedNotLocal
	// RefusedRelaying: hisp receives only for its own domains.
	RefusedRelaying
	// RefusedSender: the envelope sender or a sender field names someone
	// the login may not send as (MF-05, OUT-02).
	RefusedSender
	// RefusedBcc: a Bcc, or a recipient not in To or Cc (MF-05).
	RefusedBcc
	// RefusedNoSigningCert: the sender has no certificate to sign with
	// (OUT-02).
	RefusedNoSigningCert
	// RefusedSealing: the message could not be signed and encrypted.
	RefusedSealing
	// RefusedUntrusted: no trusted certificate for a recipient (TV-01,
	// TV-05, TV-06), or no trusted signer (TV-07).
	RefusedUntrusted
	// RefusedUnprotected: inbound mail not encrypted or not signed (IN-01).
	RefusedUnprotected
	// RefusedEnvelope: the envelope disagrees with the signed message: MAIL
	// FROM not its From or Sender, a RCPT not in its To or Cc (MF-05).
	RefusedEnvelope
	// RefusedTampered: the outer routing fields disagree with the signed
	// ones (MF-05), or the signature does not check (TV-08).
	RefusedTampered
	// RefusedWeakAlgorithm: an algorithm or key the Direct profile refuses.
	RefusedWeakAlgorithm
	// RefusedUndecryptable: not encrypted to a key of the recipients, does
	// not decrypt, or is no well-formed Direct message; or the recipient
	// holds no key to decrypt with (IN-02).
	RefusedUndecryptable
	// RefusedRevocationUnknown: a recipient's revocation status stayed
	// unknown for the whole [trust] revocation_grace (TV-04).
	RefusedRevocationUnknown

	// TemporaryLocal: a failure of ours (the store, a key): try again.
	TemporaryLocal
	// TemporaryDiscovery: a certificate look-up failed; the certificate
	// may well exist (CD-*): try again.
	TemporaryDiscovery
	// TemporaryRevocation: a revocation status could not be established
	// under [trust] revocation = "defer" (TV-04): try again, for up to the
	// grace.
	TemporaryRevocation
)

// Reply is an SMTP reply code with its enhanced status code.
type Reply struct {
	Code     int
	Enhanced string
}

// OutcomeReplies is the one table of the replies the outcomes are answered
// with.
var OutcomeReplies = map[Outcome]Reply{
	Accepted:                 {250, "2.0.0"},
	RefusedMalformed:         {554, "5.6.0"},
	RefusedNoRecipients:      {554, "5.5.1"},
	RefusedBadAddress:        {550, "5.1.3"},
	RefusedBadSender:         {550, "5.1.7"},
	RefusedNoSuchAddress:     {550, "5.1.1"},
	RefusedNotLocal:          {550, "5.7.1"},
	RefusedRelaying:          {550, "5.7.1"},
	RefusedSender:            {550, "5.7.1"},
	RefusedBcc:               {550, "5.7.1"},
	RefusedNoSigningCert:     {554, "5.7.0"},
	RefusedSealing:           {554, "5.7.0"},
	RefusedUntrusted:         {550, "5.7.1"},
	RefusedUnprotected:       {550, "5.7.1"},
	RefusedEnvelope:          {550, "5.7.1"},
	RefusedTampered:          {550, "5.7.7"},
	RefusedWeakAlgorithm:     {550, "5.7.6"},
	RefusedUndecryptable:     {550, "5.7.5"},
	RefusedRevocationUnknown: {550, "5.7.5"},
	TemporaryLocal:           {451, "4.3.0"},
	TemporaryDiscovery:       {451, "4.4.3"},
	TemporaryRevocation:      {451, RevocationDeferred},
}

var outcomeNames = map[Outcome]string{
	Accepted: "accepted", RefusedMalformed: "refused-malformed", RefusedNoRecipients: "refused-no-recipients",
	RefusedBadAddress: "refused-bad-address", RefusedBadSender: "refused-bad-sender", RefusedNoSuchAddress: "refused-no-such-address",
	RefusedNotLocal: "refused-not-local", RefusedRelaying: "refused-relaying", RefusedSender: "refused-sender",
	RefusedBcc: "refused-bcc", RefusedNoSigningCert: "refused-no-signing-certificate", RefusedSealing: "refused-sealing",
	RefusedUntrusted: "refused-untrusted", RefusedUnprotected: "refused-unprotected", RefusedEnvelope: "refused-envelope",
	RefusedTampered: "refused-tampered", RefusedWeakAlgorithm: "refused-weak-algorithm", RefusedUndecryptable: "refused-undecryptable",
	RefusedRevocationUnknown: "refused-revocation-unknown", TemporaryLocal: "temporary-local",
	TemporaryDiscovery: "temporary-discovery", TemporaryRevocation: "temporary-revocation",
}

// String is the outcome's name: "accepted", "refused-untrusted"...
func (o Outcome) String() string {
	if n, ok := outcomeNames[o]; ok {
		return n
	}
	return "outcome-" + strconv.Itoa(int(o))
}

// Reply is the reply the outcome is answered with (OutcomeReplies); a
// temporary local failure for an outcome the table lacks.
func (o Outcome) Reply() Reply {
	if r, ok := OutcomeReplies[o]; ok {
		return r
	}
	return OutcomeReplies[TemporaryLocal]
}
