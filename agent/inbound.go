package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// InboundResult is a received Direct message, opened and verified.
type InboundResult struct {
	// Message is the inner message as filed: hisp's VerificationHeader
	// fields first (one per recipient domain that accepted it), then the
	// inner message without any incoming field of that name (IN-04).
	Message []byte
	// Recipients has one result per envelope recipient, in order.
	Recipients []RecipientResult
	// Signer is the trusted signer and Anchor the anchor that trusted it,
	// for the first recipient domain that accepted the message.
	Signer *x509.Certificate
	Anchor *x509.Certificate
	// MessageID and From are the inner message's (From lower case).
	MessageID, From string
	// Notification is set when the inner message is an MDN or a DSN
	// (multipart/report with report-type disposition-notification or
	// delivery-status): never answer it with an MDN (IN-03).
	Notification bool
	// DispositionOptions is the inner Disposition-Notification-Options
	// field (DN-01), "" if absent.
	DispositionOptions string
}

// Inbound opens a Direct message for local recipients and decides, per
// recipient, whether it is delivered (see the package documentation for the
// rules). It returns an *Error when the whole message is refused (with
// Error.Recipients set when that is because each recipient was refused),
// another error on a local failure, and otherwise a result per recipient.
func (a *Agent) Inbound(ctx context.Context, env Envelope, msg []byte) (*InboundResult, error) {
	const action = "inbound"
	in := &inbound{env: env, msgID: outerMessageID(msg)}
	fail := func(e *Error) (*InboundResult, error) {
		a.log.Debug("agent: inbound refused", "message-id", in.msgID, "err", e.Err)
		a.auditAll(ctx, action, env, in.msgID, e.Status)
		return nil, e
	}
	if len(env.Recipients) == 0 {
		return fail(refuse(RefusedNoRecipients, nil, "no recipients"))
	}
	var err error
	if in.snap, err = a.current(ctx); err != nil {
		return nil, err
	}
	// 1. The recipients, and every key held for them (IN-02).
	if err := a.inboundRecipients(ctx, in); err != nil {
		return nil, err
	}
	if len(in.cands) == 0 {
		return a.refuseEach(ctx, env, in.msgID, in.results)
	}
	// 2. Decrypt, verify signatures, unwrap (IN-01, TV-08, MF-02, MF-08).
	if in.opened, err = smime.Open(msg, in.keys); err != nil {
		return fail(openError(err))
	}
	// 3. The inner message is the authoritative one: the routing fields
	// outside and the envelope must agree with it (MF-05).
	if e := in.readInner(); e != nil {
		return fail(e)
	}
	if e := in.checkRouting(); e != nil {
		return fail(e)
	}
	// 4. Trust: per recipient domain, against its inbound anchors, bound to
	// the inner From (TV-01, TV-05, TV-07).
	verdicts, order := a.trustRecipients(ctx, in)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("inbound %s: %w", in.msgID, err)
	}
	if len(order) == 0 {
		return a.refuseEach(ctx, env, in.msgID, in.results)
	}
	// 5. The message to file.
	first := verdicts[order[0]]
	res := &InboundResult{
		MessageID:          in.msgID,
		From:               in.from,
		Notification:       in.notification,
		DispositionOptions: oneLine(in.ih.get("disposition-notification-options")),
		Signer:             first.signer,
		Anchor:             first.verdict.Anchor,
		Recipients:         in.results,
		Message:            a.filedMessage(ctx, in, verdicts, order),
	}
	act := actor(env)
	for _, r := range in.results {
		a.audit(ctx, action, act, auditSubject(in.msgID, r.Recipient), r.Status)
	}
	return res, nil
}

// inbound is a message on its way through Inbound's phases.
type inbound struct {
	env   Envelope
	snap  *snapshot
	msgID string // the outer Message-ID, then the inner one

	// The recipients (phase 1): a result per envelope recipient, those
	// still in the running and the keys held for them.
	results []RecipientResult
	cands   []inboundCandidate
	keys    []cms.KeyPair

	opened *smime.Opened // phase 2

	// The inner message (phase 3): its header and body, its From and its
	// routing fields (from, sender, to, cc), whether it is a notice.
	ih           header
	innerBody    []byte
	from         string
	inner        map[string][]string
	notification bool
}

// inboundCandidate is a recipient that holds a key, to be judged on trust.
type inboundCandidate struct {
	i            int // in results
	addr, domain string
}

// outerMessageID is the outer Message-ID of a message, if readable: for
// the audit of early refusals.
func outerMessageID(msg []byte) string {
	if hb, _ := splitMessage(msg); len(hb) <= maxHeader {
		if oh, err := parseHeader(hb); err == nil {
			return oneLine(oh.get("message-id"))
		}
	}
	return ""
}

