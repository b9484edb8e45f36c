// Package agent is hisp's Security/Trust Agent: it turns one plain message
// from a local sender into a Direct message for its recipients (Outbound),
// and one Direct message from another HISP into a verified plain message for
// local mailboxes (Inbound), applying the Direct rules on the way. It knows no
// listener and no queue: the SMTP layer and the local delivery path call it
// with an envelope and the message bytes, and get back per-recipient results.
//
// Outbound (design.md flows; MF-05, MF-06, OUT-01, OUT-02, AS-06..08, TV-06):
//
//   - the message must parse and carry From and To; a missing Message-ID,
//     Date or MIME-Version is added, as a submission agent does (RFC 6409
//     §8.3); a non-empty Bcc is refused, an empty one removed;
//   - MAIL FROM must equal the From (or Sender) address, and an authenticated
//     user sends only as their own address: the From and MAIL FROM must both
//     be the user (else 550 5.7.1); only hisp's own MDNs and DSNs (no user)
//     may have a null MAIL FROM, and get no failure DSN;
//   - every RCPT must be listed in To or Cc (no Bcc, MF-05), else the whole
//     message is refused;
//   - the sender signs with a local certificate bound to the From address that
//     has digitalSignature: address-bound first, else organization-bound
//     (AS-06, AS-08); none is 554 5.7.0;
//   - each recipient's certificates come from the store for local domains
//     (address-bound first, then organization-bound, with the stop rule) and
//     from certificate discovery for others, and must be trusted by the
//     sender domain's outbound anchors for encryption (TV-01, TV-05); local
//     recipients get no exemption, so a domain that writes to itself lists
//     its own CA among its anchors;
//   - recipients without a trusted certificate are dropped with 550 5.7.1 and
//     named in a failure DSN to the sender (TV-06, OUT-01); a recipient whose
//     discovery failed on a look-up error gets 451 4.4.3 instead and is left
//     to the caller to retry;
//   - the message is sealed once (wrapped, signed, encrypted) to every
//     trusted certificate of every accepted recipient (AS-07).
//
// Inbound (IN-01..IN-04, TV-01..TV-08, MF-02, MF-05, MF-08):
//
//   - each envelope recipient must be a known local address (else 550 5.1.1);
//     the message is decrypted once, with any key held for any of them
//     (address- and organization-bound keys with keyEncipherment, IN-02), and
//     serves every recipient, as in the reference implementation;
//   - unencrypted, unsigned, malformed or weak-algorithm mail is refused
//     (IN-01, TV-08, Algorithms table);
//   - the routing headers outside (From, Sender, To, Cc) must agree with the
//     inner message, MAIL FROM must equal the inner From or Sender (or be
//     null for an MDN or DSN), and every RCPT must be in the inner To or Cc
//     (MF-05), else the message is refused as tampered;
//   - each valid signer is validated against the inbound anchors of each
//     recipient's domain for signing, bound to the inner From address; one
//     trusted, bound signer suffices (TV-07); recipients whose domain trusts
//     no signer are refused with 550 5.7.1;
//   - the filed message starts with hisp's own VerificationHeader fields,
//     after any incoming field of that name has been removed (IN-04).
//
// With Options.Content, the clinical content layer (content.go) packages
// C-CDA documents as IHE XDM before signing, and on receipt checks the
// Direct context, C-CDA documents and XDM packages, adds each package's
// documents and a readable HTML view of each C-CDA beside the parts that
// came, and notes what it found in the VerificationHeader; it never
// refuses a message for its payload (MF-09).
//
// Every acceptance and refusal is written to the store's audit log and to
// the slog logger; the audit records are written in order off the message
// path unless Options.SyncAudit is set, and Close writes the last ones.
// Parsed keys, certificates, anchors and trust verdicts are cached and
// dropped when the store's change counter moves, which the agent checks at
// most every Options.ReloadInterval (DefaultReloadInterval, one second).
package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// VerificationHeader is the header field hisp puts at the top of every
// message it files, one per recipient domain that accepted the message,
// saying who signed it, which anchor trusted the signer and which algorithms
// protected it. Fields of this name that arrive with a message are removed
// first, so a sender cannot forge them.
const VerificationHeader = "X-Hisp-Verification"

