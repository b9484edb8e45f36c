package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The deliverer's side of the outbound queue: claiming due recipients,
// recording outcomes, recovery after a crash, the notices due, purging.
// ClaimDue claims the recipients due for an attempt at now, of at most limit
// messages (oldest due first), for delivery: in one transaction it moves
// them to delivering (a deferred recipient of a plain message to sealing),
// records this node's claim on them until now plus its lease (SetNode),
// counts the attempt, sets the last attempt to now and records the next
// attempt by the backoff, so that the retry time is on record before
// anything is dialed. It returns the messages (without Data, see
// QueueMessageData) with the claimed recipients only.
//
// Several nodes may claim from one queue at once: on PostgreSQL the due
// rows are selected FOR UPDATE SKIP LOCKED, so each node passes over the
// rows another is claiming, and a claimed row is no longer due; on SQLite
// the transaction holds the database's write lock. A recipient is thus
// claimed by one node at a time.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, limit int, b Backoff) ([]QueuedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	node, lease := s.Node()
	nowMs := millis(now)
	var out []QueuedMessage
	err := s.tx(ctx, func(tx *txn) error {
		out = nil
		// Recipient rows, oldest due first; a message's due recipients
		// come along up to claimRowsPerMessage each on average.
		rows, err := tx.QueryContext(ctx, `SELECT id, queue_id FROM queue_recipients
			WHERE state IN ('queued', 'deferred') AND next_attempt <= ?
			ORDER BY next_attempt, queue_id, id LIMIT ?`+s.skipLocked(), nowMs, limit*claimRowsPerMessage)
		if err != nil {
			return err
		}
		var order []int64
		byMessage := map[int64][]any{}
		for rows.Next() {
			var id, qid int64
			if err := rows.Scan(&id, &qid); err != nil {
				rows.Close()
				return err
			}
			if _, ok := byMessage[qid]; !ok {
				if len(order) == limit {
					continue
				}
				order = append(order, qid)
			}
			byMessage[qid] = append(byMessage[qid], id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, qid := range order {
			ids := byMessage[qid]
			m, err := getQueued(ctx, tx, qid, false, `id IN (`+placeholders(len(ids))+`)`, ids...)
			if err != nil {
				return err
			}
			for i := range m.Recipients {
				r := &m.Recipients[i]
				if r.State == StateDeferred {
					r.claim(StateSealing, now, b)
				} else {
					r.claim(StateDelivering, now, b)
				}
				_, err := tx.ExecContext(ctx, `UPDATE queue_recipients
					SET state = ?, attempts = ?, last_attempt = ?, next_attempt = ?, updated = ?,
					claimed_by = ?, claimed_until = ?
					WHERE id = ?`, string(r.State), r.Attempts, nowMs, millis(r.NextAttempt), nowMs,
					node, millis(now.Add(lease)), r.ID)
				if err != nil {
					return err
				}
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim due recipients: %w", err)
	}
	return out, nil
}

// claim moves a recipient to a claimed state (delivering, sealing) for an
// attempt at now: the attempt counted, the last attempt now, the next one
// by the backoff on record before anything is dialed.
func (r *QueuedRecipient) claim(state RecipientState, now time.Time, b Backoff) {
	r.State = state
	r.Attempts++
	r.LastAttempt = fromMillis(millis(now))
	r.NextAttempt = fromMillis(millis(now.Add(b.Delay(r.Attempts))))
	r.Updated = r.LastAttempt
}

// claimRowsPerMessage is how many due recipient rows ClaimDue reads per
// message it may claim: messages have few recipients, and one with more
// has the rest claimed by the next call.
const claimRowsPerMessage = 16

// placeholders returns n "?" separated by commas.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}

// RenewClaims extends this node's claims (recipients it delivers or seals)
// until now plus its lease; the deliverer calls it at least every third of
// the lease while it works, so that no other node takes over an attempt
// that is merely slow.
func (s *Store) RenewClaims(ctx context.Context, now time.Time) (int64, error) {
	node, lease := s.Node()
	return s.execAffected(ctx, "renew claims", `UPDATE queue_recipients SET claimed_until = ?
		WHERE state IN ('delivering', 'sealing') AND claimed_by = ?`, millis(now.Add(lease)), node)
}

// QueueMessageData returns the bytes of a queued message.
func (s *Store) QueueMessageData(ctx context.Context, id int64) ([]byte, error) {
	var data []byte
	err := s.db.QueryRowContext(ctx, `SELECT data FROM queue_messages WHERE id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("queued message %d: %w", id, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read queued message %d: %w", id, err)
	}
	return data, nil
}

// statusLine formats a reply as one line.
func statusLine(code int, enhanced, text string) string {
	var parts []string
	if code > 0 {
		parts = append(parts, fmt.Sprint(code))
	}
	if enhanced != "" {
		parts = append(parts, enhanced)
	}
	if t := strings.Join(strings.Fields(text), " "); t != "" {
		parts = append(parts, t)
	}
	return strings.Join(parts, " ")
}

// UpdateRecipients records the outcomes of delivery attempts at now, in one
// transaction. An update applies only from the state it follows: queued,
// delivered and failed from delivering (failed also from queued), bounced
// from failed or sealing, deferred and sealed from sealing; others (a
// message dropped meanwhile, say) are skipped. The
// data of a message whose recipients are all final is emptied.
func (s *Store) UpdateRecipients(ctx context.Context, now time.Time, updates []RecipientUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	nowMs := millis(now)
	// An outcome counts only while this node's claim stands: a node whose
	// lease ran out (another node took the recipient over) records
	// nothing.
	node, _ := s.Node()
	err := s.tx(ctx, func(tx *txn) error {
		touched := map[int64]bool{}
		for _, u := range updates {
			text := strings.Join(strings.Fields(u.Text), " ")
			status := statusLine(u.Code, u.Enhanced, text)
			var res sql.Result
			var err error
			// A retry or a success follows the claim: delivering, or
			// sealing for a recipient of a plain message.
			claimed := StateDelivering
			if u.State == StateDeferred || u.State == StateSealed {
				claimed = StateSealing
			}
			switch u.State {
			case StateQueued, StateDeferred:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = ?,
					next_attempt = CASE WHEN CAST(? AS BIGINT) > 0 THEN CAST(? AS BIGINT) ELSE next_attempt END,
					last_code = ?, last_enhanced = ?, last_error = ?, remote_mta = ?, updated = ?
					WHERE id = ? AND state = ? AND claimed_by = ?`,
					string(u.State), millis(u.NextAttempt), millis(u.NextAttempt), u.Code, u.Enhanced, text, u.RemoteMTA, nowMs, u.ID, string(claimed), node)
			case StateDelivered, StateSealed:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = ?,
					last_code = ?, last_enhanced = ?, remote_mta = ?, status = ?, updated = ?
					WHERE id = ? AND state = ? AND claimed_by = ?`,
					string(u.State), u.Code, u.Enhanced, u.RemoteMTA, status, nowMs, u.ID, string(claimed), node)
			case StateFailed:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = 'failed',
					last_code = ?, last_enhanced = ?, last_error = ?, remote_mta = ?, status = ?, updated = ?
					WHERE id = ? AND (state = 'queued' OR state = 'delivering' AND claimed_by = ?)`,
					u.Code, u.Enhanced, text, u.RemoteMTA, status, nowMs, u.ID, node)
			case StateBounced:
				res, err = tx.ExecContext(ctx, `UPDATE queue_recipients SET state = 'bounced',
					last_code = CASE WHEN state = 'sealing' THEN ? ELSE last_code END,
					last_enhanced = CASE WHEN state = 'sealing' THEN ? ELSE last_enhanced END,
					last_error = CASE WHEN state = 'sealing' THEN ? ELSE last_error END,
					status = CASE WHEN state = 'sealing' THEN ? ELSE status END, updated = ?
					WHERE id = ? AND (state = 'failed' OR state = 'sealing' AND claimed_by = ?)`, u.Code, u.Enhanced, text, status, nowMs, u.ID, node)
			default:
				return fmt.Errorf("recipient %d: cannot move to state %q", u.ID, u.State)
			}
			if err != nil {
				return fmt.Errorf("recipient %d: %w", u.ID, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				continue
			}
			if u.State.Final() {
				var qid int64
				if err := tx.QueryRowContext(ctx, `SELECT queue_id FROM queue_recipients WHERE id = ?`, u.ID).Scan(&qid); err != nil {
					return fmt.Errorf("recipient %d: %w", u.ID, err)
				}
				touched[qid] = true
			}
		}
		for qid := range touched {
			// A message whose recipients are all final keeps its record,
			// not its bytes.
			_, err := tx.ExecContext(ctx, `UPDATE queue_messages SET data = ? WHERE id = ?
				AND NOT EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = queue_messages.id
					AND r.state NOT IN `+finalStates+`)`, []byte{}, qid)
			if err != nil {
				return fmt.Errorf("release data of queued message %d: %w", qid, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update queued recipients: %w", err)
	}
	return nil
}

// RecoverQueue makes due again at now the recipients whose claim was left
// behind: this node's own (a run that stopped or crashed, so a restarted
// node takes them back at once) when own is set, and any node's whose
// lease ran out (a node that died). It returns how many. Their interrupted
// attempt stays counted. The deliverer calls it with own set when it
// starts, and without it every poll.
func (s *Store) RecoverQueue(ctx context.Context, now time.Time, own bool) (int64, error) {
	nowMs := millis(now)
	node, _ := s.Node()
	whose, args := `claimed_until <= ?`, []any{nowMs}
	if own {
		whose, args = `(claimed_by = ? OR claimed_until <= ?)`, []any{node, nowMs}
	}
	return s.execAffected(ctx, "recover queue", `UPDATE queue_recipients
		SET state = CASE state WHEN 'sealing' THEN 'deferred' ELSE 'queued' END, next_attempt = ?,
		last_error = ?, updated = ?, claimed_by = '', claimed_until = 0
		WHERE state IN ('delivering', 'sealing') AND `+whose,
		append([]any{nowMs, "delivery interrupted: hisp stopped during the attempt", nowMs}, args...)...)
}

// QueueFailed returns up to limit messages (with Data) that have recipients
// in the failed state, with those recipients only: their failure DSN is
// due. Mark them bounced (UpdateRecipients) once it is sent.
func (s *Store) QueueFailed(ctx context.Context, limit int) ([]QueuedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.noticeQuery(ctx, `SELECT DISTINCT queue_id FROM queue_recipients WHERE state = 'failed'
		ORDER BY queue_id LIMIT ?`, []any{limit}, `state = 'failed'`)
}

// QueueDelayed returns up to limit messages (with Data) created at or before
// createdBefore that have had no delayed DSN yet and still have recipients
// waiting after at least one attempt, with those recipients only. Mark each
// with MarkDelayNotified once its delayed DSN is sent: a message gets one.
func (s *Store) QueueDelayed(ctx context.Context, createdBefore time.Time, limit int) ([]QueuedMessage, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.noticeQuery(ctx, `SELECT m.id FROM queue_messages m WHERE m.delay_notified = 0 AND m.created <= ?
		AND EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = m.id
			AND r.state IN ('queued', 'delivering') AND r.attempts > 0)
		ORDER BY m.id LIMIT ?`, []any{millis(createdBefore), limit},
		`state IN ('queued', 'delivering') AND attempts > 0`)
}

func (s *Store) noticeQuery(ctx context.Context, idQuery string, args []any, recipientWhere string) ([]QueuedMessage, error) {
	var out []QueuedMessage
	err := s.tx(ctx, func(tx *txn) error {
		ids, err := queryIDs(ctx, tx, idQuery, args...)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := getQueued(ctx, tx, id, true, recipientWhere)
			if err != nil {
				return err
			}
			if len(m.Recipients) > 0 {
				out = append(out, m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("select queued messages for notices: %w", err)
	}
	return out, nil
}

// MarkDelayNotified records that the delayed DSN of a message went out.
func (s *Store) MarkDelayNotified(ctx context.Context, id int64, at time.Time) error {
	if at.IsZero() {
		at = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `UPDATE queue_messages SET delay_notified = ? WHERE id = ?`, millis(at), id)
	if err != nil {
		return fmt.Errorf("mark delayed DSN of queued message %d: %w", id, err)
	}
	return nil
}

// PurgeQueue deletes messages created before the given time whose
// recipients are all final, and returns how many went.
func (s *Store) PurgeQueue(ctx context.Context, createdBefore time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM queue_messages WHERE created < ?
		AND NOT EXISTS (SELECT 1 FROM queue_recipients r WHERE r.queue_id = queue_messages.id
			AND r.state NOT IN `+finalStates+`)`, millis(createdBefore))
	if err != nil {
		return 0, fmt.Errorf("purge queue: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("purge queue: %w", err)
	}
	return n, nil
}
