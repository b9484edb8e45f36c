package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hisp-project/hisp/store"
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

// tokenAdd is "hisp token add NAME [--domain D ...]": it prints the new
// token once; the store keeps only its hash. With --domain, the token sees
// only the messages of those domains' senders (an EHR's token).
func tokenAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "token add", "NAME [--domain D ...]", false)
	var domains multiFlag
	c.fs.Var(&domains, "domain", "limit the token to messages of senders in local `DOMAIN` (repeatable); none: every message")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		t, token, err := st.CreateAPIToken(ctx, pos[0], domains...)
		if errors.Is(err, store.ErrExists) {
			return c.fail(fmt.Errorf("an API token named %q exists (%s token remove it first)", pos[0], env.progName()))
		}
		if errors.Is(err, store.ErrNotFound) {
			return c.fail(fmt.Errorf("%w (%s domain add it first)", err, env.progName()))
		}
		if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "token.add", t.Name, "")
		fmt.Fprintln(env.stdout, token)
		fmt.Fprintf(env.stderr, "API token for %s: shown once, only its hash is kept. Send it as \"Authorization: Bearer <token>\".\n", t.Name)
		return 0
	})
}

type tokenJSON struct {
	Name    string    `json:"name"`
	Domains []string  `json:"domains"` // [] : every domain
	Created time.Time `json:"created"`
}

// tokenList is "hisp token list [--json]": names, never tokens.
func tokenList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "token list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		ts, err := st.APITokens(ctx)
		if err != nil {
			return c.fail(err)
		}
		out := []tokenJSON{}
		var rows [][]string
		for _, t := range ts {
			scope := "all"
			if t.Domains != nil {
				scope = strings.Join(t.Domains, ", ")
			}
			out = append(out, tokenJSON{Name: t.Name, Domains: append([]string{}, t.Domains...), Created: t.Created.UTC()})
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
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		if err := st.RemoveAPIToken(ctx, pos[0]); err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "token.remove", pos[0], "")
		fmt.Fprintf(env.stdout, "removed API token %s\n", pos[0])
		return 0
	})
}
