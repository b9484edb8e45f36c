// Package smtp is hisp's SMTP: the backbone server where other HISPs deliver
// (port 25), the submission server for hisp's own users and EHRs (port 587),
// and the Deliverer that takes messages from the durable queue in package
// store to the next hop.
//
// The servers are built on github.com/emersion/go-smtp and know nothing of
// S/MIME: a message is handed, whole, to an InboundHandler (backbone) or an
// OutboundHandler (submission), and the handler's verdict becomes the reply
// to DATA. An OutboundHandler seals the message and commits it to the queue
// before it returns, so that 250 is only ever sent for a message that is on
// disk. The servers refuse what is malformed or abusive themselves, each
// refusal with a slog line and, when an Auditor is configured, an audit
// record:
//
//   - the backbone is no open relay: RCPT only for recipients the
//     RecipientChecker accepts (554 5.7.1 outside local domains, 550 5.1.1
//     for unknown local addresses); it offers no AUTH;
//   - submission takes AUTH PLAIN and LOGIN only over TLS, or on a loopback
//     connection; MAIL before AUTH is 530 5.7.0, a wrong password 535 5.7.8,
//     and MAIL FROM must be the login's own address;
//   - limits: message size (default 64 MB, announced as SIZE; 552 5.3.4),
//     recipients per message (default 100; 452 4.5.3), header lines (1000)
//     and header bytes (1 MB) (552 5.3.4), line length (2000), a timeout for
//     each command and for each wait inside DATA (5 minutes); a 0-byte message
//     is 554 5.6.0; addresses must be ASCII (SMTPUTF8 is not offered: 553
//     5.6.7); bare LF line ends in a message are turned into CRLF;
//   - a client that drops the connection or stalls inside DATA gets nothing
//     queued: the handler is only called with a complete message.
//
// The Deliverer claims due recipients from the queue (the next attempt is
// recorded before it dials), groups them per destination domain, finds the
// next hop by static route or MX look-up (RFC 5321 §5.1: MX, else the
// domain's own address), delivers each message in one SMTP transaction per
// destination over a reused connection, with STARTTLS as the TLSPolicy of
// the route or of MX deliveries says (opportunistic, required, verify), and
// records each recipient's outcome: 2xx delivered, 4xx or a network error
// retried by the backoff, 5xx failed for good and handed to the Bouncer for
// a DSN. Recipients in local domains go to a LocalDeliverer instead of the
// network.
package smtp

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/store"
)

// Envelope is the SMTP envelope of a message.
type Envelope struct {
	MailFrom   string   // reverse path; "" is the null sender <>
	Recipients []string // forward paths, as the client gave them (duplicates removed)
	User       string   // authenticated login (submission); "" on the backbone
	// RelayDomains are the domains of a relay account's login (User is
	// then its name, not an address); nil otherwise.
	RelayDomains []string
	RemoteAddr   string // client's address, host:port
	TLS          bool   // the transaction ran over TLS
}

// Reply is an SMTP reply: a code, an enhanced status code (RFC 3463) and
// a human-readable message, e.g. 550 "5.7.1" "untrusted signer".
type Reply struct {
	Code     int
	Enhanced string
	Message  string
}

// String formats the reply as it goes on the wire (one line).
func (r *Reply) String() string {
	if r == nil {
		return "<nil>"
	}
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if m := oneLine(r.Message); m != "" {
		s += " " + m
	}
	return s
}

// Temporary reports a 4xx reply.
func (r *Reply) Temporary() bool { return r != nil && r.Code/100 == 4 }

// Permanent reports a 5xx reply.
func (r *Reply) Permanent() bool { return r != nil && r.Code/100 == 5 }

// Success reports a 2xx reply.
func (r *Reply) Success() bool { return r != nil && r.Code/100 == 2 }

// InboundHandler takes a message that arrived on the backbone. A nil Reply
// and nil error accept it (250); a Reply refuses it with that code; an error
// is a local failure, answered 451 4.3.0 so that the sender tries again.
// The handler writes its own audit records.
type InboundHandler interface {
	Inbound(ctx context.Context, env Envelope, msg []byte) (*Reply, error)
}

// OutboundHandler takes a message submitted by an authenticated user: it
// seals it and enqueues it durably (store.Queue.Enqueue) before it returns.
// 250 is sent only after it returns nil, nil (or a 2xx Reply).
type OutboundHandler interface {
	Outbound(ctx context.Context, env Envelope, msg []byte) (*Reply, error)
}

// RecipientChecker decides at RCPT time whether the backbone accepts a
// recipient: nil to accept, else the refusal (not a local domain: 554
// 5.7.1; unknown local address: 550 5.1.1). See LocalRecipients.
type RecipientChecker interface {
	CheckRecipient(ctx context.Context, rcpt string) *Reply
}

// LocalDeliverer delivers a queued message to recipients in local domains
// without a network hop (the inbound agent path). The Deliverer calls it
// once per local recipient; the Reply means what it means over SMTP (nil is
// delivered; 4xx and errors are retried; 5xx fails).
type LocalDeliverer interface {
	DeliverLocal(ctx context.Context, env Envelope, msg []byte) (*Reply, error)
}

// Sealer seals a plain queued message (store.QueuedMessage.Plain) again for
// its recipients that were deferred at submission, now due (msg.Recipients,
// in StateSealing; plain is the submission), and returns an update for
// each: StateSealed once sealed and queued anew, StateDeferred to try again
// (NextAttempt set, or zero for the retry time the claim recorded), or
// StateBounced once failed for good with the sender told. The Deliverer
// never sends a plain message itself.
type Sealer interface {
	SealDeferred(ctx context.Context, msg store.QueuedMessage, plain []byte) []store.RecipientUpdate
}

