package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/ops"
)

func init() {
	register("token", command{
		summary: "add, list or remove bearer tokens of the HTTP API (one per API client)",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "token", args, map[string]func(*cliEnv, []string) int{
				"add":    tokenAdd,
				"list":   tokenList,
				"remove": tokenRemove,
			})
		},
	})
}

// tokenAdd is "hisp token add NAME [--domain D ...] [--admin]": it prints
// the new token once, last and on its own line; the store keeps only its
// hash. With --domain, the token sees only the messages of those domains'
// senders (an EHR's token); with --admin it may use every operation of the
// API (domains, addresses, certificates, anchors, bundles, queue).
func tokenAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "token add", "NAME [--domain D ...] [--admin]", false)
	var domains multiFlag
	c.fs.Var(&domains, "domain", "limit the token to messages of senders in local `DOMAIN` (repeatable); none: every message")
	admin := c.fs.Bool("admin", false, "an admin token: every operation of the API, not only tracking")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	if *admin && len(domains) > 0 {
		return c.usageError("give --admin or --domain, not both: an admin token cannot be limited to domains")
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		t, token, err := o.AddToken(ctx, pos[0], *admin, domains)
		if err != nil {
			return c.opFail(err)
		}
		kind := "API token"
		if t.Admin {
			kind = "admin API token"
		}
		fmt.Fprintf(env.stderr, "%s for %s: shown once, only its hash is kept. Send it as \"Authorization: Bearer <token>\".\n", kind, t.Name)
		fmt.Fprintln(env.stdout, token)
		return 0
	})
}

// tokenList is "hisp token list [--json]": names, never tokens.
func tokenList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "token list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Tokens(ctx)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, t := range out {
			scope := "all"
			if len(t.Domains) > 0 {
				scope = strings.Join(t.Domains, ", ")
			}
			if t.Admin {
				scope = "all (admin)"
			}
			rows = append(rows, []string{t.Name, scope, instant(t.Created)})
		}
		return c.list(out, []string{"NAME", "DOMAINS", "CREATED"}, rows)
	})
}

// tokenRemove is "hisp token remove NAME": the token stops working at once.
func tokenRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "token remove", "NAME", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if err := o.RemoveToken(ctx, pos[0]); err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed API token %s\n", pos[0])
		return 0
	})
}
