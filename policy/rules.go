package policy

import (
	"crypto/x509"
	"fmt"
)

// ParsedRule is a domain's named rule (Rule) as checks use it. A rule whose expression
// does not parse (Err) refuses every certificate: trust fails closed, and
// the refusal says which rule to fix.
type ParsedRule struct {
	Name string
	Expr Expr  // nil when Err is set
	Err  error // why the stored expression does not parse
}

// ParseRule parses expr as the rule name; a parse error is kept in the
// rule (ParsedRule.Err), not returned, so that the rule still refuses.
func ParseRule(name, expr string) ParsedRule {
	e, err := Parse(expr)
	return ParsedRule{Name: name, Expr: e, Err: err}
}

// RuleSet is the rules of one domain and direction: a certificate must meet
// them all. The gateway's agent and the admin commands that say what the
// gateway would decide (hisp discover) check through Check, so both give
// the same verdict in the same words.
type RuleSet []ParsedRule

// Check returns "" when cert meets every rule, else why not, naming the
// rule and domain (the first rule it fails, in order).
func (rs RuleSet) Check(cert *x509.Certificate, domain string) string {
	for _, r := range rs {
		if r.Err != nil || r.Expr == nil {
			return fmt.Sprintf("trust policy %q of %s is unreadable (%v): fix or remove it with hisp policy", r.Name, domain, r.Err)
		}
		if ok, why := r.Expr.Eval(cert); !ok {
			return fmt.Sprintf("refused by trust policy %q of %s: %s", r.Name, domain, why)
		}
	}
	return ""
}
