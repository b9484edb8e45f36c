// Package trust decides whether a certificate is trusted for a Direct address
// and purpose, and manages trust bundles.
//
// A [Validator] applies the trust rules of the Direct Applicability Statement
// (section 4) and the DirectTrust profile: a path to one of the anchors given
// by the caller (intermediates from the message or fetched from the AIA
// caIssuers URL), validity, key usage for the purpose, binding of the
// certificate to the address by subjectAltName, key sizes and signature
// algorithms, and revocation by CRL and OCSP. Every [Verdict] carries a reason
// a person can read.
//
// Trust bundles (TBIG, DT-01) are PKCS#7 certs-only files, optionally wrapped
// in a CMS SignedData checked against a pinned signer. [ParseBundle] reads them,
// [FetchBundle] fetches one from a URL or file and detects changes by checksum,
// [Bundles] holds the current anchors of every bundle and swaps them
// atomically, and a [Refresher] keeps them up to date on each bundle's
// interval, persisting state through a [BundleStore].
//
// The package knows no store and no server: anchors come in as arguments.
package trust

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Purpose is what a certificate is validated for.
type Purpose int

const (
	// Signing needs digitalSignature: the signer of a received message, or our
	// own signing certificate.
	Signing Purpose = iota + 1
	// Encryption needs keyEncipherment: a recipient certificate we encrypt to.
	Encryption
)

// String returns "signing" or "encryption".
func (p Purpose) String() string {
	switch p {
	case Signing:
		return "signing"
	case Encryption:
		return "encryption"
	}
	return fmt.Sprintf("Purpose(%d)", int(p))
}

// RevocationPolicy says what to do when a CRL or OCSP responder cannot be
// reached, or answers with something unusable (TV-04).
type RevocationPolicy int

const (
	// RefuseUnavailable treats a certificate whose revocation status cannot
	// be established as not trusted. It is the default.
	RefuseUnavailable RevocationPolicy = iota
	// AllowUnavailable treats such a certificate as not revoked (what the
	// Java reference implementation does), with a warning in the log and the
	// reason.
	AllowUnavailable
	// DeferUnavailable treats such a certificate as not trusted for now:
	// the Verdict is Provisional, so that the caller defers the message
	// (4xx) and tries again, rather than refusing it for good or trusting
	// a certificate that may be revoked.
	DeferUnavailable
)

// String returns "refuse" or "allow".
func (p RevocationPolicy) String() string {
	switch p {
	case RefuseUnavailable:
		return "refuse"
	case AllowUnavailable:
		return "allow"
	case DeferUnavailable:
		return "defer"
	}
	return fmt.Sprintf("RevocationPolicy(%d)", int(p))
}

// Options configure a Validator.
type Options struct {
	// HTTPClient fetches CRLs, OCSP responses and AIA caIssuers
	// certificates. Nil means a client with a 10 second timeout.
	HTTPClient *http.Client
	// Now returns the time of validation. Nil means time.Now.
	Now func() time.Time
	// Revocation says what to do when revocation status is unavailable.
	Revocation RevocationPolicy
	// FailureTTL is how long a CRL, OCSP or AIA fetch that failed is
	// remembered (and not tried again). Zero: one minute.
	FailureTTL time.Duration
	// AllowMissingKeyUsage accepts an end-entity certificate without the
	// KeyUsage extension for any purpose (RFC 5280 section 4.2.1.3 reading).
	// By default such a certificate is refused: DirectTrust certificate
	// profiles always carry KeyUsage, and without it a certificate does not
	// say whether it is for signing or encryption (AS-06).
	AllowMissingKeyUsage bool
	// Logger receives debug and warning messages. Nil means slog.Default().
	Logger *slog.Logger
}

// Binding says how a certificate is bound to a Direct address (AS-02).
type Binding int

const (
	// Unbound: the certificate does not name the address or its domain.
	Unbound Binding = iota
	// AddressBound: a SAN rfc822Name equals the address.
	AddressBound
	// DomainBound: a SAN dNSName equals the domain of the address
	// (organization-bound).
	DomainBound
)

// String returns "unbound", "address-bound" or "domain-bound".
func (b Binding) String() string {
	switch b {
	case Unbound:
		return "unbound"
	case AddressBound:
		return "address-bound"
	case DomainBound:
		return "domain-bound"
	}
	return fmt.Sprintf("Binding(%d)", int(b))
}

// Request is one certificate to validate.
type Request struct {
	Cert *x509.Certificate
	// Intermediates may help build the path: the certificates of the
	// SignedData, or ones found by discovery. Missing intermediates are
	// fetched from AIA caIssuers URLs.
	Intermediates []*x509.Certificate
	// Anchors of the right direction for the local domain. An anchor need
	// not be self-signed.
	Anchors []*x509.Certificate
	// Address is the Direct address the certificate must bind to, e.g.
	// "bob@b.example". Without '@' it is a domain, and only a dNSName binds.
	Address string
	Purpose Purpose
}

// Verdict is the outcome of a validation.
type Verdict struct {
	Trusted bool
	// Reason says why the certificate is trusted or why not, for a person
	// to read. It is always set.
	Reason  string
	Binding Binding
	// Chain is the path from the certificate to the anchor, leaf first, when
	// trusted.
	Chain  []*x509.Certificate
	Anchor *x509.Certificate
	// Provisional is set on an untrusted verdict that only the revocation
	// status, which could not be established, decided, under
	// DeferUnavailable: asking again later may give another verdict. Such
	// a verdict should not be cached, nor anything built on it.
	Provisional bool
}

