package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hisp-project/hisp/dnsclient"
)

// ValidateFunc judges one certificate found for address; intermediates are
// the other certificates found in the same answer. It returns whether the
// certificate may be used to encrypt to address and a readable reason either
// way. It must be safe for concurrent use.
type ValidateFunc func(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, address string) (trusted bool, reason string)

// Judgement is a verdict on one certificate found for an address.
type Judgement struct {
	Trusted bool
	Reason  string
	// Provisional marks an untrusted verdict that may change with no
	// change of the certificate: its revocation status could not be
	// established (a CRL server down). A Result that rests on one is
	// never cached, and says so in Result.Provisional.
	Provisional bool
}

// JudgeFunc is a ValidateFunc that can say a verdict is provisional.
type JudgeFunc func(ctx context.Context, cert *x509.Certificate, intermediates []*x509.Certificate, address string) Judgement

// judge adapts a ValidateFunc: its verdicts are never provisional.
func (f ValidateFunc) judge() JudgeFunc {
	return func(ctx context.Context, cert *x509.Certificate, inter []*x509.Certificate, address string) Judgement {
		ok, reason := f(ctx, cert, inter, address)
		return Judgement{Trusted: ok, Reason: reason}
	}
}

// DiscoveryOptions configure a Discoverer. The zero value gives the defaults.
type DiscoveryOptions struct {
	// Resolver is the "host:port" of the DNS server to query. Empty means the
	// first nameserver of /etc/resolv.conf, read at each uncached look-up.
	Resolver string
	// DNSTimeout limits each DNS query (one UDP attempt, its one retry, or a
	// TCP exchange). Default 3 s.
	DNSTimeout time.Duration
	// LDAPTimeout limits each LDAP connect, bind and search. Default 5 s.
	LDAPTimeout time.Duration
	// HTTPClient fetches the URLs of IPKIX CERT records. Nil means a client
	// with a 10 s time-out (CD-11).
	HTTPClient *http.Client
	// NegativeTTL is how long "nothing found" is cached. Default 60 s; a
	// negative value disables negative caching.
	NegativeTTL time.Duration
	// LDAPTTL is how long LDAP answers are cached (LDAP has no TTL of its
	// own). Default 5 min; a negative value disables LDAP caching.
	LDAPTTL time.Duration
	// Now is the clock for cache expiry. Nil means time.Now.
	Now func() time.Time
	// Logger receives debug records of each step. Nil discards them.
	Logger *slog.Logger
}

// Step is one step of certificate discovery, in the order of CD-01.
type Step int

const (
	// StepNone is the zero Step: no step decided.
	StepNone Step = iota
	// DNSAddress looks up DNS CERT records at the address's DNS name.
	DNSAddress
	// DNSDomain looks up DNS CERT records at the address's domain.
	DNSDomain
	// LDAPAddress searches the domain's LDAP servers for mail=address.
	LDAPAddress
	// LDAPDomain searches the domain's LDAP servers for mail=domain.
	LDAPDomain
)

// String returns the step's name as `hisp discover` prints it.
func (s Step) String() string {
	switch s {
	case StepNone:
		return "none"
	case DNSAddress:
		return "dns-address"
	case DNSDomain:
		return "dns-domain"
	case LDAPAddress:
		return "ldap-address"
	case LDAPDomain:
		return "ldap-domain"
	}
	return fmt.Sprintf("step(%d)", int(s))
}

// Candidate is one certificate a step found, with its verdict.
type Candidate struct {
	Cert    *x509.Certificate
	Trusted bool
	Reason  string
	// Provisional is set when the verdict may change on its own (see
	// Judgement).
	Provisional bool
	// Source says where the certificate came from, e.g. "CERT PKIX at
	// bob.b.example." or "ldap://ldap.b.example:389 cn=bob,dc=b,dc=example
	// userSMIMECertificate".
	Source string
}