// inboundRecipients sets the result of each envelope recipient that is no
// known local address with a key for decryption, and collects the others
// and every key held for them, address- and organization-bound (IN-02).
func (a *Agent) inboundRecipients(ctx context.Context, in *inbound) error {
	snap := in.snap
	in.results = make([]RecipientResult, len(in.env.Recipients))
	seenKey := map[int64]bool{}
	for i, r := range in.env.Recipients {
		in.results[i].Recipient = r
		addr, domain, err := store.NormalizeAddress(r)
		if err != nil {
			in.results[i].Status = status(RefusedBadAddress, "bad recipient address <%s>: %v", r, err)
			continue
		}
		if !snap.domains[domain] {
			in.results[i].Status = status(RefusedRelaying, "<%s> is not in a local domain: relaying denied", addr)
			continue
		}
		in.results[i].Local = true
		ok, err := snap.isAddress(ctx, a, addr)
		if err != nil {
			return fmt.Errorf("inbound: %w", err)
		}
		if !ok {
			in.results[i].Status = status(RefusedNoSuchAddress, "<%s>: no such local address", addr)
			continue
		}
		n := 0
		for _, owner := range []string{addr, domain} {
			list, err := snap.owner(ctx, a, owner)
			if err != nil {
				return fmt.Errorf("inbound: certificates of %s: %w", owner, err)
			}
			for _, lc := range list {
				if !lc.hasKey || lc.cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
					continue
				}
				n++
				if seenKey[lc.id] {
					continue
				}
				k, err := snap.key(ctx, a, lc.id)
				if err != nil {
					return fmt.Errorf("inbound: key of certificate %d of %s: %w", lc.id, owner, err)
				}
				seenKey[lc.id] = true
				in.keys = append(in.keys, cms.KeyPair{Cert: lc.cert, Key: k})
			}
		}
		if n == 0 {
			in.results[i].Status = status(RefusedUndecryptable, "<%s> holds no certificate with a key for decryption", addr)
			continue
		}
		in.cands = append(in.cands, inboundCandidate{i, addr, domain})
	}
	return nil
}

// readInner reads the header of the opened inner message: its Message-ID,
// From and routing fields (MF-05), and whether it is a notice (IN-03).
func (in *inbound) readInner() *Error {
	innerHdr, innerBody := splitMessage(in.opened.Message)
	ih, err := parseHeader(innerHdr)
	if err != nil {
		return refuse(RefusedMalformed, err, "malformed header in the signed message: %v", err)
	}
	in.ih, in.innerBody = ih, innerBody
	if id := oneLine(ih.get("message-id")); id != "" {
		in.msgID = id
	}
	from, err := ih.single("from")
	if err == nil && from == "" {
		err = errors.New("no From field")
	}
	if err != nil {
		return refuse(RefusedMalformed, err, "signed message: unusable From: %v", err)
	}
	in.from = from
	in.inner = map[string][]string{"from": {from}}
	for _, name := range []string{"sender", "to", "cc"} {
		if in.inner[name], err = ih.addresses(name); err != nil {
			return refuse(RefusedMalformed, err, "signed message: unusable %v", err)
		}
	}
	in.notification = mdn.IsNotice(ih.get("content-type"))
	return nil
}

// checkRouting refuses a message whose outer routing fields or envelope
// disagree with the signed message (MF-05): MAIL FROM must be its From or
// Sender (or null for a notice, which goes out with a null reverse path),
// and every RCPT in its To or Cc.
func (in *inbound) checkRouting() *Error {
	oh, err := parseHeader(bytes.TrimRight(in.opened.Outer, "\r\n"))
	if err != nil {
		return refuse(RefusedMalformed, err, "malformed outer header: %v", err)
	}
	for _, name := range []string{"from", "sender", "to", "cc"} {
		if !oh.has(name) {
			continue
		}
		outer, err := oh.addresses(name)
		if err != nil || !sameSet(outer, in.inner[name]) {
			return refuse(RefusedTampered, err, "outer %s field %q does not match the signed message's %q: refused as tampered (MF-05)",
				canonicalName(name), limit(strings.Join(oh.values(name), ", "), 200), limit(strings.Join(in.inner[name], ", "), 200))
		}
	}
	mailFrom := envAddr(in.env.MailFrom)
	switch {
	case mailFrom == "" && in.notification:
	case mailFrom == "" || (mailFrom != in.from && !contains(in.inner["sender"], mailFrom)):
		return refuse(RefusedEnvelope, nil, "envelope sender <%s> is not the From <%s> of the signed message: refused as tampered (MF-05)", in.env.MailFrom, in.from)
	}
	listed := set(append(in.inner["to"], in.inner["cc"]...))
	for _, r := range in.env.Recipients {
		if !listed[envAddr(r)] {
			return refuse(RefusedEnvelope, nil, "recipient <%s> is not in the To or Cc field of the signed message: refused as tampered (MF-05)", r)
		}
	}
	return nil
}

