package store

import (
	"context"
	"fmt"
	"time"
)

// Event is one audit record: who did what to which subject, and the
// outcome with its reason.
type Event struct {
	ID      int64     // set by the store
	Time    time.Time // zero: now
	Actor   string    // "cli", an admin login, a remote HISP, "agent"...
	Action  string    // "domain.add", "message.inbound"...
	Subject string    // a domain, address, certificate id, Message-ID...
	Verdict string    // "ok", "refused", "failed"...
	Reason  string    // human-readable why
}

// Audit appends an event to the audit log. It does not move the Changed
// counter.
func (s *Store) Audit(ctx context.Context, e Event) error {
	return s.AuditBatch(ctx, []Event{e})
}

// AuditBatch writes several audit events in one transaction, in order.
func (s *Store) AuditBatch(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *txn) error {
		for _, e := range events {
			if e.Time.IsZero() {
				e.Time = time.Now()
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO audit (at, actor, action, subject, verdict, reason) VALUES (?, ?, ?, ?, ?, ?)`,
				millis(e.Time), e.Actor, e.Action, e.Subject, e.Verdict, e.Reason)
			if err != nil {
				return fmt.Errorf("audit %s %s: %w", e.Action, e.Subject, err)
			}
		}
		return nil
	})
}

// AuditEvents returns up to limit audit events (all when limit <= 0),
// newest first.
func (s *Store) AuditEvents(ctx context.Context, limit int) ([]Event, error) {
	q := `SELECT id, at, actor, action, subject, verdict, reason FROM audit ORDER BY id DESC`
	var args []any
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Subject, &e.Verdict, &e.Reason); err != nil {
			return nil, fmt.Errorf("list audit events: %w", err)
		}
		e.Time = fromMillis(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return out, nil
}
