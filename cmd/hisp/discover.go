package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

func init() {
	register("discover", command{
		summary: "find a Direct address's certificates (DNS CERT, LDAP) and say which are trusted and why",
		run:     discoverCmd,
	})
}

// discoverCmd implements
//
//	hisp discover ADDRESS [--resolver host:port] [--domain LOCALDOMAIN]
//
// It prints each discovery step, each certificate found with its verdict,
// and exits 0 only when a trusted certificate was found.
func discoverCmd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "discover", "ADDRESS", false)
	resolver := c.fs.String("resolver", "", "DNS server `host:port` to query (default: the system resolver)")
	domain := c.fs.String("domain", "", "local `DOMAIN` whose outbound trust anchors decide (default: every local domain's)")
	revocation := c.fs.String("revocation", "refuse", "when a CRL or OCSP responder cannot be reached: refuse, defer (refuse for now) or allow")
	timeout := c.fs.Duration("timeout", 30*time.Second, "time limit for the whole discovery")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	address, addrDomain, err := store.NormalizeAddress(pos[0])
	if err != nil {
		return c.usageError("%v", err)
	}
	policy := trust.RefuseUnavailable
	switch *revocation {
	case "refuse":
	case "allow":
		policy = trust.AllowUnavailable
	case "defer":
		policy = trust.DeferUnavailable
	default:
		return c.usageError("--revocation must be refuse, defer or allow")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	st, err := c.openStore(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer st.Close()
	anchors, from, err := outboundAnchors(ctx, c, st, *domain)
	if err != nil {
		return c.fail(err)
	}
	w := env.stdout
	fmt.Fprintf(w, "discovering certificates of %s\n", address)
	if len(anchors) == 0 {
		fmt.Fprintf(w, "warning: %s has no outbound trust anchors: no certificate can be trusted (add one: %s anchor add DOMAIN FILE.pem)\n", from, env.progName())
	} else {
		fmt.Fprintf(w, "trust anchors: %d outbound of %s\n", len(anchors), from)
	}
	rules, err := outboundRules(ctx, st, *domain) // policy.go
	if err != nil {
		return c.fail(err)
	}
	if len(rules) > 0 {
		fmt.Fprintf(w, "trust policies: %d rule(s) of %s for recipients\n", len(rules), *domain)
	}
	validator := trust.NewValidator(trust.Options{Revocation: policy})
	validate := func(ctx context.Context, cert *x509.Certificate, inter []*x509.Certificate, addr string) (bool, string) {
		v := validator.Validate(ctx, trust.Request{Cert: cert, Intermediates: inter, Anchors: anchors,
			Address: addr, Purpose: trust.Encryption})
		if v.Trusted {
			if why := rules.Check(cert, *domain); why != "" {
				return false, why
			}
		}
		return v.Trusted, v.Reason
	}

	// A local domain's certificates come from the store, not DNS.
	if _, err := st.Domain(ctx, addrDomain); err == nil {
		return discoverLocal(ctx, w, st, address, addrDomain, validate)
	}
	d := certs.NewDiscoverer(certs.DiscoveryOptions{Resolver: *resolver})
	res, err := d.Discover(ctx, address, validate)
	if err != nil {
		return c.fail(fmt.Errorf("discover %s: %w", address, err))
	}
	for _, s := range res.Steps {
		fmt.Fprintf(w, "\nstep %s: %s\n", s.Step, s.Name)
		if s.Err != nil {
			fmt.Fprintf(w, "  error: %v\n", s.Err)
		}
		if s.Note != "" {
			fmt.Fprintf(w, "  %s\n", s.Note)
		}
		for i, cand := range s.Candidates {
			printCandidate(w, i+1, cand.Cert, cand.Source, cand.Trusted, cand.Reason)
		}
	}
	fmt.Fprintln(w)
	switch {
	case len(res.Certs) > 0:
		fmt.Fprintf(w, "result: %d trusted certificate(s) from step %s\n", len(res.Certs), res.Step)
		return 0
	case res.Stopped:
		fmt.Fprintln(w, "result: no trusted certificate; discovery stopped at the first step that found certificates (none trusted)")
	default:
		fmt.Fprintln(w, "result: no certificate found")
	}
	return 1
}

// outboundAnchors returns the anchors for sending: of one local domain, or
// of all of them when domain is "".
func outboundAnchors(ctx context.Context, c *adminCmd, st *store.Store, domain string) ([]*x509.Certificate, string, error) {
	var domains []string
	if domain != "" {
		d, err := store.NormalizeDomain(domain)
		if err != nil {
			return nil, "", err
		}
		if err := c.requireDomain(ctx, st, d); err != nil {
			return nil, "", err
		}
		domains = []string{d}
	} else {
		all, err := st.Domains(ctx)
		if err != nil {
			return nil, "", err
		}
		for _, d := range all {
			domains = append(domains, d.Name)
		}
	}
	var out []*x509.Certificate
	for _, d := range domains {
		anchors, err := st.Anchors(ctx, d)
		if err != nil {
			return nil, "", err
		}
		for _, a := range anchors {
			if a.Direction == store.DirectionIn {
				continue
			}
			c, err := a.Parse()
			if err != nil {
				return nil, "", fmt.Errorf("anchor %d of %s: %w", a.ID, d, err)
			}
			out = append(out, c)
		}
	}
	from := "every local domain"
	if domain != "" {
		from = domains[0]
	} else if len(domains) == 0 {
		from = "this data directory (no local domains)"
	}
	return out, from, nil
}

// discoverLocal validates the certificates the store holds for a local
// address: address-bound first, then organization-bound (AS-08).
func discoverLocal(ctx context.Context, w io.Writer, st *store.Store, address, domain string, validate certs.ValidateFunc) int {
	for _, owner := range []string{address, domain} {
		list, err := st.Certificates(ctx, store.CertFilter{Owner: owner})
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			return 1
		}
		fmt.Fprintf(w, "\nstep local: certificates of %s in the local store\n", owner)
		if len(list) == 0 {
			fmt.Fprintln(w, "  none")
			continue
		}
		trusted := 0
		for i, sc := range list {
			cert, err := sc.Parse()
			if err != nil {
				fmt.Fprintf(w, "  certificate %d: unreadable: %v\n", i+1, err)
				continue
			}
			var chain []*x509.Certificate
			for _, der := range sc.Chain {
				if c, err := x509.ParseCertificate(der); err == nil {
					chain = append(chain, c)
				}
			}
			ok, reason := validate(ctx, cert, chain, address)
			if ok {
				trusted++
			}
			printCandidate(w, i+1, cert, fmt.Sprintf("local store, certificate id %d", sc.ID), ok, reason)
		}
		fmt.Fprintln(w)
		if trusted > 0 {
			fmt.Fprintf(w, "result: %d trusted certificate(s) of %s in the local store\n", trusted, owner)
			return 0
		}
		fmt.Fprintf(w, "result: no trusted certificate; found certificates of %s but none is trusted\n", owner)
		return 1
	}
	fmt.Fprintln(w, "\nresult: no certificate found")
	return 1
}

