package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// OutboundResult is what Outbound made of a message.
type OutboundResult struct {
	MessageID string
	// Message is the plain message as it was sealed: the submitted one,
	// with Message-ID, Date and MIME-Version added when they were missing
	// and an empty Bcc removed. A recipient deferred with a 4xx status is
	// retried with this message, so that it keeps its Message-ID.
	Message []byte
	// Signer is the certificate the message was signed with.
	Signer *x509.Certificate
	// Sealed is the Direct message, encrypted once to every certificate of
	// every accepted recipient, local and remote; nil if none was accepted.
	// When the accepted recipients have different profiles it is the first
	// of Copies only: callers that queue the message use Copies.
	Sealed []byte
	// Copies are the sealed messages, one per outbound profile among the
	// accepted recipients, in the order of their first recipient; one
	// unless Options.Profiles sets different algorithms for recipients of
	// this message.
	Copies []SealedCopy
	// Recipients has one result per envelope recipient, in order: the
	// accepted ones, and the dropped ones with why (a 5xx status: refused
	// for good, for the caller to tell the sender by DSN, TV-06, OUT-01; a
	// 4xx one: for the caller to retry).
	Recipients []RecipientResult
}

// Outbound signs and encrypts a message from a local sender to its
// recipients (see the package documentation for the rules). It returns an
// *Error when the whole message is refused, another error on a local failure
// (store, context), and otherwise a result per recipient.
func (a *Agent) Outbound(ctx context.Context, env Envelope, msg []byte) (*OutboundResult, error) {
	const action = "outbound"
	out := &outbound{env: env, msg: msg}
	fail := func(e *Error) (*OutboundResult, error) {
		a.auditAll(ctx, action, env, out.msgID, e.Status)
		return nil, e
	}
	// 1. The header: From, To, Sender, Cc (MF-06).
	if e := out.readHeader(); e != nil {
		return fail(e)
	}
	// 2. Who may send it (MF-05, OUT-02), and to whom (no Bcc).
	if e := out.checkSender(); e != nil {
		return fail(e)
	}
	if e := out.checkRecipients(); e != nil {
		return fail(e)
	}
	// 3. The signer: a local sender with a signing certificate (OUT-02).
	from, senderDomain, err := store.NormalizeAddress(out.from)
	if err != nil {
		return fail(refuse(RefusedBadSender, err, "From address: %v", err))
	}
	snap, err := a.current(ctx)
	if err != nil {
		return nil, err
	}
	if !snap.domains[senderDomain] {
		return fail(refuse(RefusedNotLocal, nil, "%s is not a local domain: hisp sends only for its own domains", senderDomain))
	}
	signer, err := a.signingIdentity(ctx, snap, from, senderDomain)
	if err != nil {
		return nil, err
	}
	if signer == nil {
		return fail(refuse(RefusedNoSigningCert, nil, "no signing certificate for %s: neither it nor %s has a valid certificate with a key for digitalSignature (OUT-02); issue one with `hisp cert issue %s` or import one with `hisp cert import`",
			from, senderDomain, from))
	}
	// 4. The message to seal (MF-06, DN-02).
	prepared, msgID, err := a.prepare(out.h, out.body, msg, senderDomain)
	if err != nil {
		return nil, err
	}
	out.msgID = msgID
	res := &OutboundResult{MessageID: msgID, Message: prepared, Signer: signer.Cert}
	// 5. The recipients' certificates: each distinct address once,
	// concurrently (remote ones may wait on DNS or LDAP) (OUT-01).
	res.Recipients = a.resolveAll(ctx, snap, env.Recipients, senderDomain)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("outbound %s: %w", msgID, err)
	}
	// 6. The clinical content layer packages before signing (content.go).
	if a.content != nil && !out.nullNotification {
		res.Message = a.packageContent(ctx, env, msgID, from, res)
	}
	// 7. Sealed once per profile among the accepted recipients (AS-07).
	if err := a.sealCopies(res.Message, *signer, res); err != nil {
		return fail(refuse(RefusedSealing, err, "the message could not be signed and encrypted: %v", err))
	}
	act := actor(env)
	for _, r := range res.Recipients {
		a.audit(ctx, action, act, auditSubject(msgID, r.Recipient), r.Status)
	}
	return res, nil
}

