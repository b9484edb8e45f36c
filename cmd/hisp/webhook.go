package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hisp-project/hisp/ops"
)

func init() {
	register("webhook", command{
		summary: "add, list or remove webhooks: signed JSON on every state change of a sender's messages",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "webhook", args, map[string]func(*cliEnv, []string) int{
				"add":    webhookAdd,
				"list":   webhookList,
				"remove": webhookRemove,
			})
		},
	})
}

// webhookAdd is "hisp webhook add DOMAIN|ADDRESS URL --secret-file FILE".
func webhookAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "webhook add", "DOMAIN|ADDRESS URL --secret-file FILE", false)
	secretFile := c.fs.String("secret-file", "", "`FILE` holding the HMAC-SHA256 key (16 bytes or more) that signs each body")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	if *secretFile == "" {
		return c.usageError("need --secret-file FILE (the key the receiver verifies X-Hisp-Signature with)")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return c.fail(err)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		w, err := o.AddWebhook(ctx, pos[0], pos[1], secret)
		if errors.Is(err, ops.ErrRefused) {
			return c.fail(fmt.Errorf("%s: %w", *secretFile, err))
		} else if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "added webhook %d: messages of %s to %s\n", w.ID, w.Target, w.URL)
		return 0
	})
}

// webhookList is "hisp webhook list [--json]", with the deliveries each
// one has waiting; never the secrets.
func webhookList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "webhook list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Webhooks(ctx)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, w := range out {
			rows = append(rows, []string{fmt.Sprint(w.ID), w.Target, w.URL, fmt.Sprint(w.Pending), day(w.Created)})
		}
		return c.list(out, []string{"ID", "FOR", "URL", "PENDING", "CREATED"}, rows)
	})
}

// webhookRemove is "hisp webhook remove ID": its pending deliveries go
// with it.
func webhookRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "webhook remove", "ID", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	id, code, ok := parseID(c, "webhook", pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if err := o.RemoveWebhook(ctx, id); err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed webhook %d\n", id)
		return 0
	})
}
