// Package conformance checks a Direct deployment from the outside, the way
// a partner HISP sees it (hisp check): the domain's mail hosts answer and
// offer STARTTLS, its certificates are published in DNS CERT records
// (address- and domain-bound, CD-02, CD-10) and, where an LDAP server is
// announced, over LDAP (CD-06, CD-07), every published certificate is valid
// for Direct (binding, key usage, key size, a path to the domain's own
// anchor, a reachable and current CRL, far enough from expiry), and, when
// run on the server with the data directory, a message sealed to each
// published certificate opens with the domain's own key.
//
// Each check gives one Result: PASS, FAIL or SKIP with the reason in words.
// The look-ups are the ones partners' discovery makes (package certs, over
// package dnsclient), the judgement is package trust's, the sealing and
// opening package smime's: the report says what those would do.
package conformance

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// Status is the outcome of one check.
type Status int

const (
	// Pass: the check was made and the deployment meets it.
	Pass Status = iota
	// Fail: the check was made and the deployment does not meet it.
	Fail
	// Skip: the check could not be made here; the reason says why.
	Skip
)

// String returns "PASS", "FAIL" or "SKIP".
func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Fail:
		return "FAIL"
	case Skip:
		return "SKIP"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of one check.
type Result struct {
	Status Status
	// Check names what was checked, e.g. "starttls 127.0.0.1:2525",
	// "dns-cert address alice@b.example" or "cert alice@b.example
	// 3f2a9c1b crl" (the hex is the start of the certificate's SHA-256
	// fingerprint, as hisp cert list shows it).
	Check  string
	Reason string
}

// String formats the result as hisp check prints it: "PASS check: reason".
func (r Result) String() string {
	return fmt.Sprintf("%s %s: %s", r.Status, r.Check, r.Reason)
}

// Summary counts the results of a run.
type Summary struct {
	Passed, Failed, Skipped int
}

// Options say what to check and how.
type Options struct {
	// Domain is the Direct domain (health domain name) to check.
	Domain string
	// Resolver is the DNS server (host:port) for every look-up; "" is the
	// system resolver, as partners use theirs.
	Resolver string
	// Addresses are Direct addresses of the domain whose address-bound
	// certificates to check, besides those the data directory names.
	Addresses []string
	// Backbone is host:port of the SMTP backbone to test instead of the
	// domain's MX hosts, as a partner with a static route reaches it.
	Backbone string
	// Port is the SMTP port of MX hosts; default 25.
	Port int
	// Anchors are the domain's own trust anchors, which its certificates
	// must chain to; with Store, its local CA and the anchors added to the
	// domain are used too.
	Anchors []*x509.Certificate
	// Store is the data directory of the hisp serving the domain, when the
	// check runs on the server; nil from elsewhere. With it the check
	// knows every certificate the domain holds and runs the loopback probe.
	Store *store.Store
	// NoStore says why Store is nil, for the checks that are skipped.
	NoStore string
	// Horizon is how close to its expiry a certificate fails the expiry
	// check; zero is DefaultHorizon, negative none (only an expired
	// certificate fails).
	Horizon time.Duration
	// Timeout bounds each network exchange (SMTP, DNS, LDAP); default 10 s.
	Timeout time.Duration
	// HTTPClient fetches CRLs, OCSP responses and AIA certificates; nil is
	// a client with a 10 s time-out.
	HTTPClient *http.Client
	// Hostname is the EHLO name; default "localhost".
	Hostname string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger gets debug records of the look-ups; nil discards them.
	Logger *slog.Logger
}

// DefaultHorizon is the default Options.Horizon.
const DefaultHorizon = 30 * 24 * time.Hour