// outbound is a submission on its way through Outbound's phases.
type outbound struct {
	env   Envelope
	msg   []byte
	msgID string // as submitted, then as sealed

	h                      header
	body                   []byte
	from, sender, mailFrom string
	to, cc                 []string
	nullNotification       bool // hisp's own MDN or DSN with a null reverse path
}

// readHeader reads the submission's header and the fields that name its
// author and recipients. From and To are required (MF-06); From is the one
// author whose key signs (OUT-02).
func (out *outbound) readHeader() *Error {
	hdrBlock, body := splitMessage(out.msg)
	h, err := parseHeader(hdrBlock)
	if err != nil {
		return refuse(RefusedMalformed, err, "malformed message header: %v", err)
	}
	out.h, out.body = h, body
	out.msgID = oneLine(h.get("message-id"))
	if out.from, err = h.single("from"); err != nil {
		return refuse(RefusedMalformed, err, "unusable From field: %v", err)
	}
	if out.from == "" {
		return refuse(RefusedMalformed, nil, "the message has no From field")
	}
	if !h.has("to") {
		return refuse(RefusedMalformed, nil, "the message has no To field (required in Direct, MF-06)")
	}
	if out.sender, err = h.single("sender"); err != nil {
		return refuse(RefusedMalformed, err, "unusable Sender field: %v", err)
	}
	if out.to, err = h.addresses("to"); err != nil {
		return refuse(RefusedMalformed, err, "unusable To field: %v", err)
	}
	if out.cc, err = h.addresses("cc"); err != nil {
		return refuse(RefusedMalformed, err, "unusable Cc field: %v", err)
	}
	return nil
}

// checkSender refuses a submission sent as someone the login may not send
// as (MF-05, OUT-02): MAIL FROM is the From or Sender, a user sends only as
// themselves, a relay account only for its domains, and the other fields
// that name who sent it (Sender, Resent-From, Resent-Sender) name only
// addresses the login may send as: the recipient's agent verifies the
// signer against From alone, and the message arrives marked verified, so
// a forged Sender would borrow that verdict.
func (out *outbound) checkSender() *Error {
	env, from := out.env, out.from
	out.mailFrom = envAddr(env.MailFrom)
	mailFrom := out.mailFrom
	// hisp's own MDNs and DSNs may go out with a null reverse path (RFC
	// 8098 §2.1, RFC 3464): never from a user, and never bounced.
	out.nullNotification = mailFrom == "" && env.User == "" && mdn.IsNotice(out.h.get("content-type"))
	if !out.nullNotification && (mailFrom == "" || (mailFrom != from && mailFrom != out.sender)) {
		return refuse(RefusedSender, nil, "envelope sender <%s> is not the From address <%s> of the message (MF-05)", env.MailFrom, from)
	}
	switch {
	case env.User != "" && env.RelayDomains != nil:
		relay := store.Relay{Name: env.User, Domains: env.RelayDomains}
		for _, as := range []string{from, mailFrom} {
			if !relay.SendsFor(as) {
				return refuse(RefusedSender, nil, "relay %s sends only for %s, not as <%s>", env.User, strings.Join(env.RelayDomains, ", "), as)
			}
		}
	case env.User != "":
		user := envAddr(env.User)
		as := from
		if from == user {
			as = mailFrom
		}
		if as != user {
			return refuse(RefusedSender, nil, "%s may send only as <%s>, not as <%s>", env.User, user, as)
		}
	}
	if env.User != "" {
		return mayAlsoName(out.h, env)
	}
	return nil
}

