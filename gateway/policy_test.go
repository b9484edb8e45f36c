package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/store"
)

// TestTrustPolicyEndToEnd: a clinic with the DirectTrust assurance rule for
// its signers refuses, over SMTP, a message signed by a
// certificate without the DirectTrust policy OIDs, naming the rule; the
// hospital's queue records the refusal and alice gets the DSN.
func TestTrustPolicyEndToEnd(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	if _, err := b.st.AddTrustPolicy(context.Background(), store.TrustPolicy{Domain: "clinic.example", Name: "directtrust-assurance",
		Direction: store.DirectionIn, Expr: "policy(1.3.6.1.4.1.41179.1.*)"}); err != nil {
		t.Fatal(err)
	}
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)

	msg := plainMessage(a.user, b.user, "policy-1@hospital.example", "refused by policy")
	if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user}, msg); refused != "" {
		t.Fatalf("submission refused: %s", refused)
	}
	waitFor(t, "the clinic's refusal in the hospital's queue", func() bool {
		for _, q := range a.queued(t) {
			if q.MessageID == "<policy-1@hospital.example>" && len(q.Recipients) == 1 {
				r := q.Recipients[0]
				return r.LastCode == 550 && strings.Contains(r.LastError, `trust policy "directtrust-assurance" of clinic.example`)
			}
		}
		return false
	})
	ds := dsns(t, a.waitMailbox(t, a.user, "INBOX", 1))
	if r := ds[0].Recipients; len(r) != 1 || !strings.Contains(r[0].Diagnostic, "directtrust-assurance") {
		t.Errorf("DSN %+v", r)
	}
	if got := b.mailbox(t, b.user, "INBOX"); len(got) != 0 {
		t.Error("filed despite the policy")
	}
}