// Validator validates certificates. It caches CRLs, OCSP responses and
// fetched intermediates, and is safe for concurrent use.
type Validator struct {
	client       *http.Client
	now          func() time.Time
	revocation   RevocationPolicy
	failureTTL   time.Duration
	allowNoKU    bool
	log          *slog.Logger
	mu           sync.Mutex // protects the caches below
	crls         map[crlKey]*crlEntry
	ocsps        map[ocspKey]*ocspEntry
	aia          map[string]*aiaEntry
	fetchFailure map[string]failure
	inflight     map[string]*flight
}

// defaultTimeout is the HTTP timeout when no client is given; the Java RI
// uses 10 s for bundle and certificate fetches (CD-11, DT-01).
const defaultTimeout = 10 * time.Second

// NewValidator returns a Validator with empty caches.
func NewValidator(opts Options) *Validator {
	v := &Validator{
		client:       opts.HTTPClient,
		now:          opts.Now,
		revocation:   opts.Revocation,
		failureTTL:   opts.FailureTTL,
		allowNoKU:    opts.AllowMissingKeyUsage,
		log:          opts.Logger,
		crls:         map[crlKey]*crlEntry{},
		ocsps:        map[ocspKey]*ocspEntry{},
		aia:          map[string]*aiaEntry{},
		fetchFailure: map[string]failure{},
		inflight:     map[string]*flight{},
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: defaultTimeout}
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.failureTTL <= 0 {
		v.failureTTL = failureTTL
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	return v
}

// Validate decides whether req.Cert is trusted for req.Address and
// req.Purpose (TV-01). It never returns an error: failures to reach a CRL,
// OCSP responder or AIA URL become part of the verdict.
func (v *Validator) Validate(ctx context.Context, req Request) Verdict {
	vd := v.validate(ctx, req)
	if req.Cert != nil {
		v.log.Debug("certificate validated", "subject", req.Cert.Subject.String(), "address", req.Address,
			"purpose", req.Purpose.String(), "trusted", vd.Trusted, "reason", vd.Reason)
	}
	return vd
}

func (v *Validator) validate(ctx context.Context, req Request) Verdict {
	now := v.now()
	cert := req.Cert
	if cert == nil {
		return refuse(Unbound, "no certificate")
	}
	if req.Purpose != Signing && req.Purpose != Encryption {
		return refuse(Unbound, fmt.Sprintf("unknown purpose %d", int(req.Purpose)))
	}

	// Binding by subjectAltName only (AS-02..AS-05).
	binding, why := bind(cert, req.Address)
	if binding == Unbound {
		return refuse(Unbound, why)
	}

	if len(req.Anchors) == 0 {
		return refuse(binding, "no trust anchors configured for this domain and direction (TV-05)")
	}

	// Checks on the certificate itself first, so the reason names the real
	// problem rather than the path builder's view of it.
	if reason := checkValidity(cert, now); reason != "" {
		return refuse(binding, reason)
	}
	if reason := v.checkLeafUsage(cert, req.Purpose); reason != "" {
		return refuse(binding, reason)
	}
	if reason := checkKey(cert, req.Purpose, true); reason != "" {
		return refuse(binding, reason)
	}
	if !(isSelfIssued(cert) && containsCert(req.Anchors, cert)) {
		if reason := checkSignatureAlgorithm(cert); reason != "" {
			return refuse(binding, reason)
		}
	}

	// Path to an anchor (TV-02, TV-03).
	chains, reason := v.buildChains(ctx, cert, req.Intermediates, req.Anchors, now, true)
	if reason != "" {
		return refuse(binding, reason)
	}
	var chain []*x509.Certificate
	for _, c := range chains {
		if reason = checkChain(c, req.Purpose); reason == "" {
			chain = c
			break
		}
	}
	if chain == nil {
		return refuse(binding, reason)
	}

	// Revocation of every certificate but the anchor (TV-04).
	var notes []string
	for i := 0; i+1 < len(chain); i++ {
		res := v.revocationStatus(ctx, chain[i], chain[i+1], now)
		switch {
		case res.revoked != "":
			return refuse(binding, res.revoked)
		case res.unavailable != "":
			if v.revocation == DeferUnavailable {
				vd := refuse(binding, res.unavailable+" (revocation policy: defer, try again later)")
				vd.Provisional = true
				return vd
			}
			if v.revocation != AllowUnavailable {
				return refuse(binding, res.unavailable+" (revocation policy: refuse)")
			}
			v.log.Warn("revocation status unavailable, accepting per policy", "subject", chain[i].Subject.String(), "reason", res.unavailable)
			notes = append(notes, res.unavailable+" (accepted by revocation policy)")
		case res.checked != "":
			notes = append(notes, res.checked)
		}
	}

	anchor := chain[len(chain)-1]
	var b strings.Builder
	fmt.Fprintf(&b, "trusted for %s: %s (%s)", req.Purpose, binding, why)
	switch len(chain) {
	case 1:
		fmt.Fprintf(&b, ", is itself anchor %s", certName(anchor))
	case 2:
		fmt.Fprintf(&b, ", issued by anchor %s", certName(anchor))
	default:
		fmt.Fprintf(&b, ", chains to anchor %s via %d intermediate(s)", certName(anchor), len(chain)-2)
	}
	if len(notes) == 0 {
		b.WriteString("; no revocation sources")
	} else {
		b.WriteString("; " + strings.Join(notes, "; "))
	}
	return Verdict{
		Trusted: true,
		Reason:  b.String(),
		Binding: binding,
		Chain:   chain,
		Anchor:  anchor,
	}
}

func refuse(b Binding, reason string) Verdict {
	return Verdict{Reason: reason, Binding: b}
}
