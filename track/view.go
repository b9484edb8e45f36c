package track

import (
	"time"

	"github.com/hisp-project/hisp/store"
)

// MessageView is the JSON form of a tracked message that the HTTP API and
// `hisp track --json` print. Fields may be added; clients ignore those they
// do not know.
type MessageView struct {
	MessageID           string          `json:"message_id"`
	Sender              string          `json:"sender"`
	Sent                time.Time       `json:"sent"`
	Updated             time.Time       `json:"updated"`
	DispatchedRequested bool            `json:"dispatched_requested"`
	Recipients          []RecipientView `json:"recipients"`
}

// RecipientView is one recipient's state, outcome, deadlines and history.
type RecipientView struct {
	Address string `json:"address"`
	State   string `json:"state"`
	// Outcome is what the sender was told as the final word: "" (nothing
	// yet), "success" or "failure".
	Outcome            string      `json:"outcome"`
	Reason             string      `json:"reason,omitempty"`
	Relayed            *time.Time  `json:"relayed"`
	ProcessedDeadline  *time.Time  `json:"processed_deadline"`
	DispatchedDeadline *time.Time  `json:"dispatched_deadline"`
	Deadline           *time.Time  `json:"deadline"`
	Updated            time.Time   `json:"updated"`
	Events             []EventView `json:"events,omitempty"`
}

// EventView is one event of a recipient's history.
type EventView struct {
	ID            int64     `json:"id"`
	At            time.Time `json:"at"`
	Kind          string    `json:"kind"`
	PreviousState string    `json:"previous_state"`
	State         string    `json:"state"`
	Outcome       string    `json:"outcome"`
	Detail        string    `json:"detail,omitempty"`
	// Notice is what became of the notification: filed, withheld,
	// suppressed, dsn (hisp's own failure DSN), or "".
	Notice string `json:"notice,omitempty"`
}

// View returns the JSON form of a tracked message.
func View(m store.TrackedMessage) MessageView {
	v := MessageView{MessageID: m.MessageID, Sender: m.Sender, Sent: m.Sent.UTC(), Updated: m.Updated.UTC(),
		DispatchedRequested: m.DispatchedRequested, Recipients: []RecipientView{}}
	for _, r := range m.Recipients {
		rv := RecipientView{Address: r.Address, State: string(r.State), Outcome: string(r.Outcome), Reason: r.Reason,
			Relayed: optTime(r.Relayed), ProcessedDeadline: optTime(r.ProcessedDeadline),
			DispatchedDeadline: optTime(r.DispatchedDeadline), Deadline: optTime(r.Deadline), Updated: r.Updated.UTC()}
		for _, e := range r.Events {
			rv.Events = append(rv.Events, EventView{ID: e.ID, At: e.At.UTC(), Kind: e.Kind, PreviousState: string(e.PreviousState),
				State: string(e.State), Outcome: string(e.Outcome), Detail: e.Detail, Notice: e.Notice})
		}
		v.Recipients = append(v.Recipients, rv)
	}
	return v
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