// Bouncer sends delivery status notifications for queued messages: a
// delayed notice (final false) for recipients still being retried after a
// few hours, once per message, and a failure notice (final true) for
// recipients that failed for good. msg carries Data (the message as
// queued). An error leaves the notice due, to be tried again later. The
// Deliverer never bounces a message with a null sender.
type Bouncer interface {
	Bounce(ctx context.Context, msg store.QueuedMessage, rcpts []RecipientOutcome, final bool) error
}

// RelayRecorder is implemented by a Bouncer that also hears of successes:
// the Deliverer calls Relayed with the recipients of a message that the
// next hop (or the local mailbox) just accepted with a 2xx, before it
// stores their outcome, so that delivery tracking records "relayed" at the
// moment it happened and before any MDN for it can come back. msg has no
// Data. It must not take long; errors are its own to log.
type RelayRecorder interface {
	Relayed(ctx context.Context, msg store.QueuedMessage, rcpts []RecipientOutcome)
}

// RecipientOutcome is what happened to one recipient, for a DSN.
type RecipientOutcome struct {
	Recipient string
	// Reply is the last reply: a remote server's (RemoteMTA set) or hisp's
	// own for a local decision or a network error.
	Reply       Reply
	RemoteMTA   string
	Attempts    int
	LastAttempt time.Time
	// RetryUntil is, for a delayed notice, roughly when hisp gives up.
	RetryUntil time.Time
}

// Authenticator checks submission logins (StoreAuthenticator over the
// store). A login refused for its name, password, network or client
// certificate is an error wrapping store.ErrBadCredentials.
type Authenticator interface {
	Authenticate(ctx context.Context, c Credentials) (Login, error)
}

// ClientTruster is an Authenticator that can tell, before the password is
// checked, that a client proved itself otherwise (a TLS client certificate
// of the login's own CAs); such logins skip the login limiter's gates that
// other IPs share (loginlimit.Attempt.Trusted).
type ClientTruster interface {
	TrustedClient(ctx context.Context, c Credentials) bool
}

// Credentials are what a submission client logs in with.
type Credentials struct {
	Username, Password string
	Remote             netip.Addr          // the client's IP address
	PeerCertificates   []*x509.Certificate // its TLS client certificate chain, if it sent one
}

// Login is an authenticated submission login.
type Login struct {
	Name string // the address, or the relay account's name
	// RelayDomains are the domains a relay account sends for; nil for an
	// address, which sends only as itself.
	RelayDomains []string
}

// MaySendAs reports whether the login may use an address as MAIL FROM.
func (l Login) MaySendAs(from string) bool {
	if l.RelayDomains == nil {
		return strings.EqualFold(strings.TrimSpace(l.Name), strings.TrimSpace(from))
	}
	return store.Relay{Domains: l.RelayDomains}.SendsFor(from)
}

// Auditor records audit events; *store.Store implements it.
type Auditor interface {
	Audit(ctx context.Context, e store.Event) error
}

// InboundFunc adapts a function to InboundHandler.
type InboundFunc func(ctx context.Context, env Envelope, msg []byte) (*Reply, error)

// Inbound calls f.
func (f InboundFunc) Inbound(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
	return f(ctx, env, msg)
}

// OutboundFunc adapts a function to OutboundHandler.
type OutboundFunc func(ctx context.Context, env Envelope, msg []byte) (*Reply, error)

// Outbound calls f.
func (f OutboundFunc) Outbound(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
	return f(ctx, env, msg)
}

// LocalFunc adapts a function to LocalDeliverer.
type LocalFunc func(ctx context.Context, env Envelope, msg []byte) (*Reply, error)

// DeliverLocal calls f.
func (f LocalFunc) DeliverLocal(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
	return f(ctx, env, msg)
}

// smtpError converts a reply for go-smtp. A malformed code becomes 451
// 4.3.0 (the sender retries); an enhanced code of another class than the
// code is replaced by the class's X.0.0.
func (r *Reply) smtpError() *gosmtp.SMTPError {
	code := r.Code
	msg := oneLine(r.Message)
	if code < 200 || code > 599 || (code/100 != 2 && code/100 != 4 && code/100 != 5) {
		code, msg = 451, "Temporary local problem, try again later"
	}
	ec := gosmtp.EnhancedCodeNotSet
	if e, ok := parseEnhanced(r.Enhanced); ok && e[0] == code/100 {
		ec = e
	}
	if msg == "" {
		msg = defaultText(code)
	}
	return &gosmtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// parseEnhanced parses "5.7.1".
func parseEnhanced(s string) (gosmtp.EnhancedCode, bool) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 {
		return gosmtp.EnhancedCode{}, false
	}
	var ec gosmtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || (i == 0 && n != 2 && n != 4 && n != 5) {
			return gosmtp.EnhancedCode{}, false
		}
		ec[i] = n
	}
	return ec, true
}

func defaultText(code int) string {
	switch code / 100 {
	case 2:
		return "OK"
	case 4:
		return "Temporary failure"
	}
	return "Refused"
}

// oneLine makes text safe for one reply line: control characters become
// spaces, runs of spaces fold, and it is cut at 400 bytes.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = strings.ToValidUTF8(s[:400], "")
	}
	return s
}

// errorf makes a reply.
func errorf(code int, enhanced, format string, args ...any) *Reply {
	return &Reply{Code: code, Enhanced: enhanced, Message: fmt.Sprintf(format, args...)}
}
