package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"

	"github.com/hisp-project/hisp/policy"
	"github.com/hisp-project/hisp/store"
)

// Trust policy rules (package policy): a local domain's signers (in) and
// recipients (out) must meet every rule of the domain for that direction,
// after path validation. A certificate that fails one is refused with the
// rule's name.

// rule is a parsed trust policy rule.
type rule struct {
	name string
	expr policy.Expr // nil: unreadable, refuses everything (fail closed)
	err  error
}

// loadPolicies reads the rules of every domain into s, and makes the keys
// of its anchor sets name them too, so that verdicts cached under a key
// (discovery results) change when the rules do.
func (a *Agent) loadPolicies(ctx context.Context, s *snapshot) error {
	list, err := a.st.TrustPolicies(ctx, "")
	if err != nil {
		return err
	}
	s.rules = map[string]map[store.Direction][]rule{}
	sums := map[string]map[store.Direction][]byte{}
	for _, p := range list {
		r := rule{name: p.Name}
		if r.expr, r.err = policy.Parse(p.Expr); r.err != nil {
			a.log.Warn("agent: unreadable trust policy refuses every certificate", "domain", p.Domain, "policy", p.Name, "err", r.err)
		}
		for _, dir := range []store.Direction{store.DirectionIn, store.DirectionOut} {
			if !p.Direction.Includes(dir) {
				continue
			}
			if s.rules[p.Domain] == nil {
				s.rules[p.Domain], sums[p.Domain] = map[store.Direction][]rule{}, map[store.Direction][]byte{}
			}
			s.rules[p.Domain][dir] = append(s.rules[p.Domain][dir], r)
			sums[p.Domain][dir] = fmt.Appendf(sums[p.Domain][dir], "%s\x00%s\x00", p.Name, p.Expr)
		}
	}
	for d, byDir := range sums {
		for dir, b := range byDir {
			sum := sha256.Sum256(b)
			sets := s.in
			if dir == store.DirectionOut {
				sets = s.out
			}
			if as, ok := sets[d]; ok {
				as.key += "-" + hex.EncodeToString(sum[:6])
				sets[d] = as
			}
		}
	}
	return nil
}

// checkPolicies returns "" when cert meets every rule of domain for dir,
// else why not, naming the rule.
func (s *snapshot) checkPolicies(domain string, dir store.Direction, cert *x509.Certificate) string {
	for _, r := range s.rules[domain][dir] {
		if r.expr == nil {
			return fmt.Sprintf("trust policy %q of %s is unreadable (%v): fix or remove it with hisp policy", r.name, domain, r.err)
		}
		if ok, why := r.expr.Eval(cert); !ok {
			return fmt.Sprintf("refused by trust policy %q of %s: %s", r.name, domain, why)
		}
	}
	return ""
}
