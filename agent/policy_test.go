package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
)

// TestTrustPolicies: a domain's trust policy rules refuse, by name, an
// outbound recipient (direction out) and an inbound signer (direction in)
// that path validation trusts; a rule that the certificate meets changes
// nothing; rules of the other direction do not apply; removing a rule is
// seen at once.
func TestTrustPolicies(t *testing.T) {
	f := newFixture(t)
	p := f.p
	ctx := context.Background()
	add := func(domain, name string, dir store.Direction, expr string) {
		t.Helper()
		if _, err := f.st.AddTrustPolicy(ctx, store.TrustPolicy{Domain: domain, Name: name, Direction: dir, Expr: expr}); err != nil {
			t.Fatal(err)
		}
	}
	send := func() RecipientResult {
		t.Helper()
		res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", User: "alice@a.example", Recipients: []string{"carol@r.example"}},
			message("alice@a.example", []string{"carol@r.example"}, nil, ""))
		if err != nil {
			t.Fatal(err)
		}
		return res.Recipients[0]
	}

	// Outbound: carol's certificate asserts no DirectTrust policy.
	add("a.example", "directtrust-assurance", store.DirectionOut, "policy(1.3.6.1.4.1.41179.1.*)")
	add("a.example", "rsa-only", store.DirectionBoth, "key-type(rsa) and key-size(>=2048)")
	add("a.example", "inbound-only", store.DirectionIn, "key-type(ecdsa)")
	r := send()
	if r.Accepted || r.Status.Code != 550 || !strings.Contains(r.Status.Reason, `trust policy "directtrust-assurance" of a.example`) ||
		!strings.Contains(r.Status.Reason, "asserts no certificate policy") {
		t.Fatalf("recipient failing a rule: %+v", r.Status)
	}
	if _, err := f.st.RemoveTrustPolicy(ctx, "a.example", "directtrust-assurance"); err != nil {
		t.Fatal(err)
	}
	if r := send(); !r.Accepted {
		t.Fatalf("after the rule was removed (the RSA rule is met, the inbound one does not apply): %+v", r.Status)
	}

	// Inbound: ralph signs with RSA; b.example accepts only ECDSA signers.
	to := []string{"bob@b.example"}
	env := Envelope{MailFrom: "ralph@r.example", Recipients: to}
	sealed := seal(t, message("ralph@r.example", to, nil, ""), p.ralph, p.bob)
	add("b.example", "ecdsa-signers", store.DirectionIn, "key-type(ecdsa)")
	_, err := f.agent.Inbound(ctx, env, sealed)
	var e *Error
	if !errors.As(err, &e) || e.Status.Code != 550 || !strings.Contains(e.Status.Reason, `trust policy "ecdsa-signers" of b.example`) {
		t.Fatalf("signer failing a rule: %v", err)
	}

	// A signer that meets the DirectTrust policy OIDs passes such a rule.
	ralphDT := testpki.Issue(t, p.caR, testpki.Options{Email: []string{"ralph@r.example"},
		Policies: []string{"1.3.6.1.4.1.41179.1.3", "1.3.6.1.4.1.41179.2.1"}})
	if _, err := f.st.RemoveTrustPolicy(ctx, "b.example", "ecdsa-signers"); err != nil {
		t.Fatal(err)
	}
	add("b.example", "directtrust", store.DirectionIn, "policy(1.3.6.1.4.1.41179.1.*) and policy(1.3.6.1.4.1.41179.2.*)")
	if _, err := f.agent.Inbound(ctx, env, sealed); err == nil {
		t.Fatal("a signer without DirectTrust policies accepted")
	}
	res, err := f.agent.Inbound(ctx, env, seal(t, message("ralph@r.example", to, nil, ""), ralphDT, p.bob))
	if err != nil || !res.Recipients[0].Accepted {
		t.Fatalf("a DirectTrust signer: %v", err)
	}
}
