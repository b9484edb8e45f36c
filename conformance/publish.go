package conformance

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/certs"
)

// checkPublished looks up the domain's certificates the way partners'
// discovery does (CD-01): DNS CERT at each address name and at the domain,
// and LDAP when an SRV record announces a server. Each look-up is compared
// with what the data directory holds, when it is at hand.
func (r *run) checkPublished(ctx context.Context) {
	d := r.opts.Domain
	disc := certs.NewDiscoverer(certs.DiscoveryOptions{
		Resolver:    r.opts.Resolver,
		DNSTimeout:  min(r.opts.Timeout, dnsTimeout),
		LDAPTimeout: r.opts.Timeout,
		HTTPClient:  r.opts.HTTPClient,
		NegativeTTL: -1,
		LDAPTTL:     -1,
		Now:         r.opts.Now,
		Logger:      r.opts.Logger,
	})
	owners := r.owners()
	if len(owners) == 0 {
		r.skip("dns-cert address", "no address to check address-bound certificates of: give --address ADDRESS, or run on the server with the data directory (%s)", r.opts.NoStore)
	}
	for _, a := range owners {
		r.checkStep(ctx, disc, certs.DNSAddress, "dns-cert address "+a, a)
	}
	r.checkStep(ctx, disc, certs.DNSDomain, "dns-cert domain "+d, d)
	r.checkTCP(ctx)

	if r.checkLDAPSRV(ctx) {
		for _, a := range owners {
			r.checkStep(ctx, disc, certs.LDAPAddress, "ldap address "+a, a)
		}
		r.checkStep(ctx, disc, certs.LDAPDomain, "ldap domain "+d, d)
	}

	if len(r.published) == 0 {
		r.fail("published", "no certificate of %s is published in DNS or LDAP: partners cannot encrypt to it (CD-10)", d)
		return
	}
	var addr, dom []string
	for _, p := range r.published {
		if strings.Contains(p.owner, "@") {
			addr = append(addr, p.owner)
		} else {
			dom = append(dom, p.owner)
		}
	}
	r.pass("published", "%d certificate(s): %d address-bound%s, %d domain-bound", len(r.published), len(addr), ownerList(addr), len(dom))
}

// ownerList formats owners for a reason: " (a, b)", or "" when empty.
func ownerList(owners []string) string {
	owners = slices.Compact(slices.Sorted(slices.Values(owners)))
	if len(owners) == 0 {
		return ""
	}
	return " (" + strings.Join(owners, ", ") + ")"
}

// checkLDAPSRV looks for the SRV record that announces the domain's LDAP
// servers (CD-06) and reports whether there is one.
func (r *run) checkLDAPSRV(ctx context.Context) bool {
	name := "_ldap._tcp." + r.opts.Domain + "."
	resp, server, err := r.dns().Query(ctx, name, dns.TypeSRV)
	if err != nil {
		r.fail("ldap-srv", "look-up of %s failed: %v", name, err)
		return false
	}
	var targets []string
	for _, rr := range resp.Answer {
		if srv, ok := rr.(*dns.SRV); ok && srv.Target != "." {
			targets = append(targets, fmt.Sprintf("%s (priority %d, weight %d)",
				strings.TrimSuffix(srv.Target, ".")+":"+strconv.Itoa(int(srv.Port)), srv.Priority, srv.Weight))
		}
	}
	if len(targets) == 0 {
		r.skip("ldap-srv", "no SRV record at %s (from %s): LDAP hosting is not offered, which is optional when DNS CERT publishes the certificates (CD-10)", name, server)
		return false
	}
	r.pass("ldap-srv", "%s announces %s", name, strings.Join(targets, ", "))
	return true
}