// StepResult is what one discovery step did.
type StepResult struct {
	Step Step
	// Name is what was looked up: the DNS name(s) queried, or the LDAP filter.
	Name       string
	Candidates []Candidate
	// Err is a look-up failure (DNS server not answering, every LDAP server
	// down). A step with an error found nothing.
	Err error
	// Note explains an empty or partial answer in words ("no CERT records",
	// "no SRV records", a skipped record).
	Note string
	// Cached is set when the look-up was answered from the cache.
	Cached bool
}

// Result is the outcome of discovery for one address. A Result returned by
// DiscoverKeyed may be shared with other callers: do not modify it.
type Result struct {
	Address string
	// Steps are the steps run, in order, for `hisp discover` to print.
	Steps []StepResult
	// Certs are the trusted certificates of the deciding step; encrypt to
	// every one of them (AS-07). Empty if none was found.
	Certs []*x509.Certificate
	// Step is the deciding step when Certs is not empty.
	Step Step
	// Stopped is set when the stop rule ended discovery: a step found
	// certificates and none was trusted (CD-08).
	Stopped bool
	// Provisional is set when no certificate was trusted and some verdict
	// of the deciding step was provisional (a revocation outage): trying
	// again later may find a trusted one. Such a Result is not cached.
	Provisional bool
}

// Discoverer finds the certificates of remote Direct addresses. It is safe for
// concurrent use; its caches are shared by all calls.
type Discoverer struct {
	dnsc        dnsclient.Client
	ldapTimeout time.Duration
	negTTL      time.Duration
	ldapTTL     time.Duration
	http        *http.Client
	now         func() time.Time
	log         *slog.Logger

	dnsCache    *ttlCache[*dnsAnswer]   // by qtype and name
	certCache   *ttlCache[*certLookup]  // DNS CERT steps, by name
	ldapCache   *ttlCache[*ldapLookup]  // LDAP steps, by domain and mail value
	resultCache *ttlCache[*resultEntry] // DiscoverKeyed, by key and address
}

type resultEntry struct {
	res *Result
}

