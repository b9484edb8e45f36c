package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("queue", command{
		summary: "list the outbound queue, retry a message now, or drop it",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "queue", args, map[string]func(*cliEnv, []string) int{
				"list":  queueList,
				"retry": queueRetry,
				"drop":  queueDrop,
			})
		},
	})
}

// queueList is "hisp queue list [--all] [--json]".
func queueList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "queue list", "", true)
	all := c.fs.Bool("all", false, "include messages whose recipients are all final (delivered, sealed, bounced)")
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Queue(ctx, *all)
		if err != nil {
			return c.opFail(err)
		}
		if c.json {
			if err := adminJSON(env.stdout, out); err != nil {
				return c.fail(err)
			}
			return 0
		}
		// Several nodes share a PostgreSQL store: say which one holds
		// each recipient being delivered.
		nodes := o.Store().Location().Postgres()
		header := []string{"ID", "MESSAGE-ID", "FROM", "RECIPIENT", "STATE", "TRIES", "NEXT", "LAST"}
		if nodes {
			header = append(header, "NODE")
		}
		var rows [][]string
		for _, m := range out {
			for _, r := range m.Recipients {
				next := "-"
				if r.NextAttempt != nil && !store.RecipientState(r.State).Final() {
					next = instant(*r.NextAttempt)
				}
				why := r.LastError
				if why == "" {
					why = r.Status
				}
				row := []string{fmt.Sprint(m.ID), m.MessageID, m.MailFrom, r.Address, r.State,
					fmt.Sprint(r.Attempts), next, truncate(why, 60)}
				if nodes {
					row = append(row, cmp.Or(r.ClaimedBy, "-"))
				}
				rows = append(rows, row)
			}
		}
		if err := adminTable(env.stdout, header, rows); err != nil {
			return c.fail(err)
		}
		return 0
	})
}

// queueRetry is "hisp queue retry ID": every recipient not yet final is
// due now.
func queueRetry(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "queue retry", "ID", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	id, code, ok := parseID(c, "queue", pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		n, err := o.RetryQueue(ctx, id)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "queue message %d: %d recipient(s) due now\n", id, n)
		return 0
	})
}

// queueDrop is "hisp queue drop ID": the message is removed without a DSN.
func queueDrop(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "queue drop", "ID", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	id, code, ok := parseID(c, "queue", pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		m, err := o.DropQueue(ctx, id)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "dropped queue message %d (%s)\n", id, m.MessageID)
		return 0
	})
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