// DefaultReloadInterval is how often the agent asks the store whether its
// configuration changed, so a running server sees admin changes within
// seconds.
const DefaultReloadInterval = time.Second

// Options configure an Agent.
type Options struct {
	// Store holds the local domains, addresses, certificates, keys and
	// anchors, and receives audit records (a *store.Store). Required.
	Store Store
	// Discoverer finds remote recipients' certificates. Nil: a Discoverer
	// with default options (the system resolver).
	Discoverer *certs.Discoverer
	// Validator decides trust. Nil: a Validator with default options.
	Validator *trust.Validator
	// Hostname is the reporting host of DSNs and the verifying host named
	// in the VerificationHeader. Default "localhost".
	Hostname string
	// Seal are the algorithms of outgoing messages; the zero value is
	// SHA-256 and AES-128-CBC.
	Seal smime.SealOptions
	// KeyTransport is how the content key is sent to each recipient.
	// Zero: cms.RSAOAEPSHA256.
	KeyTransport cms.KeyTransport
	// Profiles are the algorithms for recipients of particular domains
	// (lower case, exact match), each complete; other recipients get Seal
	// and KeyTransport. A message whose recipients have different profiles
	// is sealed once per profile (OutboundResult.Copies).
	Profiles map[string]smime.Profile
	// Logger receives one record per message and recipient. Nil:
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock for certificate validity, generated Date fields and
	// DSNs. Nil: time.Now.
	Now func() time.Time
	// ReloadInterval is the longest time the agent uses its cache without
	// asking the store whether the configuration changed. Zero:
	// DefaultReloadInterval; negative: ask on every message.
	ReloadInterval time.Duration
	// SyncAudit writes each audit record before Outbound or Inbound
	// returns. By default records are written in order by a writer of
	// their own, so a message does not wait for a database commit; call
	// Close on shutdown to write the last ones.
	SyncAudit bool
	// Content turns on the clinical content layer (content.go): XDM
	// packaging of outgoing messages, and notes on, documents from and
	// views of the C-CDA documents, XDM packages and Direct context of
	// incoming ones. Nil: payloads pass through untouched.
	Content *ContentOptions
}

// Agent processes messages. It is safe for concurrent use.
type Agent struct {
	st        Store
	disc      *certs.Discoverer
	val       *trust.Validator
	host      string
	seal      smime.SealOptions
	kt        cms.KeyTransport
	profiles  map[string]smime.Profile
	log       *slog.Logger
	now       func() time.Time
	reload    time.Duration
	reloadMu  sync.Mutex // one reload at a time
	snap      atomic.Pointer[snapshot]
	maxWorker int // concurrent recipient look-ups of one message
	content   *ContentOptions

	syncAudit   bool
	auditMu     sync.RWMutex // auditClosed, and sending on auditCh
	auditClosed bool
	auditCh     chan auditReq
	auditDone   chan struct{}
}