// NewDiscoverer returns a Discoverer with the given options; zero fields get
// their defaults.
func NewDiscoverer(opts DiscoveryOptions) *Discoverer {
	d := &Discoverer{
		dnsc:        dnsclient.Client{Server: opts.Resolver, Timeout: opts.DNSTimeout},
		ldapTimeout: opts.LDAPTimeout,
		negTTL:      opts.NegativeTTL,
		ldapTTL:     opts.LDAPTTL,
		http:        opts.HTTPClient,
		now:         opts.Now,
		log:         opts.Logger,
		dnsCache:    newTTLCache[*dnsAnswer](defaultCacheEntries),
		certCache:   newTTLCache[*certLookup](defaultCacheEntries),
		ldapCache:   newTTLCache[*ldapLookup](defaultCacheEntries),
		resultCache: newTTLCache[*resultEntry](defaultCacheEntries),
	}
	if d.ldapTimeout <= 0 {
		d.ldapTimeout = 5 * time.Second
	}
	if d.negTTL == 0 {
		d.negTTL = 60 * time.Second
	}
	if d.ldapTTL == 0 {
		d.ldapTTL = 5 * time.Minute
	}
	if d.http == nil {
		d.http = &http.Client{Timeout: 10 * time.Second} // CD-11
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d
}

// FlushCache forgets every cached answer and verdict.
func (d *Discoverer) FlushCache() {
	d.dnsCache.clear()
	d.certCache.clear()
	d.ldapCache.clear()
	d.resultCache.clear()
}

// Discover finds the certificates of address and judges each with validate.
// Look-ups are answered from the cache when fresh, but validate runs on every
// call.
//
// The Result is nil only when address is not a valid Direct address or
// validate is nil. The error is non-nil when the address is invalid, ctx ended,
// or no trusted certificate was found while some look-up failed: then the
// absence of a certificate may be temporary, and the Result (non-nil) shows
// which step failed.
func (d *Discoverer) Discover(ctx context.Context, address string, validate ValidateFunc) (*Result, error) {
	return d.DiscoverKeyed(ctx, address, "", validate)
}

// DiscoverKeyed is Discover with the verdict cached too: a Result is kept per
// (key, address) until the earliest expiry of the look-ups it was made from,
// or the expiry of one of its trusted certificates if that comes first. The
// key names what validate depends on besides the certificate and the address
// (for example a hash of the trust anchors of the sending domain), so that a
// change of anchors gives a new key. Results of discoveries with a failed
// look-up are not cached. An empty key disables the result cache.
func (d *Discoverer) DiscoverKeyed(ctx context.Context, address, key string, validate ValidateFunc) (*Result, error) {
	if validate == nil {
		return nil, fmt.Errorf("discover %s: no validate function", address)
	}
	return d.DiscoverJudged(ctx, address, key, validate.judge())
}

// DiscoverJudged is DiscoverKeyed with verdicts that may be provisional: a
// Result resting on a provisional verdict is not cached (nor is any other
// negative result a look-up failure or outage caused).
func (d *Discoverer) DiscoverJudged(ctx context.Context, address, key string, judge JudgeFunc) (*Result, error) {
	if key == "" {
		res, err := d.discover(ctx, address, judge)
		if res == nil {
			return nil, err
		}
		return res.Result, err
	}
	ck := key + "\x00" + address
	now := d.now()
	if e, _, ok := d.resultCache.get(ck, now); ok {
		return e.res, nil
	}
	res, err := d.discover(ctx, address, judge)
	if res == nil {
		return nil, err
	}
	if err != nil {
		return res.Result, err
	}
	if exp := res.expires; !exp.IsZero() {
		d.resultCache.put(ck, &resultEntry{res.Result}, exp, d.now())
	}
	return res.Result, nil
}

// discovered is a Result with its cache expiry (zero: do not cache).
type discovered struct {
	*Result
	expires time.Time
}

// stepOutcome is what a step's look-up returns before validation.
type stepOutcome struct {
	name    string
	found   []foundCert
	note    string
	err     error
	expires time.Time // zero: not cacheable
	cached  bool
}

// foundCert is one certificate a look-up found and where.
type foundCert struct {
	cert   *x509.Certificate
	source string
}

func (d *Discoverer) discover(ctx context.Context, address string, validate JudgeFunc) (*discovered, error) {
	if validate == nil {
		return nil, fmt.Errorf("discover %s: no validate function", address)
	}
	addr, err := parseAddress(address)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", address, err)
	}
	res := &discovered{Result: &Result{Address: address}}
	var (
		expires     time.Time
		cacheable   = true
		provisional bool // some verdict may change on its own
		errs        []error
		rawErrs     []error
		ls          = &ldapSession{d: d, domain: addr.domain}
	)
	defer ls.close()

	// CD-01: the order of the steps. The first step that finds any
	// certificate decides (CD-08).
	steps := []struct {
		step Step
		run  func() stepOutcome
	}{
		{DNSAddress, func() stepOutcome { return d.dnsAddressStep(ctx, addr) }},
		{DNSDomain, func() stepOutcome { return d.dnsCertStep(ctx, []string{addr.domain + "."}) }},
		{LDAPAddress, func() stepOutcome { return d.ldapStep(ctx, ls, addr.address()) }},
		{LDAPDomain, func() stepOutcome { return d.ldapStep(ctx, ls, addr.domain) }},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("discover %s: %w", address, err)
		}
		out := s.run()
		sr := StepResult{Step: s.step, Name: out.name, Err: out.err, Note: out.note, Cached: out.cached}
		// The LDAP steps share one session: report its failure once.
		if out.err != nil && !slices.Contains(rawErrs, out.err) {
			rawErrs = append(rawErrs, out.err)
			errs = append(errs, fmt.Errorf("%s: %w", s.step, out.err))
		}
		if out.expires.IsZero() {
			cacheable = false
		}
		expires = earliest(expires, out.expires)
		var trusted []*x509.Certificate
		for i, f := range out.found {
			inter := make([]*x509.Certificate, 0, len(out.found)-1)
			for j, g := range out.found {
				if j != i {
					inter = append(inter, g.cert)
				}
			}
			j := validate(ctx, f.cert, inter, address)
			ok := j.Trusted
			sr.Candidates = append(sr.Candidates, Candidate{Cert: f.cert, Trusted: ok, Reason: j.Reason, Provisional: j.Provisional && !ok, Source: f.source})
			if j.Provisional && !ok {
				provisional = true
			}
			if ok {
				trusted = append(trusted, f.cert)
				expires = earliest(expires, f.cert.NotAfter)
			}
		}
		res.Steps = append(res.Steps, sr)
		d.log.Debug("discovery step", slog.String("address", address), slog.String("step", s.step.String()),
			slog.String("name", out.name), slog.Int("found", len(out.found)), slog.Int("trusted", len(trusted)),
			slog.String("note", out.note), slog.Any("err", out.err), slog.Bool("cached", out.cached))
		if len(out.found) == 0 {
			continue
		}
		if len(trusted) > 0 {
			// AS-07, AS-08: every trusted certificate of the first step
			// that found any.
			res.Certs = trusted
			res.Step = s.step
		} else {
			// CD-08: certificates found, none trusted: stop, no fallback.
			res.Stopped = true
		}
		break
	}
	if err := ctx.Err(); err != nil && len(res.Certs) == 0 {
		return res, fmt.Errorf("discover %s: %w", address, err)
	}

	switch {
	case len(res.Certs) > 0:
		d.log.Info("certificates discovered", slog.String("address", address), slog.String("step", res.Step.String()), slog.Int("count", len(res.Certs)))
	case res.Stopped:
		d.log.Info("no trusted certificate: stop rule", slog.String("address", address), slog.String("step", res.Steps[len(res.Steps)-1].Step.String()))
	default:
		d.log.Info("no certificate found", slog.String("address", address), slog.Int("failed", len(errs)))
	}
	if len(errs) > 0 {
		// A failed look-up makes the verdict provisional: never cache it.
		cacheable = false
		if len(res.Certs) == 0 {
			return res, fmt.Errorf("discover %s: %w", address, errors.Join(errs...))
		}
	}
	if len(res.Certs) == 0 && provisional {
		// CD-08's stop is for certificates that are not valid, not for
		// ones whose revocation status could not be had: never cached.
		res.Provisional, cacheable = true, false
	}
	if cacheable {
		res.expires = expires
	}
	return res, nil
}