// checkRecipients refuses a Bcc (MF-05): a Bcc field that names anybody
// (an empty one, which some clients leave, is dropped by prepare), or an
// envelope recipient not in To or Cc; and an envelope without recipients.
func (out *outbound) checkRecipients() *Error {
	bcc, err := out.h.addresses("bcc")
	if err != nil || len(bcc) > 0 {
		return refuse(RefusedBcc, nil, "Bcc is not allowed in Direct messages (MF-05): send a message of its own to each hidden recipient")
	}
	listed := set(append(out.to, out.cc...))
	for _, r := range out.env.Recipients {
		if !listed[envAddr(r)] {
			return refuse(RefusedBcc, nil, "recipient <%s> is not in the To or Cc field: Bcc is not allowed in Direct messages (MF-05)", r)
		}
	}
	if len(out.env.Recipients) == 0 {
		return refuse(RefusedNoRecipients, nil, "no recipients")
	}
	return nil
}

// packageContent runs the clinical content layer over the message to seal
// and returns what to seal; its notes go to the log and the audit.
func (a *Agent) packageContent(ctx context.Context, env Envelope, msgID, from string, res *OutboundResult) []byte {
	prepared, notes, problem := a.packageOutbound(ctx, res.Message, from, res.Recipients)
	if len(notes) > 0 {
		verdict := map[bool]string{false: "ok", true: "noted"}[problem]
		a.log.InfoContext(ctx, "agent outbound content", "message-id", msgID, "verdict", verdict, "notes", strings.Join(notes, "; "))
		a.record(ctx, store.Event{Time: a.now(), Actor: actor(env), Action: "outbound-content", Subject: msgID,
			Verdict: verdict, Reason: oneLine(limit(strings.Join(notes, "; "), 2000))})
	}
	return prepared
}

// SealedCopy is the message sealed with one profile for the recipients
// that have it.
type SealedCopy struct {
	Profile smime.Profile
	Data    []byte
	// Recipients are the indexes in OutboundResult.Recipients of the
	// accepted recipients this copy is for.
	Recipients []int
}

// profile returns the outbound profile of a recipient address: its domain's
// in Options.Profiles, else the agent's default.
func (a *Agent) profile(rcpt string) smime.Profile {
	if _, domain, err := store.NormalizeAddress(rcpt); err == nil {
		if p, ok := a.profiles[domain]; ok {
			return p.Complete()
		}
	}
	return smime.Profile{Cipher: a.seal.Cipher, KeyTransport: a.kt, Digest: a.seal.Digest}.Complete()
}

// sealCopies seals prepared for the accepted recipients of res: once per
// profile among them, each copy encrypted to every certificate of its
// recipients (AS-07), and sets res.Copies and res.Sealed.
func (a *Agent) sealCopies(prepared []byte, signer smime.Signer, res *OutboundResult) error {
	type group struct {
		copy   SealedCopy
		recips []cms.Recipient
		seen   map[string]bool
	}
	var groups []*group
	byProfile := map[smime.Profile]*group{}
	for i, r := range res.Recipients {
		if !r.Accepted {
			continue
		}
		p := a.profile(r.Recipient)
		g := byProfile[p]
		if g == nil {
			g = &group{copy: SealedCopy{Profile: p}, seen: map[string]bool{}}
			byProfile[p] = g
			groups = append(groups, g)
		}
		g.copy.Recipients = append(g.copy.Recipients, i)
		for _, c := range r.Certs {
			if fp := string(c.Raw); !g.seen[fp] {
				g.seen[fp] = true
				g.recips = append(g.recips, cms.Recipient{Cert: c, KeyTransport: p.KeyTransport})
			}
		}
	}
	for _, g := range groups {
		opts := a.seal
		opts.Cipher, opts.Digest = g.copy.Profile.Cipher, g.copy.Profile.Digest
		sealed, err := smime.Seal(prepared, signer, g.recips, opts)
		if err != nil {
			return fmt.Errorf("profile %s: %w", g.copy.Profile, err)
		}
		g.copy.Data = sealed
		res.Copies = append(res.Copies, g.copy)
	}
	if len(res.Copies) > 0 {
		res.Sealed = res.Copies[0].Data
	}
	return nil
}

