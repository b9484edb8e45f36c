// Package ops holds every admin operation of hisp with its rules and its
// audit record: domains, addresses, certificates, trust anchors and
// bundles, trust policies, relays, admins, API tokens, webhooks, the queue
// and tracking. The command line (cmd/hisp), the admin web page and the
// JSON API (web) are thin callers: they parse and print, ops decides and
// records.
//
// Errors tell the caller how to answer: ErrInvalid (a malformed request:
// exit 2, HTTP 400), ErrRefused (well formed but against a rule: exit 1,
// HTTP 422), store.ErrNotFound (404) and store.ErrExists (409).
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/hisp-project/hisp/store"
)

// ErrInvalid marks a malformed request: an unknown direction, a bad
// domain name, a refresh interval that is not one.
var ErrInvalid = errors.New("invalid request")

// ErrRefused marks a well-formed request that a rule refuses: a
// certificate that does not bind to its owner, a weak key, an unsigned
// bundle over plain http, a bundle that cannot be fetched.
var ErrRefused = errors.New("refused")

// kindError is an error of one of the kinds above whose text is only its
// message.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func invalidf(format string, a ...any) error {
	return &kindError{ErrInvalid, fmt.Sprintf(format, a...)}
}

func refusedf(format string, a ...any) error {
	return &kindError{ErrRefused, fmt.Sprintf(format, a...)}
}

// Ops runs admin operations on a store for one actor, whose name goes into
// every audit record. It is cheap to make: one per command or request.
type Ops struct {
	st *store.Store
	// Actor is who acts, as the audit log names them: "cli:alice",
	// "admin ops (127.0.0.1:5555)", "token deploy (10.0.0.2:4444)".
	Actor string
	// Prog is the command name in the hints of errors ("hisp", "./hisp").
	Prog string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// HTTPClient fetches trust bundles; nil is the trust package's default.
	HTTPClient *http.Client
	// Log gets the failures to write an audit record; nil: slog.Default.
	Log *slog.Logger
}

// New returns the operations of actor on st.
func New(st *store.Store, actor string) *Ops {
	return &Ops{st: st, Actor: actor, Prog: "hisp"}
}

// Store is the store the operations work on.
func (o *Ops) Store() *store.Store { return o.st }

func (o *Ops) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Ops) prog() string {
	if o.Prog == "" {
		return "hisp"
	}
	return o.Prog
}

// audit records a successful admin action. A failure to record does not
// undo the action: it is logged and returned for the caller to warn.
func (o *Ops) audit(ctx context.Context, action, subject, reason string) {
	o.AuditFailure(ctx, action, subject, "ok", reason)
}

// Record writes the audit record of an admin action done outside this
// package (a backup of the data directory).
func (o *Ops) Record(ctx context.Context, action, subject, reason string) {
	o.audit(ctx, action, subject, reason)
}

// AuditFailure records a refused or failed attempt (a refused login), or
// with verdict "ok" a successful one (audit).
func (o *Ops) AuditFailure(ctx context.Context, action, subject, verdict, reason string) {
	ev := store.Event{Actor: o.Actor, Action: action, Subject: subject, Verdict: verdict, Reason: reason}
	if err := o.st.Audit(context.WithoutCancel(ctx), ev); err != nil {
		log := o.Log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("audit record failed", "action", action, "subject", subject, "err", err)
	}
}

// AuditLog returns the newest limit audit records, newest first.
func (o *Ops) AuditLog(ctx context.Context, limit int) ([]store.Event, error) {
	return o.st.AuditEvents(ctx, limit)
}

// domain normalizes a domain name and checks that it is a local domain,
// with an error that says how to add it.
func (o *Ops) domain(ctx context.Context, name string) (string, error) {
	d, err := store.NormalizeDomain(name)
	if err != nil {
		return "", invalidf("%v", err)
	}
	if _, err := o.st.Domain(ctx, d); errors.Is(err, store.ErrNotFound) {
		return "", &kindError{store.ErrNotFound, fmt.Sprintf("domain %s not found: run %s domain add %s", d, o.prog(), d)}
	} else if err != nil {
		return "", err
	}
	return d, nil
}

// RequireDomain checks that a local domain exists and returns its
// normalized name.
func (o *Ops) RequireDomain(ctx context.Context, name string) (string, error) {
	return o.domain(ctx, name)
}

// ParseDirection parses in, out or both ("" is both).
func ParseDirection(s string) (store.Direction, error) {
	if s == "" {
		return store.DirectionBoth, nil
	}
	d, err := store.ParseDirection(s)
	if err != nil {
		return "", invalidf("%v", err)
	}
	return d, nil
}

// optTime is a time for JSON: null when zero.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