// directAddress is a parsed Direct address (AS-01).
type directAddress struct {
	local  string // unquoted local part, as given
	domain string // lower case, no trailing dot
}

func (a directAddress) address() string { return a.local + "@" + a.domain }

// parseAddress splits a Direct address into local part and domain. The local
// part may be a quoted string; the domain must be an ASCII host name.
func parseAddress(s string) (directAddress, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = s[1 : len(s)-1]
	}
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i == len(s)-1 {
		return directAddress{}, fmt.Errorf("not an address: %q", s)
	}
	local, domain := s[:i], strings.TrimSuffix(strings.ToLower(s[i+1:]), ".")
	if strings.HasPrefix(local, `"`) {
		u, err := unquoteLocal(local)
		if err != nil {
			return directAddress{}, err
		}
		local = u
	}
	if local == "" {
		return directAddress{}, fmt.Errorf("empty local part in %q", s)
	}
	if err := checkHostname(domain); err != nil {
		return directAddress{}, err
	}
	return directAddress{local: local, domain: domain}, nil
}

// unquoteLocal removes the quotes and backslash escapes of a quoted-string
// local part (RFC 5321 section 4.1.2).
func unquoteLocal(q string) (string, error) {
	if len(q) < 2 || q[len(q)-1] != '"' {
		return "", fmt.Errorf("bad quoted local part %q", q)
	}
	var b strings.Builder
	for i := 1; i < len(q)-1; i++ {
		c := q[i]
		if c == '\\' {
			i++
			if i >= len(q)-1 {
				return "", fmt.Errorf("bad quoted local part %q", q)
			}
			c = q[i]
		} else if c == '"' {
			return "", fmt.Errorf("bad quoted local part %q", q)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// checkHostname accepts an ASCII letter-digit-hyphen host name (underscores
// tolerated), as Direct domains are.
func checkHostname(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("bad domain %q", s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("bad domain %q", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("bad domain %q: only ASCII host names are supported", s)
			}
		}
	}
	return nil
}