// Run makes every check on opts.Domain, calling emit with each result in
// order, and returns the counts. The error is for checks that could not
// start at all (a malformed domain, an unreadable data directory); problems
// of the deployment are Fail results, never errors.
func Run(ctx context.Context, opts Options, emit func(Result)) (Summary, error) {
	domain, err := store.NormalizeDomain(opts.Domain)
	if err != nil {
		return Summary{}, err
	}
	opts.Domain = domain
	if opts.Port == 0 {
		opts.Port = 25
	}
	if opts.Horizon == 0 {
		opts.Horizon = DefaultHorizon
	} else if opts.Horizon < 0 {
		opts.Horizon = 0
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Store == nil && opts.NoStore == "" {
		opts.NoStore = "not run with the data directory of the server"
	}
	var sum Summary
	r := &run{opts: opts, emit: func(res Result) {
		switch res.Status {
		case Pass:
			sum.Passed++
		case Fail:
			sum.Failed++
		default:
			sum.Skipped++
		}
		emit(res)
	}}
	if err := r.loadLocal(ctx); err != nil {
		return sum, err
	}
	r.checkMail(ctx)
	r.checkPublished(ctx)
	r.checkCertificates(ctx)
	r.checkLoopback(ctx)
	if err := ctx.Err(); err != nil {
		return sum, fmt.Errorf("check %s: %w", domain, err)
	}
	return sum, nil
}

// run is the state of one Run.
type run struct {
	opts Options
	emit func(Result)

	// From the data directory (opts.Store).
	held    []heldCert          // the domain's certificates
	anchors []*x509.Certificate // opts.Anchors, local CA, the domain's anchors

	// From the outside.
	certName  string           // the first DNS name found with CERT records
	published []*publishedCert // by fingerprint, in the order found

	v *trust.Validator // made on first use
}

// heldCert is a certificate the data directory holds for the domain.
type heldCert struct {
	rec   store.Certificate
	cert  *x509.Certificate
	chain []*x509.Certificate
}

// publishedCert is a certificate found by DNS or LDAP.
type publishedCert struct {
	cert    *x509.Certificate
	owner   string   // the address or domain it was found for
	sources []string // where: "DNS CERT at ...", "LDAP ..."
	others  []*x509.Certificate
}

func (r *run) pass(check, format string, a ...any) {
	r.emit(Result{Status: Pass, Check: check, Reason: fmt.Sprintf(format, a...)})
}

func (r *run) fail(check, format string, a ...any) {
	r.emit(Result{Status: Fail, Check: check, Reason: fmt.Sprintf(format, a...)})
}

func (r *run) skip(check, format string, a ...any) {
	r.emit(Result{Status: Skip, Check: check, Reason: fmt.Sprintf(format, a...)})
}

// loadLocal reads what the data directory knows of the domain: its
// certificates and its own anchors.
func (r *run) loadLocal(ctx context.Context) error {
	r.anchors = append(r.anchors, r.opts.Anchors...)
	st := r.opts.Store
	if st == nil {
		return nil
	}
	d := r.opts.Domain
	if _, err := st.Domain(ctx, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s is not a local domain of this data directory (hisp domain list)", d)
		}
		return err
	}
	list, err := st.Certificates(ctx, store.CertFilter{Domain: d})
	if err != nil {
		return err
	}
	for _, rec := range list {
		c, err := rec.Parse()
		if err != nil {
			return fmt.Errorf("certificate %d of %s: %w", rec.ID, rec.Owner, err)
		}
		h := heldCert{rec: rec, cert: c}
		for _, der := range rec.Chain {
			if ic, err := x509.ParseCertificate(der); err == nil {
				h.chain = append(h.chain, ic)
			}
		}
		r.held = append(r.held, h)
	}
	if ca, err := st.LocalCA(ctx, d); err == nil {
		if c, err := x509.ParseCertificate(ca.DER); err == nil {
			r.anchors = append(r.anchors, c)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	anchors, err := st.Anchors(ctx, d)
	if err != nil {
		return err
	}
	for _, a := range anchors {
		c, err := a.Parse()
		if err != nil {
			return fmt.Errorf("anchor %d of %s: %w", a.ID, d, err)
		}
		r.anchors = append(r.anchors, c)
	}
	return nil
}

// owners returns the addresses whose address-bound certificates to check:
// opts.Addresses and the owners of held address-bound certificates, in
// that order, without repeats.
func (r *run) owners() []string {
	var out []string
	seen := map[string]bool{}
	addOwner := func(a string) {
		a = strings.ToLower(strings.TrimSpace(a))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range r.opts.Addresses {
		addOwner(a)
	}
	for _, h := range r.held {
		if strings.Contains(h.rec.Owner, "@") {
			addOwner(h.rec.Owner)
		}
	}
	return out
}

// heldBy returns the held certificates of one owner.
func (r *run) heldBy(owner string) []heldCert {
	var out []heldCert
	for _, h := range r.held {
		if strings.EqualFold(h.rec.Owner, owner) {
			out = append(out, h)
		}
	}
	return out
}

// shortFP is the first 8 hex digits of a certificate's SHA-256
// fingerprint, enough to tell a domain's certificates apart.
func shortFP(c *x509.Certificate) string {
	return store.Fingerprint(c.Raw)[:8]
}

// days says a duration in whole days, in words: "3 days", "2 days ago".
func days(d time.Duration) string {
	n := int(d.Hours() / 24)
	switch {
	case n == 1:
		return "1 day"
	case n == -1:
		return "1 day ago"
	case n < 0:
		return fmt.Sprintf("%d days ago", -n)
	}
	return fmt.Sprintf("%d days", n)
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }
