package main

import (
	"context"
	"fmt"

	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/policy"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("policy", command{
		summary: "add, list or remove the trust policy rules of local domains (certificate policy, key usage, key size...)",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "policy", args, map[string]func(*cliEnv, []string) int{
				"add":    policyAdd,
				"list":   policyList,
				"remove": policyRemove,
			})
		},
	})
}

// policyAdd is "hisp policy add DOMAIN NAME RULE [--direction in|out|both]"
// or "hisp policy add DOMAIN --preset directtrust [--direction ...]".
func policyAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "policy add", "DOMAIN NAME RULE | DOMAIN --preset NAME", false)
	dirFlag := c.fs.String("direction", "both", "`in` (signers we accept), out (recipients we send to) or both")
	preset := c.fs.String("preset", "", "add the rules of a preset (directtrust) instead of one rule")
	pos, code, ok := c.parse(args, 1, 3)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	dir, err := store.ParseDirection(*dirFlag)
	if err != nil {
		return c.usageError("%v", err)
	}
	var rules []policy.Rule
	switch {
	case *preset != "" && len(pos) == 1:
		if rules, err = policy.Preset(*preset); err != nil {
			return c.usageError("%v", err)
		}
	case *preset == "" && len(pos) == 3:
		rules = []policy.Rule{{Name: pos[1], Expr: pos[2]}}
	default:
		return c.usageError("want DOMAIN NAME RULE, or DOMAIN --preset NAME")
	}
	// Malformed rules are usage errors, before the store is opened.
	for _, r := range rules {
		if err := policy.ValidName(r.Name); err != nil {
			return c.usageError("%v", err)
		}
		if _, err := policy.Parse(r.Expr); err != nil {
			return c.usageError("rule %s: %v", r.Name, err)
		}
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		added, err := o.AddPolicies(ctx, domain, rules, dir)
		for _, p := range added {
			if p.Existing {
				c.warn("%s already has a rule %s: remove it first to change it (%s policy remove %s %s)", domain, p.Policy.Name, env.progName(), domain, p.Policy.Name)
				continue
			}
			fmt.Fprintf(env.stdout, "added rule %s to %s: %s\n", p.Policy.Name, domain, p.Policy.Meaning)
		}
		if err != nil {
			return c.opFail(err)
		}
		return 0
	})
}

// policyList is "hisp policy list [DOMAIN] [--json]": each rule, and what it
// asks in plain words.
func policyList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "policy list", "[DOMAIN]", true)
	domain, code, ok := parseOptionalDomain(c, args)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Policies(ctx, domain)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, p := range out {
			rows = append(rows, []string{p.Domain, p.Name, p.Direction, p.Meaning, p.Rule})
		}
		return c.list(out, []string{"DOMAIN", "NAME", "DIRECTION", "MEANING", "RULE"}, rows)
	})
}

// policyRemove is "hisp policy remove DOMAIN NAME ...".
func policyRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "policy remove", "DOMAIN NAME ...", false)
	pos, code, ok := c.parse(args, 2, -1)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if _, err := o.RequireDomain(ctx, domain); err != nil {
			return c.opFail(err)
		}
		failed := false
		for _, name := range pos[1:] {
			p, err := o.RemovePolicy(ctx, domain, name)
			if err != nil {
				fmt.Fprintf(env.stderr, "hisp: %v\n", err)
				failed = true
				continue
			}
			fmt.Fprintf(env.stdout, "removed rule %s of %s\n", p.Name, domain)
		}
		if failed {
			return 1
		}
		return 0
	})
}

// outboundRules reads the rules a local domain applies to recipients, as
// the gateway's agent does (an unreadable one refuses: policy.RuleSet.Check);
// none without a domain.
func outboundRules(ctx context.Context, st *store.Store, domain string) (policy.RuleSet, error) {
	if domain == "" {
		return nil, nil
	}
	list, err := st.TrustPolicies(ctx, domain)
	if err != nil {
		return nil, err
	}
	var out policy.RuleSet
	for _, p := range list {
		if p.Direction.Includes(store.DirectionOut) {
			out = append(out, policy.ParseRule(p.Name, p.Expr))
		}
	}
	return out, nil
}