// prepare returns the message to seal: Message-ID, Date and MIME-Version
// added when missing (MF-06, DN-02; a submission agent's job, RFC 6409 §8)
// and an empty Bcc removed. It returns msg itself when nothing changes.
func (a *Agent) prepare(h header, body, msg []byte, domain string) ([]byte, string, error) {
	var add bytes.Buffer
	msgID := oneLine(h.get("message-id"))
	if msgID == "" {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, "", fmt.Errorf("outbound: make Message-ID: %w", err)
		}
		msgID = "<" + hex.EncodeToString(r[:]) + "@" + domain + ">"
		fmt.Fprintf(&add, "Message-ID: %s\r\n", msgID)
	}
	if h.get("date") == "" {
		fmt.Fprintf(&add, "Date: %s\r\n", a.now().Format(time.RFC1123Z))
	}
	if !h.has("mime-version") {
		add.WriteString("MIME-Version: 1.0\r\n")
	}
	drop := func(f field) bool {
		switch f.lname {
		case "bcc", "message-id", "date":
			return f.value() == ""
		}
		return false
	}
	changed := add.Len() > 0
	for _, f := range h {
		changed = changed || drop(f)
	}
	if !changed {
		return msg, msgID, nil
	}
	var b bytes.Buffer
	b.Grow(add.Len() + len(msg) + 2)
	b.Write(add.Bytes())
	for _, f := range h {
		if drop(f) {
			continue
		}
		b.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes(), msgID, nil
}

// signingIdentity returns the sender's signing certificate and key: a valid
// certificate of the From address with digitalSignature and a key, else one
// of its domain (AS-06, AS-08, OUT-02). Among several, the one valid longest
// wins. It returns nil when there is none.
func (a *Agent) signingIdentity(ctx context.Context, snap *snapshot, from, domain string) (*smime.Signer, error) {
	now := a.now()
	for _, owner := range []string{from, domain} {
		list, err := snap.owner(ctx, a, owner)
		if err != nil {
			return nil, fmt.Errorf("outbound: certificates of %s: %w", owner, err)
		}
		var best *localCert
		for _, lc := range list {
			c := lc.cert
			if !lc.hasKey || c.KeyUsage&x509.KeyUsageDigitalSignature == 0 ||
				now.Before(c.NotBefore) || now.After(c.NotAfter) {
				continue
			}
			if best == nil || c.NotAfter.After(best.cert.NotAfter) {
				best = lc
			}
		}
		if best == nil {
			continue
		}
		key, err := snap.key(ctx, a, best.id)
		if err != nil {
			return nil, fmt.Errorf("outbound: signing key of %s (certificate %d): %w", owner, best.id, err)
		}
		return &smime.Signer{Cert: best.cert, Key: key, Chain: best.chain}, nil
	}
	return nil, nil
}

// resolveAll finds the certificates of every recipient. Duplicates are
// resolved once.
func (a *Agent) resolveAll(ctx context.Context, snap *snapshot, rcpts []string, senderDomain string) []RecipientResult {
	results := make([]RecipientResult, len(rcpts))
	first := map[string]int{} // normalized address -> index of its first occurrence
	var jobs []int
	for i, r := range rcpts {
		results[i].Recipient = r
		addr, _, err := store.NormalizeAddress(r)
		if err != nil {
			results[i].Status = status(RefusedBadAddress, "bad recipient address <%s>: %v", r, err)
			continue
		}
		if _, dup := first[addr]; dup {
			continue
		}
		first[addr] = i
		jobs = append(jobs, i)
	}
	sem := make(chan struct{}, a.maxWorker)
	var wg sync.WaitGroup
	for _, i := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = a.resolve(ctx, snap, rcpts[i], senderDomain)
		}()
	}
	wg.Wait()
	for i, r := range rcpts {
		addr, _, err := store.NormalizeAddress(r)
		if err != nil {
			continue
		}
		if j := first[addr]; j != i {
			results[i] = results[j]
			results[i].Recipient = r
		}
	}
	return results
}