// trustRecipients judges the signers once per recipient domain and sets
// each candidate's result; it returns the verdicts and the domains that
// trust a signer, in the order of their first recipient.
func (a *Agent) trustRecipients(ctx context.Context, in *inbound) (map[string]*signerVerdict, []string) {
	verdicts := map[string]*signerVerdict{}
	var order []string
	for _, c := range in.cands {
		sv, ok := verdicts[c.domain]
		if !ok {
			sv = a.trustSigner(ctx, in.snap, in.opened, in.from, c.domain)
			verdicts[c.domain] = sv
			if sv.trusted {
				order = append(order, c.domain)
			}
		}
		rr := &in.results[c.i]
		switch {
		case !sv.trusted && sv.provisional:
			// [trust] revocation = "defer": the sender tries again (TV-04).
			rr.Status = status(TemporaryRevocation, "signer's revocation status could not be established for %s, try again later: %s", c.domain, sv.reason)
		case !sv.trusted:
			rr.Status = status(RefusedUntrusted, "signer not trusted by %s: %s", c.domain, sv.reason)
		default:
			rr.Accepted = true
			rr.Status = status(Accepted, "signed by %s, trusted through %s", sv.signer.Subject, sv.verdict.Anchor.Subject)
		}
	}
	return verdicts, order
}

// filedMessage is the message to file: our verification fields, one per
// accepting domain, then the inner message without any that came with it
// (inside or, for an unwrapped message, outside) (IN-04). The clinical
// content layer adds its notes, and documents and views beside the parts
// that came (content.go); it never refuses (MF-09).
func (a *Agent) filedMessage(ctx context.Context, in *inbound, verdicts map[string]*signerVerdict, order []string) []byte {
	writeInner := func(w *bytes.Buffer) {
		for _, f := range in.ih {
			if f.lname == strings.ToLower(VerificationHeader) {
				continue
			}
			w.Write(f.raw)
			if !bytes.HasSuffix(f.raw, []byte("\n")) {
				w.WriteString("\r\n")
			}
		}
		w.WriteString("\r\n")
		w.Write(in.innerBody)
	}
	var notes []string
	var filed []byte
	if a.content != nil && !in.notification {
		var rest bytes.Buffer
		rest.Grow(len(in.opened.Message))
		writeInner(&rest)
		var cn []contentNote
		filed, cn = a.inboundContent(rest.Bytes())
		for _, n := range cn {
			notes = append(notes, n.header()...)
		}
		a.auditContent(ctx, in.env, in.msgID, cn)
	}
	var b bytes.Buffer
	b.Grow(max(len(in.opened.Message), len(filed)) + 512*len(order) + 256*len(notes))
	now := a.now().UTC()
	for _, d := range order {
		a.writeVerification(&b, d, verdicts[d], in.opened, now, notes...)
	}
	if filed != nil {
		b.Write(filed)
	} else {
		writeInner(&b)
	}
	return b.Bytes()
}

// refuseEach refuses a message whose every recipient was refused: an audit
// record per recipient, and an *Error carrying the first refusal.
func (a *Agent) refuseEach(ctx context.Context, env Envelope, msgID string, results []RecipientResult) (*InboundResult, error) {
	act := actor(env)
	for _, r := range results {
		a.audit(ctx, "inbound", act, auditSubject(msgID, r.Recipient), r.Status)
	}
	// A temporary refusal of one recipient (a revocation outage) makes the
	// sender try the whole message again, rather than give up on it.
	first := results[0]
	for _, r := range results {
		if r.Status.Temporary() {
			first = r
			break
		}
	}
	st := first.Status
	if len(results) > 1 {
		st.Reason = fmt.Sprintf("no recipient accepted the message; <%s>: %s", first.Recipient, st.Reason)
	}
	return nil, &Error{Status: st, Recipients: results}
}

// signerVerdict is the outcome of trust for one recipient domain.
type signerVerdict struct {
	trusted bool
	reason  string // why not trusted
	// provisional: not trusted only for want of a revocation status, under
	// trust.DeferUnavailable
	provisional bool
	signer      *x509.Certificate
	result      smime.SignerResult
	verdict     trust.Verdict
}

