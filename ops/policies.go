package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hisp-project/hisp/policy"
	"github.com/hisp-project/hisp/store"
)

// PolicyInfo is a trust policy rule as listed, with its meaning in words.
type PolicyInfo struct {
	Domain    string    `json:"domain"`
	Name      string    `json:"name"`
	Direction string    `json:"direction"`
	Rule      string    `json:"rule"`
	Meaning   string    `json:"meaning"`
	Created   time.Time `json:"created"`
}

// DirectionWords says what a direction applies to.
func DirectionWords(d store.Direction) string {
	switch d {
	case store.DirectionIn:
		return "signers it accepts"
	case store.DirectionOut:
		return "recipients it sends to"
	}
	return "signers it accepts and recipients it sends to"
}

func policyInfo(p store.TrustPolicy) PolicyInfo {
	meaning := "(unreadable rule)"
	if e, err := policy.Parse(p.Expr); err == nil {
		meaning = fmt.Sprintf("for the %s, the certificate %s", DirectionWords(p.Direction), e.Words())
	}
	return PolicyInfo{Domain: p.Domain, Name: p.Name, Direction: string(p.Direction), Rule: p.Expr, Meaning: meaning, Created: p.Created}
}

// PolicyAdded is one rule of AddPolicies: added, or Existing (kept as it
// was).
type PolicyAdded struct {
	Policy   PolicyInfo
	Existing bool
}

// AddPolicies adds trust policy rules to a local domain in a direction.
// Every rule is checked before any is added.
func (o *Ops) AddPolicies(ctx context.Context, domainArg string, rules []policy.Rule, dir store.Direction) ([]PolicyAdded, error) {
	type parsed struct {
		rule policy.Rule
		expr policy.Expr
	}
	var ps []parsed
	for _, r := range rules {
		if err := policy.ValidName(r.Name); err != nil {
			return nil, invalidf("%v", err)
		}
		e, err := policy.Parse(r.Expr)
		if err != nil {
			return nil, invalidf("rule %s: %v", r.Name, err)
		}
		ps = append(ps, parsed{r, e})
	}
	if dir == "" {
		dir = store.DirectionBoth
	}
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return nil, err
	}
	var out []PolicyAdded
	for _, p := range ps {
		tp, err := o.st.AddTrustPolicy(ctx, store.TrustPolicy{Domain: domain, Name: p.rule.Name, Direction: dir, Expr: p.expr.String()})
		if errors.Is(err, store.ErrExists) {
			out = append(out, PolicyAdded{Policy: PolicyInfo{Domain: domain, Name: p.rule.Name}, Existing: true})
			continue
		} else if err != nil {
			return out, err
		}
		o.audit(ctx, "policy.add", domain, fmt.Sprintf("rule %s (%s): %s", tp.Name, tp.Direction, tp.Expr))
		out = append(out, PolicyAdded{Policy: policyInfo(tp)})
	}
	return out, nil
}

// Policies lists the trust policy rules of a local domain, or of all ("").
func (o *Ops) Policies(ctx context.Context, domainArg string) ([]PolicyInfo, error) {
	domain := ""
	if domainArg != "" {
		var err error
		if domain, err = o.domain(ctx, domainArg); err != nil {
			return nil, err
		}
	}
	list, err := o.st.TrustPolicies(ctx, domain)
	if err != nil {
		return nil, err
	}
	out := []PolicyInfo{}
	for _, p := range list {
		out = append(out, policyInfo(p))
	}
	return out, nil
}

// RemovePolicy removes a trust policy rule of a local domain.
func (o *Ops) RemovePolicy(ctx context.Context, domainArg, name string) (PolicyInfo, error) {
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return PolicyInfo{}, err
	}
	p, err := o.st.RemoveTrustPolicy(ctx, domain, name)
	if err != nil {
		return PolicyInfo{}, err
	}
	o.audit(ctx, "policy.remove", domain, fmt.Sprintf("rule %s: %s", p.Name, p.Expr))
	return policyInfo(p), nil
}