// resolve finds and validates the certificates of one recipient: from the
// store for a local domain, by discovery otherwise (OUT-01), trusted by the
// sender domain's outbound anchors for encryption (TV-01, TV-05).
func (a *Agent) resolve(ctx context.Context, snap *snapshot, rcpt, senderDomain string) RecipientResult {
	addr, domain, _ := store.NormalizeAddress(rcpt)
	rr := RecipientResult{Recipient: rcpt, Local: snap.domains[domain]}
	anchors := snap.out[senderDomain]
	if len(anchors.certs) == 0 {
		rr.Status = status(RefusedUntrusted, "no trusted certificate for <%s>: %s has no outbound trust anchors (hisp anchor add %s CA.pem --direction out)",
			addr, senderDomain, senderDomain)
		return rr
	}
	validate := func(ctx context.Context, cert *x509.Certificate, inter []*x509.Certificate, address string) certs.Judgement {
		if reason := encryptable(cert); reason != "" {
			return certs.Judgement{Reason: reason}
		}
		v := snap.validate(ctx, a, trust.Request{Cert: cert, Intermediates: inter, Address: address, Purpose: trust.Encryption}, anchors)
		if v.Trusted {
			if why := snap.checkPolicies(senderDomain, store.DirectionOut, cert); why != "" { // policy.go
				return certs.Judgement{Reason: why}
			}
		}
		return certs.Judgement{Trusted: v.Trusted, Reason: v.Reason, Provisional: v.Provisional}
	}
	if rr.Local {
		return a.resolveLocal(ctx, snap, rr, addr, domain, validate)
	}
	// The key names the anchors the verdicts depend on, so that a change of
	// anchors is seen at once and a cached recipient costs a map look-up.
	res, err := a.disc.DiscoverJudged(ctx, addr, "agent-out|"+senderDomain+"|"+anchors.key, validate)
	switch {
	case res == nil:
		rr.Status = status(RefusedBadAddress, "bad recipient address <%s>: %v", addr, err)
	case len(res.Certs) > 0:
		rr.Accepted, rr.Certs, rr.Step = true, res.Certs, res.Step.String()
		rr.Status = status(Accepted, "encrypted to %d certificate(s) found by %s", len(res.Certs), res.Step)
	case err != nil:
		// A look-up failed and nothing was found: the certificate may
		// well exist. Defer rather than bounce; the caller retries.
		rr.Status = status(TemporaryDiscovery, "certificate discovery for <%s> failed, will retry: %v", addr, err)
	case res.Provisional:
		// [trust] revocation = "defer": a CRL or OCSP responder is
		// down. The caller retries up to its grace (TV-04).
		rr.Status = status(TemporaryRevocation, "certificate of <%s> not usable for now, will retry: %s", addr, discoveryReason(res))
	default:
		rr.Status = status(RefusedUntrusted, "no trusted certificate for <%s>: %s", addr, discoveryReason(res))
	}
	return rr
}