// checkStep runs one discovery step for owner and judges what it found.
func (r *run) checkStep(ctx context.Context, disc *certs.Discoverer, step certs.Step, check, owner string) {
	sr := disc.Lookup(ctx, step, owner)
	where := sr.Name
	if sr.Err != nil {
		r.fail(check, "look-up at %s failed: %v", where, sr.Err)
		return
	}
	var found []*x509.Certificate
	for _, c := range sr.Candidates {
		found = append(found, c.Cert)
	}
	if len(found) > 0 && (step == certs.DNSAddress || step == certs.DNSDomain) && r.certName == "" {
		// The name that had the records: the last one the step asked.
		names := strings.Split(where, ", ")
		r.certName = names[len(names)-1]
	}
	for i, c := range sr.Candidates {
		r.record(c.Cert, owner, c.Source, append(slices.Clone(found[:i]), found[i+1:]...))
	}
	note := ""
	if sr.Note != "" && len(found) > 0 {
		note = " (" + sr.Note + ")"
	}
	var fps []string
	encrypt := false
	for _, c := range found {
		fps = append(fps, shortFP(c))
		if c.KeyUsage&x509.KeyUsageKeyEncipherment != 0 {
			encrypt = true
		}
	}

	if r.opts.Store != nil {
		now := r.opts.Now()
		var missing, extra, expired []string
		held := r.heldBy(owner)
		for _, h := range held {
			if now.After(h.cert.NotAfter) {
				expired = append(expired, shortFP(h.cert))
				continue
			}
			if !containsCert(found, h.cert) {
				missing = append(missing, fmt.Sprintf("%s (id %d)", shortFP(h.cert), h.rec.ID))
			}
		}
		for _, c := range found {
			if !slices.ContainsFunc(held, func(h heldCert) bool { return h.cert.Equal(c) }) {
				extra = append(extra, shortFP(c))
			}
		}
		switch {
		case len(missing) > 0:
			r.fail(check, "certificate(s) %s of %s not published at %s (found: %s): partners cannot find them",
				strings.Join(missing, ", "), owner, where, orNone(fps))
			return
		case len(extra) > 0:
			r.fail(check, "%s publishes certificate(s) %s that the data directory does not hold for %s: stale records, which no key here opens",
				where, strings.Join(extra, ", "), owner)
			return
		case len(found) == 0 && len(expired) > 0:
			r.pass(check, "none published at %s; the data directory holds only expired certificate(s) of %s (%s), see their expiry check",
				where, owner, strings.Join(expired, ", "))
			return
		case len(found) == 0:
			r.pass(check, "none published at %s, and none held for %s", where, owner)
			return
		}
	} else if len(found) == 0 {
		if step == certs.DNSDomain || step == certs.LDAPDomain {
			r.pass(check, "no domain-bound certificate at %s (optional when addresses have their own)%s", where, noteOf(sr.Note))
			return
		}
		r.fail(check, "no certificate at %s%s: partners cannot encrypt to %s", where, noteOf(sr.Note), owner)
		return
	}
	if !encrypt {
		r.fail(check, "%d certificate(s) at %s (%s), none with keyEncipherment: partners cannot encrypt to %s (AS-06)",
			len(found), where, strings.Join(fps, ", "), owner)
		return
	}
	held := ""
	if r.opts.Store != nil {
		held = ", as the data directory holds"
	}
	r.pass(check, "%d certificate(s) at %s: %s%s%s", len(found), where, strings.Join(fps, ", "), held, note)
}

func noteOf(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

func containsCert(l []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(l, func(x *x509.Certificate) bool { return x.Equal(c) })
}

// record remembers a certificate found for owner at source.
func (r *run) record(c *x509.Certificate, owner, source string, others []*x509.Certificate) {
	for _, p := range r.published {
		if p.cert.Equal(c) && strings.EqualFold(p.owner, owner) {
			p.sources = append(p.sources, source)
			for _, o := range others {
				if !containsCert(p.others, o) {
					p.others = append(p.others, o)
				}
			}
			return
		}
	}
	r.published = append(r.published, &publishedCert{cert: c, owner: owner, sources: []string{source}, others: others})
}

// checkTCP asks for the first CERT records found again over TCP only: a
// certificate or two outgrow a UDP answer, and partners then retry over TCP
// (CD-04), so the domain's name servers must answer there (CD-10).
func (r *run) checkTCP(ctx context.Context) {
	if r.certName == "" {
		r.skip("dns-tcp", "no CERT record found to ask for over TCP")
		return
	}
	dc := r.dns()
	dc.TCP = true
	resp, server, err := dc.Query(ctx, r.certName, dns.TypeCERT)
	if err != nil {
		r.fail("dns-tcp", "CERT records of %s over TCP: %v: partners cannot fetch answers too large for UDP (CD-04)", r.certName, err)
		return
	}
	n := 0
	for _, rr := range resp.Answer {
		if _, ok := rr.(*dns.CERT); ok {
			n++
		}
	}
	if n == 0 {
		r.fail("dns-tcp", "%s answers no CERT record at %s over TCP, though it did over UDP", server, r.certName)
		return
	}
	r.pass("dns-tcp", "%s answers the %d CERT record(s) at %s over TCP too (%d bytes)", server, n, r.certName, resp.Len())
}
