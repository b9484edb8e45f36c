package certs

import (
	"context"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestLookup: one step on its own, with no stop rule: the domain-bound
// records are found although an address-bound one exists, and a bare
// domain is accepted for the domain steps only.
func TestLookup(t *testing.T) {
	env := newDiscoveryEnv(t, false)
	pki, z := env.pki, env.zone
	ab := pki.leaf(t, leafOpts{email: "l1@lookup.test"})
	db := pki.leaf(t, leafOpts{dnsName: "lookup.test", expired: true})
	z.addCERT("l1.lookup.test", dns.CertPKIX, ab.Raw)
	z.addCERT("lookup.test", dns.CertPKIX, db.Raw)
	d := env.discoverer()
	ctx := context.Background()

	sr := d.Lookup(ctx, DNSAddress, "l1@lookup.test")
	if sr.Err != nil || len(sr.Candidates) != 1 || !sr.Candidates[0].Cert.Equal(ab) || sr.Name != "l1.lookup.test." {
		t.Errorf("address step: %+v", sr)
	}
	for _, name := range []string{"l1@lookup.test", "lookup.test", "Lookup.Test."} {
		sr = d.Lookup(ctx, DNSDomain, name)
		if sr.Err != nil || len(sr.Candidates) != 1 || !sr.Candidates[0].Cert.Equal(db) || sr.Candidates[0].Trusted {
			t.Errorf("domain step for %s: %+v", name, sr)
		}
	}
	sr = d.Lookup(ctx, DNSAddress, "nobody@lookup.test")
	if sr.Err != nil || len(sr.Candidates) != 0 || sr.Note != "no CERT records" {
		t.Errorf("nothing published: %+v", sr)
	}
	sr = d.Lookup(ctx, LDAPDomain, "lookup.test")
	if sr.Err != nil || len(sr.Candidates) != 0 || !strings.Contains(sr.Note, "no SRV records") {
		t.Errorf("no LDAP: %+v", sr)
	}
	if sr = d.Lookup(ctx, DNSAddress, "lookup.test"); sr.Err == nil {
		t.Error("address step accepted a domain")
	}
	if sr = d.Lookup(ctx, DNSDomain, "bad domain"); sr.Err == nil {
		t.Error("bad domain accepted")
	}
}