func printCandidate(w io.Writer, n int, c *x509.Certificate, source string, trusted bool, reason string) {
	fmt.Fprintf(w, "  certificate %d: %s\n", n, c.Subject)
	fmt.Fprintf(w, "    SAN:       %s\n", store.SANSummary(c))
	fmt.Fprintf(w, "    issuer:    %s\n", c.Issuer)
	fmt.Fprintf(w, "    valid:     %s to %s\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "    key usage: %s\n", keyUsageNames(c.KeyUsage))
	fmt.Fprintf(w, "    source:    %s\n", source)
	verdict := "NOT trusted"
	if trusted {
		verdict = "trusted"
	}
	fmt.Fprintf(w, "    verdict:   %s: %s\n", verdict, reason)
}

func keyUsageNames(ku x509.KeyUsage) string {
	names := []struct {
		bit  x509.KeyUsage
		name string
	}{
		{x509.KeyUsageDigitalSignature, "digitalSignature"}, {x509.KeyUsageContentCommitment, "nonRepudiation"},
		{x509.KeyUsageKeyEncipherment, "keyEncipherment"}, {x509.KeyUsageDataEncipherment, "dataEncipherment"},
		{x509.KeyUsageKeyAgreement, "keyAgreement"}, {x509.KeyUsageCertSign, "keyCertSign"}, {x509.KeyUsageCRLSign, "cRLSign"},
	}
	var out []string
	for _, n := range names {
		if ku&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, ", ")
}
