package main

import (
	"context"
	"fmt"
	"strings"
	"time"

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

type queueRecipientJSON struct {
	Address     string     `json:"address"`
	Local       bool       `json:"local"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt"`
	LastAttempt *time.Time `json:"last_attempt"`
	LastError   string     `json:"last_error,omitempty"`
	RemoteMTA   string     `json:"remote_mta,omitempty"`
	Status      string     `json:"status,omitempty"`
}

type queueJSON struct {
	ID         int64                `json:"id"`
	MessageID  string               `json:"message_id"`
	MailFrom   string               `json:"mail_from"`
	User       string               `json:"user,omitempty"` // the submitting login; "" for hisp's own mail
	Origin     string               `json:"origin"`         // "submission ADDR", "submission ADDR relay NAME", "mdn ...", "deferred submission"
	Size       int64                `json:"size"`
	Created    time.Time            `json:"created"`
	Recipients []queueRecipientJSON `json:"recipients"`
}

// queueList is "hisp queue list [--all] [--json]".
func queueList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "queue list", "", true)
	all := c.fs.Bool("all", false, "include messages whose recipients are all final (delivered, sealed, bounced)")
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		msgs, err := st.QueueList(ctx, *all)
		if err != nil {
			return c.fail(err)
		}
		out := []queueJSON{}
		for _, m := range msgs {
			q := queueJSON{ID: m.ID, MessageID: m.MessageID, MailFrom: m.MailFrom, User: m.User, Origin: m.Origin, Size: m.Size,
				Created: m.Created.UTC(), Recipients: []queueRecipientJSON{}}
			for _, r := range m.Recipients {
				q.Recipients = append(q.Recipients, queueRecipientJSON{Address: r.Address, Local: r.Local, State: string(r.State),
					Attempts: r.Attempts, NextAttempt: optTime(r.NextAttempt), LastAttempt: optTime(r.LastAttempt),
					LastError: r.LastError, RemoteMTA: r.RemoteMTA, Status: r.Status})
			}
			out = append(out, q)
		}
		if c.json {
			if err := adminJSON(env.stdout, out); err != nil {
				return c.fail(err)
			}
			return 0
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
				rows = append(rows, []string{fmt.Sprint(m.ID), m.MessageID, m.MailFrom, r.Address, r.State,
					fmt.Sprint(r.Attempts), next, truncate(why, 60)})
			}
		}
		if err := adminTable(env.stdout, []string{"ID", "MESSAGE-ID", "FROM", "RECIPIENT", "STATE", "TRIES", "NEXT", "LAST"}, rows); err != nil {
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
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		n, err := st.QueueRetry(ctx, id, time.Now())
		if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "queue.retry", fmt.Sprint(id), fmt.Sprintf("%d recipient(s)", n))
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
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		m, err := st.QueueDrop(ctx, id)
		if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "queue.drop", fmt.Sprintf("%d %s", id, m.MessageID), "")
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
