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

// loadPolicies reads the rules of every domain into s, and makes the keys
// of its anchor sets name them too, so that verdicts cached under a key
// (discovery results) change when the rules do.
func (a *Agent) loadPolicies(ctx context.Context, s *snapshot) error {
	list, err := a.st.TrustPolicies(ctx, "")
	if err != nil {
		return err
	}
	s.rules = map[string]map[store.Direction]policy.RuleSet{}
	sums := map[string]map[store.Direction][]byte{}
	for _, p := range list {
		r := policy.ParseRule(p.Name, p.Expr)
		if r.Err != nil {
			a.log.Warn("agent: unreadable trust policy refuses every certificate", "domain", p.Domain, "policy", p.Name, "err", r.Err)
		}
		for _, dir := range []store.Direction{store.DirectionIn, store.DirectionOut} {
			if !p.Direction.Includes(dir) {
				continue
			}
			if s.rules[p.Domain] == nil {
				s.rules[p.Domain], sums[p.Domain] = map[store.Direction]policy.RuleSet{}, map[store.Direction][]byte{}
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
	return s.rules[domain][dir].Check(cert, domain)
}
