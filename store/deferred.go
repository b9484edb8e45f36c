package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Deferred is a submission waiting for some of its recipients: their
// certificates could not be looked up when it was submitted. It holds the
// plain message, to be sealed again for them.
type Deferred struct {
	ID          int64
	MessageID   string
	MailFrom    string
	User        string
	Recipients  []string
	Data        []byte
	Created     time.Time
	Attempts    int
	NextAttempt time.Time
	LastError   string
}

// AddDeferred records a deferred submission, durably when it returns.
func (s *Store) AddDeferred(ctx context.Context, d Deferred) (int64, error) {
	if len(d.Recipients) == 0 || len(d.Data) == 0 {
		return 0, fmt.Errorf("add deferred submission: no recipients or no message")
	}
	if d.Created.IsZero() {
		d.Created = time.Now()
	}
	var id int64
	err := s.tx(ctx, func(tx *txn) error {
		return tx.QueryRowContext(ctx, `INSERT INTO deferred_submissions
			(message_id, mail_from, auth_user, recipients, data, created, attempts, next_attempt, last_error)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			d.MessageID, d.MailFrom, d.User, strings.Join(d.Recipients, "\n"), d.Data, millis(d.Created),
			d.Attempts, millis(d.NextAttempt), d.LastError).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("add deferred submission %s: %w", d.MessageID, err)
	}
	return id, nil
}

// DueDeferred returns up to limit deferred submissions due at now.
func (s *Store) DueDeferred(ctx context.Context, now time.Time, limit int) ([]Deferred, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, message_id, mail_from, auth_user, recipients, data, created,
		attempts, next_attempt, last_error FROM deferred_submissions WHERE next_attempt <= ? ORDER BY next_attempt, id LIMIT ?`,
		millis(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due deferred submissions: %w", err)
	}
	defer rows.Close()
	var out []Deferred
	for rows.Next() {
		var d Deferred
		var rcpts string
		var created, next int64
		if err := rows.Scan(&d.ID, &d.MessageID, &d.MailFrom, &d.User, &rcpts, &d.Data, &created, &d.Attempts, &next, &d.LastError); err != nil {
			return nil, fmt.Errorf("due deferred submissions: %w", err)
		}
		d.Recipients = strings.Split(rcpts, "\n")
		d.Created, d.NextAttempt = fromMillis(created), fromMillis(next)
		out = append(out, d)
	}
	return out, rows.Err()
}

// RetryDeferred records a failed attempt: the recipients still deferred,
// the next attempt and why.
func (s *Store) RetryDeferred(ctx context.Context, id int64, recipients []string, next time.Time, reason string) error {
	return s.tx(ctx, func(tx *txn) error {
		_, err := tx.ExecContext(ctx, `UPDATE deferred_submissions SET recipients = ?, attempts = attempts + 1,
			next_attempt = ?, last_error = ? WHERE id = ?`, strings.Join(recipients, "\n"), millis(next), reason, id)
		if err != nil {
			return fmt.Errorf("retry deferred submission %d: %w", id, err)
		}
		return nil
	})
}

// RemoveDeferred deletes a deferred submission whose recipients are all
// settled (queued or failed with a DSN).
func (s *Store) RemoveDeferred(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM deferred_submissions WHERE id = ?`, id); err != nil {
			return fmt.Errorf("remove deferred submission %d: %w", id, err)
		}
		return nil
	})
}
