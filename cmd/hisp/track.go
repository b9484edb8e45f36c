package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/track"
)

func init() {
	register("track", command{
		summary: "state of sent messages per recipient: queued, relayed, processed, dispatched, failed",
		run:     trackCmd,
	})
}

// trackCmd is "hisp track [MESSAGE-ID] [--json] [--sender ADDR] [--state
// STATE] [--since WHEN] [--limit N]": one message with each recipient's
// state and history, or the latest messages.
func trackCmd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "track", "[MESSAGE-ID]", true)
	sender := c.fs.String("sender", "", "only messages from `ADDRESS` (list)")
	state := c.fs.String("state", "", "only messages with a recipient in `STATE` (list)")
	since := c.fs.String("since", "", "only messages sent since `WHEN`: RFC 3339, or a duration back from now such as 24h (list)")
	limit := c.fs.Int("limit", 50, "at most `N` messages, newest first (list)")
	pos, code, ok := c.parse(args, 0, 1)
	if !ok {
		return code
	}
	ctx := context.Background()
	if len(pos) == 1 {
		st, err := c.openStore(ctx)
		if err != nil {
			return c.fail(err)
		}
		defer st.Close()
		o := ops.New(st, c.actor())
		o.Prog = env.progName()
		m, err := o.TrackedMessage(ctx, pos[0], ops.Scope{})
		if err != nil {
			return c.opFail(err)
		}
		if c.json {
			if err := adminJSON(env.stdout, track.View(m)); err != nil {
				return c.fail(err)
			}
			return 0
		}
		return trackShow(c, m)
	}
	f := store.TrackFilter{Sender: *sender, State: store.TrackState(strings.ToLower(*state)), Limit: *limit}
	if f.State == "delivered" {
		// design.md's name for the state issue 6 calls relayed: the next
		// hop (the recipient's HISP) took the message.
		f.State = store.TrackRelayed
	}
	if f.State != "" && !f.State.Valid() {
		return c.usageError("--state %q: want queued, relayed (or delivered), processed, dispatched or failed", *state)
	}
	if *limit < 1 {
		return c.usageError("--limit %d: want at least 1", *limit)
	}
	if *since != "" {
		t, err := parseSince(*since)
		if err != nil {
			return c.usageError("--since: %v", err)
		}
		f.Since = t
	}
	st, err := c.openStore(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer st.Close()
	ms, err := ops.New(st, c.actor()).TrackedMessages(ctx, f, ops.Scope{})
	if err != nil {
		return c.opFail(err)
	}
	if c.json {
		out := []track.MessageView{}
		for _, m := range ms {
			out = append(out, track.View(m))
		}
		if err := adminJSON(env.stdout, out); err != nil {
			return c.fail(err)
		}
		return 0
	}
	var rows [][]string
	for _, m := range ms {
		for _, r := range m.Recipients {
			rows = append(rows, []string{m.MessageID, m.Sender, instant(m.Sent), r.Address, string(r.State),
				outcomeText(r), truncate(r.Reason, 60)})
		}
	}
	if err := adminTable(env.stdout, []string{"MESSAGE-ID", "SENDER", "SENT", "RECIPIENT", "STATE", "OUTCOME", "REASON"}, rows); err != nil {
		return c.fail(err)
	}
	return 0
}

// trackShow prints one message: its recipients, then each one's history.
func trackShow(c *adminCmd, m store.TrackedMessage) int {
	w := c.env.stdout
	request := "processed only"
	if m.DispatchedRequested {
		request = "processed and dispatched (timely and reliable)"
	}
	fmt.Fprintf(w, "message %s\nsender  %s\nsent    %s\nasked   %s\n\n", m.MessageID, m.Sender, instant(m.Sent), request)
	var rows [][]string
	for _, r := range m.Recipients {
		rows = append(rows, []string{r.Address, string(r.State), outcomeText(r), instant(r.Deadline), truncate(r.Reason, 70)})
	}
	if err := adminTable(w, []string{"RECIPIENT", "STATE", "OUTCOME", "DEADLINE", "REASON"}, rows); err != nil {
		return c.fail(err)
	}
	for _, r := range m.Recipients {
		fmt.Fprintf(w, "\nhistory of %s:\n", r.Address)
		rows = rows[:0]
		for _, e := range r.Events {
			rows = append(rows, []string{instant(e.At), e.Kind, string(e.PreviousState) + " > " + string(e.State), e.Notice, truncate(e.Detail, 70)})
		}
		if err := adminTable(w, []string{"AT", "EVENT", "STATE", "NOTICE", "DETAIL"}, rows); err != nil {
			return c.fail(err)
		}
	}
	return 0
}

// outcomeText is what the sender was told: "success", "failure", or
// "pending" while nothing is final.
func outcomeText(r store.TrackedRecipient) string {
	if r.Outcome == store.OutcomeNone {
		return "pending"
	}
	return string(r.Outcome)
}

// parseSince parses an RFC 3339 time, Unix seconds, or a duration back
// from now.
func parseSince(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time, Unix seconds or a duration such as 24h", v)
}