// trustSigner validates each valid signer against domain's inbound anchors
// for signing, bound to from; the first trusted one wins (TV-07).
func (a *Agent) trustSigner(ctx context.Context, snap *snapshot, opened *smime.Opened, from, domain string) *signerVerdict {
	anchors := snap.in[domain]
	if len(anchors.certs) == 0 {
		return &signerVerdict{reason: fmt.Sprintf("%s has no inbound trust anchors (hisp anchor add %s CA.pem --direction in)", domain, domain)}
	}
	var reasons []string
	provisional := false
	for _, sr := range opened.Signers {
		if sr.Err != nil || sr.Cert == nil {
			continue
		}
		v := snap.validate(ctx, a, trust.Request{Cert: sr.Cert, Intermediates: opened.Certificates,
			Address: from, Purpose: trust.Signing}, anchors)
		if v.Trusted && v.Anchor != nil {
			why := snap.checkPolicies(domain, store.DirectionIn, sr.Cert) // policy.go
			if why == "" {
				return &signerVerdict{trusted: true, signer: sr.Cert, result: sr, verdict: v}
			}
			v.Reason = why
		}
		provisional = provisional || v.Provisional
		reasons = append(reasons, sr.Cert.Subject.String()+": "+v.Reason)
	}
	if len(reasons) == 0 {
		return &signerVerdict{reason: "no valid signature"}
	}
	return &signerVerdict{reason: joinReasons(reasons), provisional: provisional}
}

// openError maps a refusal of smime.Open to an SMTP status.
func openError(err error) *Error {
	switch {
	case errors.Is(err, smime.ErrNotEncrypted):
		return refuse(RefusedUnprotected, err, "Direct mail must be encrypted; this message is not (IN-01)")
	case errors.Is(err, smime.ErrNotSigned):
		return refuse(RefusedUnprotected, err, "Direct mail must be signed; this message is not (IN-01)")
	case errors.Is(err, smime.ErrWeakCipher), errors.Is(err, smime.ErrWeakKeyTransport), errors.Is(err, smime.ErrWeakDigest), errors.Is(err, smime.ErrWeakSignature), errors.Is(err, smime.ErrWeakKey):
		return refuse(RefusedWeakAlgorithm, err, "algorithm or key refused by the Direct profile: %v", err)
	case errors.Is(err, smime.ErrDigestMismatch), errors.Is(err, smime.ErrBadSignature), errors.Is(err, smime.ErrSignerCertMissing):
		return refuse(RefusedTampered, err, "signature check failed (TV-08): %v", err)
	case errors.Is(err, smime.ErrNoRecipient):
		return refuse(RefusedUndecryptable, err, "the message is not encrypted to any certificate of its recipients")
	case errors.Is(err, smime.ErrDecryption):
		// Which of key transport, padding or tag failed is not told
		// (package cms).
		return refuse(RefusedUndecryptable, err, "the message does not decrypt: damaged or tampered")
	case errors.Is(err, smime.ErrMalformed):
		// Without integrity protection (CBC), tampered ciphertext often
		// decrypts to garbage that ends up here: a security refusal.
		return refuse(RefusedUndecryptable, err, "malformed Direct message: %v", err)
	}
	// A local key that does not fit its certificate, and the like: ours
	// to fix, so the sender should retry.
	return refuse(TemporaryLocal, err, "local error opening the message")
}

// writeVerification writes one VerificationHeader field, folded.
func (a *Agent) writeVerification(b *bytes.Buffer, domain string, sv *signerVerdict, o *smime.Opened, now time.Time, notes ...string) {
	parts := []string{
		"pass",
		"domain=" + domain,
		"signer=" + quote(sv.signer.Subject.String()),
		"signer-san=" + quote(store.SANSummary(sv.signer)),
		"binding=" + sv.verdict.Binding.String(),
		"anchor=" + quote(sv.verdict.Anchor.Subject.String()),
		"digest=" + token(sv.result.Digest),
		"signature=" + token(sv.result.Algorithm),
		"cipher=" + token(o.Cipher.String()),
		"key-transport=" + token(o.KeyTransport.String()),
		"wrapped=" + map[bool]string{true: "yes", false: "no"}[o.Wrapped],
	}
	parts = append(parts, notes...) // content notes (content.go)
	parts = append(parts, []string{
		"host=" + token(a.host),
		"time=" + now.Format(time.RFC3339),
	}...)
	line := VerificationHeader + ": " + parts[0]
	b.WriteString(line)
	n := len(line)
	for _, p := range parts[1:] {
		if n+len(p)+2 > 76 {
			b.WriteString(";\r\n\t")
			n = 1
		} else {
			b.WriteString("; ")
			n += 2
		}
		b.WriteString(p)
		n += len(p)
	}
	b.WriteString("\r\n")
}

// quote returns s as a quoted string for a header: printable characters
// only, at most 200 of them.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range limit(s, 200) {
		switch {
		case r == utf8.RuneError:
			b.WriteByte('?')
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case !unicode.IsPrint(r):
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// token returns s with anything but letters, digits and "-._:" replaced.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-._:", r)) {
			return r
		}
		return '_'
	}, s)
}

// limit cuts s to at most n bytes, on a rune boundary.
func limit(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