// New returns an Agent. opts.Store must be set. Close it when done, so that
// its last audit records are written.
func New(opts Options) *Agent {
	a := &Agent{
		st:        opts.Store,
		disc:      opts.Discoverer,
		val:       opts.Validator,
		host:      opts.Hostname,
		seal:      opts.Seal,
		kt:        opts.KeyTransport,
		profiles:  opts.Profiles,
		log:       opts.Logger,
		now:       opts.Now,
		reload:    opts.ReloadInterval,
		maxWorker: 8,
		syncAudit: opts.SyncAudit,
		content:   opts.Content,
		auditCh:   make(chan auditReq, 1024),
		auditDone: make(chan struct{}),
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.host == "" {
		a.host = "localhost"
	}
	if a.kt == 0 {
		a.kt = cms.RSAOAEPSHA256
	}
	if a.reload == 0 {
		a.reload = DefaultReloadInterval
	}
	if a.disc == nil {
		a.disc = certs.NewDiscoverer(certs.DiscoveryOptions{Logger: a.log})
	}
	if a.val == nil {
		a.val = trust.NewValidator(trust.Options{Logger: a.log, Now: opts.Now})
	}
	go a.auditWriter()
	return a
}

// Envelope is the SMTP envelope of a message.
type Envelope struct {
	MailFrom   string
	Recipients []string
	// User is the authenticated submitter's address; "" on the backbone
	// (server to server).
	User string
	// RelayDomains are set when User is a relay account (an EHR's login,
	// not an address): the domains it may send for.
	RelayDomains []string
	// RemoteAddr is the client's address, for the audit log.
	RemoteAddr string
}

// Status is an outcome with its reply (Outcome.Reply: 250 "2.0.0", 550
// "5.7.1"...) and a reason a person can read.
type Status struct {
	Outcome  Outcome
	Code     int
	Enhanced string
	Reason   string
}

// NewStatus returns the status of an outcome, its reason made of format and
// args and fit for one line.
func NewStatus(o Outcome, format string, args ...any) Status {
	r := o.Reply()
	return Status{Outcome: o, Code: r.Code, Enhanced: r.Enhanced, Reason: oneLine(fmt.Sprintf(format, args...))}
}

// String returns the status as an SMTP reply line: "550 5.7.1 reason".
func (s Status) String() string {
	return strconv.Itoa(s.Code) + " " + s.Enhanced + " " + s.Reason
}

// RevocationDeferred is the enhanced status of a recipient or message
// deferred because a certificate's revocation status could not be
// established under [trust] revocation = "defer" (TV-04): the caller retries
// it for up to its grace, not its usual number of attempts.
const RevocationDeferred = "4.7.5"

// Temporary reports whether the status is a 4xx: the caller may try again
// later.
func (s Status) Temporary() bool { return s.Code >= 400 && s.Code < 500 }

// OK reports whether the status is a 2xx.
func (s Status) OK() bool { return s.Code >= 200 && s.Code < 300 }

// Error is the refusal of a whole message: spoofing, Bcc, no signing
// certificate, unencrypted, unsigned, untrusted, tampered, malformed...
// Errors of Outbound and Inbound that are not an *Error are local failures
// (the store, the context); report them as 451 4.3.0.
type Error struct {
	Status Status
	Err    error
	// Recipients holds the per-recipient outcomes when the message was
	// refused because every recipient was refused on its own (Inbound).
	Recipients []RecipientResult
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Status.String()
	}
	return e.Status.String() + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// RecipientResult is the outcome for one envelope recipient.
type RecipientResult struct {
	Recipient string // as given in the envelope
	Local     bool   // in a local domain
	Accepted  bool
	Status    Status // why refused, or 250
	// Certs are the certificates the message was encrypted to for this
	// recipient (outbound).
	Certs []*x509.Certificate
	// Step is the discovery step that found Certs, or "local" (outbound).
	Step string
}

func status(o Outcome, format string, args ...any) Status { return NewStatus(o, format, args...) }

// refuse returns an *Error.
func refuse(o Outcome, err error, format string, args ...any) *Error {
	return &Error{Status: NewStatus(o, format, args...), Err: err}
}

// oneLine makes s fit an SMTP reply or a header: no line breaks or other
// control characters.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// audit writes one audit record and its slog line. The record is written by
// the audit writer, in order, or at once with Options.SyncAudit. A failure to
// write it is logged, not returned: the message's fate is already decided.
func (a *Agent) audit(ctx context.Context, action, actor, subject string, st Status) {
	verdict := "accepted"
	level := slog.LevelInfo
	switch {
	case st.Temporary():
		verdict, level = "deferred", slog.LevelWarn
	case !st.OK():
		verdict, level = "refused", slog.LevelWarn
	}
	a.log.Log(ctx, level, "agent "+action, "actor", actor, "subject", subject, "verdict", verdict,
		"status", st.Code, "enhanced", st.Enhanced, "reason", st.Reason)
	a.record(ctx, store.Event{Time: a.now(), Actor: actor, Action: action, Subject: subject,
		Verdict: verdict, Reason: st.Enhanced + " " + st.Reason})
}

// record writes one audit record, through the audit writer unless
// Options.SyncAudit is set.
func (a *Agent) record(ctx context.Context, ev store.Event) {
	if !a.syncAudit {
		a.auditMu.RLock()
		if !a.auditClosed {
			a.auditCh <- auditReq{ev: ev}
			a.auditMu.RUnlock()
			return
		}
		a.auditMu.RUnlock()
	}
	a.writeAudit(context.WithoutCancel(ctx), ev)
}

func (a *Agent) writeAudit(ctx context.Context, ev store.Event) {
	if a.st == nil {
		return // New's caller broke the contract; Outbound and Inbound say so
	}
	if err := a.st.Audit(ctx, ev); err != nil {
		a.log.Error("agent: audit record not written", "action", ev.Action, "subject", ev.Subject, "err", err)
	}
}

// auditReq is an event for the audit writer, or with done set a request to
// say when every event before it is written.
type auditReq struct {
	ev   store.Event
	done chan struct{}
}

// auditGather is how long the audit writer gathers records before it
// commits them.
const auditGather = 50 * time.Millisecond

// auditWriter writes audit records in the order they came, off the message
// path: a commit costs a disk flush, which a message should not wait for.
// The records that come within auditGather of the first (or until a
// flush) are written in one transaction.
func (a *Agent) auditWriter() {
	defer close(a.auditDone)
	var batch []store.Event
	var dones []chan struct{}
	for req := range a.auditCh {
		batch, dones = batch[:0], dones[:0]
		add := func(r auditReq) {
			if r.done != nil {
				dones = append(dones, r.done)
			} else {
				batch = append(batch, r.ev)
			}
		}
		add(req)
		// Records come one or two per message: gathering them for a
		// moment makes one commit (one flush) of a busy server's many,
		// not one per message. A flush (flushAudit, Close) ends the wait.
		wait := time.NewTimer(auditGather)
	drain:
		for len(batch) < 256 && len(dones) == 0 {
			select {
			case r, ok := <-a.auditCh:
				if !ok {
					break drain
				}
				add(r)
			case <-wait.C:
				break drain
			}
		}
		wait.Stop()
		if len(batch) > 0 && a.st != nil {
			if err := a.st.AuditBatch(context.Background(), batch); err != nil {
				a.log.Error("agent: audit records not written", "records", len(batch), "err", err)
			}
		}
		for _, d := range dones {
			close(d)
		}
	}
}

// flushAudit waits until the audit records of every message processed so
// far are written.
func (a *Agent) flushAudit() {
	a.auditMu.RLock()
	if a.auditClosed {
		a.auditMu.RUnlock()
		return
	}
	done := make(chan struct{})
	a.auditCh <- auditReq{done: done}
	a.auditMu.RUnlock()
	<-done
}

// Close writes the audit records still pending and stops the audit writer.
// Messages processed after Close have their records written at once.
func (a *Agent) Close() error {
	a.auditMu.Lock()
	if !a.auditClosed {
		a.auditClosed = true
		close(a.auditCh)
	}
	a.auditMu.Unlock()
	<-a.auditDone
	return nil
}

// actor names who sent a message, for the audit log.
func actor(env Envelope) string {
	who := env.MailFrom
	if who == "" {
		who = "<>"
	}
	if env.User != "" && !strings.EqualFold(env.User, env.MailFrom) {
		who = env.User + " as " + who
	}
	if env.RemoteAddr != "" {
		who += " (" + env.RemoteAddr + ")"
	}
	return who
}

// auditSubject is the subject of a record about one recipient.
func auditSubject(msgID, rcpt string) string {
	if msgID == "" {
		msgID = "(no Message-ID)"
	}
	return msgID + " " + envAddr(rcpt)
}

// auditAll records the refusal of a whole message: one record naming the
// recipients (the first few of them, for an envelope of thousands).
func (a *Agent) auditAll(ctx context.Context, action string, env Envelope, msgID string, st Status) {
	const most = 10
	rcpts := env.Recipients
	list := strings.Join(rcpts[:min(len(rcpts), most)], ",")
	if len(rcpts) > most {
		list += fmt.Sprintf(" and %d more", len(rcpts)-most)
	}
	a.audit(ctx, action, actor(env), auditSubject(msgID, list), st)
}
