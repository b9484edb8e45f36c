package conformance

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hisp-project/hisp/trust"
)

// subject is one certificate to judge: published, held, or both.
type subject struct {
	cert          *x509.Certificate
	owner         string
	intermediates []*x509.Certificate
	published     bool
	held          bool
}

// subjects returns the published certificates, then the held ones that
// were not found published, each once per owner.
func (r *run) subjects() []*subject {
	var out []*subject
	find := func(c *x509.Certificate, owner string) *subject {
		for _, s := range out {
			if s.cert.Equal(c) && strings.EqualFold(s.owner, owner) {
				return s
			}
		}
		return nil
	}
	for _, p := range r.published {
		out = append(out, &subject{cert: p.cert, owner: p.owner, intermediates: p.others, published: true})
	}
	for _, h := range r.held {
		s := find(h.cert, h.rec.Owner)
		if s == nil {
			s = &subject{cert: h.cert, owner: h.rec.Owner}
			out = append(out, s)
		}
		s.held = true
		s.intermediates = append(s.intermediates, h.chain...)
	}
	return out
}

// validator returns the trust.Validator of the run, refusing what it
// cannot establish, as the strictest partner does.
func (r *run) validator() *trust.Validator {
	if r.v == nil {
		r.v = trust.NewValidator(trust.Options{
			HTTPClient: r.opts.HTTPClient,
			Now:        r.opts.Now,
			Revocation: trust.RefuseUnavailable,
			Logger:     slog.New(slog.DiscardHandler),
		})
	}
	return r.v
}

// checkCertificates judges every published certificate (and every held one)
// as a partner would before encrypting to it: binding, key usage, key size,
// path to the domain's own anchor, revocation, expiry (TV-01..TV-04,
// AS-02, AS-06, DT-04).
func (r *run) checkCertificates(ctx context.Context) {
	for _, s := range r.subjects() {
		if ctx.Err() != nil {
			return
		}
		r.checkCertificate(ctx, s)
	}
}

func (r *run) checkCertificate(ctx context.Context, s *subject) {
	c := s.cert
	prefix := fmt.Sprintf("cert %s %s ", s.owner, shortFP(c))
	purpose := trust.Encryption
	if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 && c.KeyUsage&x509.KeyUsageDigitalSignature != 0 {
		purpose = trust.Signing // a signing-only certificate of a single-use pair
	}
	in := r.validator().Inspect(ctx, trust.Request{
		Cert: c, Intermediates: s.intermediates, Anchors: r.anchors, Address: s.owner, Purpose: purpose,
	})
	emit := func(name string, f trust.Finding) {
		if f.OK {
			r.pass(prefix+name, "%s", f.Reason)
		} else {
			r.fail(prefix+name, "%s", f.Reason)
		}
	}
	emit("binding", in.Find(trust.RuleBinding))
	emit("key usage", in.Find(trust.RuleKeyUsage))
	emit("key size", in.Find(trust.RuleKey))

	noAnchor := len(r.anchors) == 0
	if noAnchor {
		r.skip(prefix+"chain", "no anchor of %s known: give --anchor FILE, or run on the server with the data directory (%s)", r.opts.Domain, r.opts.NoStore)
	} else {
		emit("chain", in.Find(trust.RuleChain))
	}

	// TV-04: a reachable, current CRL. A certificate without a
	// distribution point cannot be checked by partners that require one
	// (ETT refuses them, TV-09).
	rev := in.Find(trust.RuleRevocation)
	switch {
	case len(c.CRLDistributionPoints) == 0:
		r.fail(prefix+"crl", "names no CRL distribution point: partners cannot check whether it is revoked (TV-04, TV-09)")
	case noAnchor:
		r.skip(prefix+"crl", "distribution point %s not checked: without an anchor the CRL's signature cannot be verified", strings.Join(c.CRLDistributionPoints, ", "))
	case rev.OK:
		r.pass(prefix+"crl", "reachable, signed by the issuer and current: %s", rev.Reason)
	default:
		r.fail(prefix+"crl", "%s", rev.Reason)
	}

	r.checkExpiry(prefix+"expiry", s, in)
}

// checkExpiry fails a certificate that is not valid now or that expires
// within the horizon, and one whose issuers do.
func (r *run) checkExpiry(check string, s *subject, in trust.Inspection) {
	now := r.opts.Now()
	c := s.cert
	if f := in.Find(trust.RuleValidity); !f.OK {
		unpublished := ""
		if !s.published && now.After(c.NotAfter) {
			unpublished = "; hisp no longer publishes it: issue or import a new certificate"
		}
		r.fail(check, "%s%s", f.Reason, unpublished)
		return
	}
	left := c.NotAfter.Sub(now)
	horizon := days(r.opts.Horizon)
	if left < r.opts.Horizon {
		r.fail(check, "expires on %s, in %s: within the horizon of %s, renew it", day(c.NotAfter), days(left), horizon)
		return
	}
	for _, ic := range in.Chain[min(1, len(in.Chain)):] {
		if l := ic.NotAfter.Sub(now); l < r.opts.Horizon {
			r.fail(check, "its issuer %q expires on %s, in %s: within the horizon of %s", ic.Subject.String(), day(ic.NotAfter), days(l), horizon)
			return
		}
	}
	r.pass(check, "expires on %s, in %s (horizon %s)", day(c.NotAfter), days(left), horizon)
}
