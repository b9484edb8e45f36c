package certs

import (
	"context"
	"fmt"
	"strings"
)

// Lookup runs one discovery step on its own, with no validation and no
// stop rule: what a partner's discovery finds at that step (hisp check
// compares it with what a domain means to publish). For the address-bound
// steps name is a Direct address; for the domain-bound steps it is an
// address or a bare domain. The candidates' verdicts are left empty. A
// failed look-up is the StepResult's Err.
func (d *Discoverer) Lookup(ctx context.Context, step Step, name string) StepResult {
	sr := StepResult{Step: step, Name: name}
	var a directAddress
	if strings.Contains(name, "@") {
		var err error
		if a, err = parseAddress(name); err != nil {
			sr.Err = err
			return sr
		}
	} else {
		a.domain = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
		if err := checkHostname(a.domain); err != nil {
			sr.Err = err
			return sr
		}
		if step == DNSAddress || step == LDAPAddress {
			sr.Err = fmt.Errorf("step %s needs an address, not the domain %s", step, name)
			return sr
		}
	}
	ls := &ldapSession{d: d, domain: a.domain}
	defer ls.close()
	var out stepOutcome
	switch step {
	case DNSAddress:
		out = d.dnsAddressStep(ctx, a)
	case DNSDomain:
		out = d.dnsCertStep(ctx, []string{a.domain + "."})
	case LDAPAddress:
		out = d.ldapStep(ctx, ls, a.address())
	case LDAPDomain:
		out = d.ldapStep(ctx, ls, a.domain)
	default:
		sr.Err = fmt.Errorf("no discovery step %s", step)
		return sr
	}
	sr.Name, sr.Err, sr.Note, sr.Cached = out.name, out.err, out.note, out.cached
	for _, f := range out.found {
		sr.Candidates = append(sr.Candidates, Candidate{Cert: f.cert, Source: f.source})
	}
	return sr
}