// resolveLocal takes a local recipient's certificates from the store:
// address-bound ones first, organization-bound ones only when the address
// has none (AS-08); found but none trusted stops there, as discovery does
// (CD-08).
func (a *Agent) resolveLocal(ctx context.Context, snap *snapshot, rr RecipientResult, addr, domain string, validate certs.JudgeFunc) RecipientResult {
	ok, err := snap.isAddress(ctx, a, addr)
	if err != nil {
		rr.Status = status(TemporaryLocal, "local look-up of <%s> failed: %v", addr, err)
		return rr
	}
	if !ok {
		rr.Status = status(RefusedNoSuchAddress, "<%s> is not a local address", addr)
		return rr
	}
	for _, owner := range []string{addr, domain} {
		list, err := snap.owner(ctx, a, owner)
		if err != nil {
			rr.Status = status(TemporaryLocal, "local certificates of <%s>: %v", owner, err)
			return rr
		}
		if len(list) == 0 {
			continue
		}
		var trusted []*x509.Certificate
		var reasons []string
		provisional := false
		for _, lc := range list {
			if j := validate(ctx, lc.cert, lc.chain, addr); j.Trusted {
				trusted = append(trusted, lc.cert)
			} else {
				reasons = append(reasons, lc.cert.Subject.String()+": "+j.Reason)
				provisional = provisional || j.Provisional
			}
		}
		if len(trusted) == 0 && provisional {
			rr.Status = status(TemporaryRevocation, "local certificates of %s not usable for now, will retry: %s", owner, joinReasons(reasons))
			return rr
		}
		if len(trusted) == 0 {
			rr.Status = status(RefusedUntrusted, "no trusted certificate for <%s>: the local certificates of %s are not trusted: %s",
				addr, owner, joinReasons(reasons))
			return rr
		}
		rr.Accepted, rr.Certs, rr.Step = true, trusted, "local"
		rr.Status = status(Accepted, "encrypted to %d local certificate(s) of %s", len(trusted), owner)
		return rr
	}
	rr.Status = status(RefusedUntrusted, "no certificate for <%s> in the local store (hisp cert issue %s)", addr, addr)
	return rr
}

// encryptable says why cert cannot be a key-transport recipient, or "".
func encryptable(cert *x509.Certificate) string {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Sprintf("%s key: hisp encrypts only to RSA keys", cert.PublicKeyAlgorithm)
	}
	if pub.N.BitLen() < cms.MinRSABits {
		return fmt.Sprintf("RSA key of %d bits, under %d", pub.N.BitLen(), cms.MinRSABits)
	}
	return ""
}

// discoveryReason explains why discovery found no trusted certificate.
func discoveryReason(res *certs.Result) string {
	var reasons []string
	for _, s := range res.Steps {
		if len(s.Candidates) == 0 {
			continue
		}
		for _, c := range s.Candidates {
			reasons = append(reasons, c.Cert.Subject.String()+": "+c.Reason)
		}
		return fmt.Sprintf("the certificates found by %s are not trusted: %s", s.Step, joinReasons(reasons))
	}
	var notes []string
	for _, s := range res.Steps {
		n := s.Note
		if s.Err != nil {
			n = s.Err.Error()
		}
		if n != "" {
			notes = append(notes, s.Step.String()+": "+n)
		}
	}
	if len(notes) == 0 {
		return "no certificate published"
	}
	return "no certificate published (" + strings.Join(notes, "; ") + ")"
}

func joinReasons(r []string) string {
	const most = 3
	s := strings.Join(r[:min(len(r), most)], "; ")
	if len(r) > most {
		s += fmt.Sprintf("; and %d more", len(r)-most)
	}
	return s
}

// senderFields are the header fields besides From that name who sent a
// message (RFC 5322 §3.6.2, §3.6.6).
var senderFields = []string{"sender", "resent-from", "resent-sender"}

// mayAlsoName checks that every address in the sender fields of a
// submitted message is one the login may send as: its own address, or for
// a relay account an address of its domains. It returns the refusal.
func mayAlsoName(h header, env Envelope) *Error {
	relay := store.Relay{Name: env.User, Domains: env.RelayDomains}
	user := envAddr(env.User)
	for _, name := range senderFields {
		list, err := h.addresses(name)
		if err != nil {
			return refuse(RefusedMalformed, err, "unusable %s field: %v", canonicalName(name), err)
		}
		for _, as := range list {
			if env.RelayDomains != nil && !relay.SendsFor(as) {
				return refuse(RefusedSender, nil, "%s <%s> is not in a domain of relay %s (%s)", canonicalName(name), as, env.User, strings.Join(env.RelayDomains, ", "))
			}
			if env.RelayDomains == nil && as != user {
				return refuse(RefusedSender, nil, "%s <%s> is not an address of login %s: a user may name only themselves as sender", canonicalName(name), as, env.User)
			}
		}
	}
	return nil
}
