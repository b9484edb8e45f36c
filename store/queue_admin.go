package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Queries and commands of the outbound queue for the admin (hisp queue,
// the admin page).

// pendingMessages selects the queued messages with work left (a recipient
// in no final state).
const pendingMessages = `FROM queue_messages m WHERE EXISTS (SELECT 1 FROM queue_recipients r
	WHERE r.queue_id = m.id AND r.state NOT IN ` + finalStates + `)`

// QueueList returns the queued messages (without Data) with all their
// recipients, oldest first: those with work left, or every message kept
// when all is set. One query.
func (s *Store) QueueList(ctx context.Context, all bool) ([]QueuedMessage, error) {
	heads := `SELECT m.id FROM queue_messages m`
	if !all {
		heads = `SELECT m.id ` + pendingMessages
	}
	var out []QueuedMessage
	err := s.read(ctx, func(q queryer) error {
		var err error
		out, _, err = listQueued(ctx, q, heads, -1)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	return out, nil
}

// QueueHead returns the oldest limit messages with work left (as
// QueueList does) and how many such messages there are in all, from one
// query: for a page that shows the head of a long queue.
func (s *Store) QueueHead(ctx context.Context, limit int) ([]QueuedMessage, int, error) {
	var out []QueuedMessage
	var total int
	err := s.read(ctx, func(q queryer) error {
		if limit <= 0 { // no rows to carry the count
			return q.QueryRowContext(ctx, `SELECT COUNT(*) `+pendingMessages).Scan(&total)
		}
		var err error
		out, total, err = listQueued(ctx, q, `SELECT m.id `+pendingMessages, limit)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("queue head: %w", err)
	}
	return out, total, nil
}

// listQueued returns the messages heads selects (a query of m.id over
// queue_messages m), oldest first and at most limit of them,
// each with all its recipients, and how many heads selects in all: one
// query, its rows a message's columns and one recipient's.
func listQueued(ctx context.Context, q queryer, heads string, limit int) ([]QueuedMessage, int, error) {
	if limit < 0 {
		limit = math.MaxInt64 // all (PostgreSQL has no LIMIT -1)
	}
	query := `WITH heads AS (` + heads + `), page AS (SELECT id FROM heads ORDER BY id LIMIT ?)
		SELECT (SELECT COUNT(*) FROM heads), ` + prefixed("m.", messageColumns) + `, ` + prefixed("r.", recipientColumns) + `
		FROM page JOIN queue_messages m ON m.id = page.id JOIN queue_recipients r ON r.queue_id = m.id
		ORDER BY m.id, r.id`
	rows, err := q.QueryContext(ctx, query, limit)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []QueuedMessage
	total := 0
	for rows.Next() {
		var m messageFields
		var r recipientFields
		dest := append(append([]any{&total}, m.dest()...), r.dest()...)
		if err := rows.Scan(dest...); err != nil {
			return nil, 0, err
		}
		if len(out) == 0 || out[len(out)-1].ID != m.m.ID {
			out = append(out, m.value())
		}
		cur := &out[len(out)-1]
		cur.Recipients = append(cur.Recipients, r.value())
	}
	return out, total, rows.Err()
}

// prefixed puts prefix before each of a list of columns.
func prefixed(prefix, columns string) string {
	var out []string
	for _, c := range strings.Split(columns, ",") {
		out = append(out, prefix+strings.TrimSpace(c))
	}
	return strings.Join(out, ", ")
}

// QueueMessage returns one queued message with its data and all its
// recipients; an error wrapping ErrNotFound if it is not there.
func (s *Store) QueueMessage(ctx context.Context, id int64) (QueuedMessage, error) {
	return getQueued(ctx, s.db, id, true, "")
}

// QueueRetry makes the waiting (queued or deferred) recipients of a message due at now
// and returns how many. A message that does not exist gives an error
// wrapping ErrNotFound.
func (s *Store) QueueRetry(ctx context.Context, id int64, now time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *txn) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM queue_messages WHERE id = ?`, id); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("queued message %d: %w", id, ErrNotFound)
		}
		res, err := tx.ExecContext(ctx, `UPDATE queue_recipients SET next_attempt = ?, updated = ?
			WHERE queue_id = ? AND state IN ('queued', 'deferred')`, millis(now), millis(now), id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("retry queued message: %w", err)
	}
	return n, nil
}

// QueueDrop removes a message and its recipients from the queue, whatever
// their state, without any DSN, and returns what it was. A message that
// does not exist gives an error wrapping ErrNotFound.
func (s *Store) QueueDrop(ctx context.Context, id int64) (QueuedMessage, error) {
	var m QueuedMessage
	err := s.tx(ctx, func(tx *txn) error {
		var err error
		m, err = getQueued(ctx, tx, id, false, "")
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM queue_messages WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return QueuedMessage{}, fmt.Errorf("drop queued message: %w", err)
	}
	return m, nil
}
