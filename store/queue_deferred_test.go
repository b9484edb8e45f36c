package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestQueueDeferred: a plain message's recipients wait in deferred with
// their first attempt counted, are claimed to sealing by the one scheduler
// (ClaimDue) with the ordinary recipients, and go back to deferred, on to
// sealed, or to bounced; a crash while sealing leaves them deferred.
func TestQueueDeferred(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	now := time.Now().Truncate(time.Millisecond)
	plain := testMessage(1, "bob@b.example", "carol@c.example", "dave@d.example")
	plain.Plain = true
	for i := range plain.Recipients {
		plain.Recipients[i].NextAttempt = now.Add(time.Minute)
		plain.Recipients[i].LastCode, plain.Recipients[i].LastEnhanced = 451, "4.4.3"
		plain.Recipients[i].LastError = "certificate discovery failed, will retry"
	}
	id, err := s.Enqueue(ctx, plain)
	tcheck(t, err, "enqueue plain")
	_, err = s.Enqueue(ctx, testMessage(2, "erin@e.example"))
	tcheck(t, err, "enqueue sealed")

	m := queuedByID(t, s, id)
	if !m.Plain || m.Recipients[0].State != StateDeferred || m.Recipients[0].Attempts != 1 ||
		m.Recipients[0].LastEnhanced != "4.4.3" || !m.Recipients[0].NextAttempt.Equal(now.Add(time.Minute)) {
		t.Fatalf("enqueued: %+v %+v", m, m.Recipients[0])
	}
	if st, err := s.Stats(ctx, StatsQuery{Now: now}); err != nil || st.Deferred != 1 {
		t.Errorf("stats: deferred %d, %v", st.Deferred, err)
	}

	// Not due yet: only the sealed message is claimed.
	claimed, err := s.ClaimDue(ctx, now.Add(time.Second), 10, DefaultBackoff())
	tcheck(t, err, "claim")
	if len(claimed) != 1 || claimed[0].Plain {
		t.Fatalf("claimed before due: %+v", claimed)
	}
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: claimed[0].Recipients[0].ID, State: StateDelivered, Code: 250}}), "deliver erin")
	claimed, err = s.ClaimDue(ctx, now.Add(time.Minute), 10, DefaultBackoff())
	tcheck(t, err, "claim due")
	if len(claimed) != 1 || !claimed[0].Plain || len(claimed[0].Recipients) != 3 {
		t.Fatalf("claimed: %+v", claimed)
	}
	rs := claimed[0].Recipients
	for _, r := range rs {
		if r.State != StateSealing || r.Attempts != 2 {
			t.Errorf("claimed recipient %+v", r)
		}
	}
	later := now.Add(time.Hour)
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{
		{ID: rs[0].ID, State: StateSealed, Code: 250, Enhanced: "2.0.0", Text: "sealed and queued"},
		{ID: rs[1].ID, State: StateDeferred, Code: 451, Enhanced: "4.7.5", Text: "CRL unavailable", NextAttempt: later},
		{ID: rs[2].ID, State: StateBounced, Code: 550, Enhanced: "5.7.1", Text: "no trusted certificate"},
	}), "update")
	m = queuedByID(t, s, id)
	want := map[string]struct {
		state RecipientState
		code  int
	}{"bob@b.example": {StateSealed, 250}, "carol@c.example": {StateDeferred, 451}, "dave@d.example": {StateBounced, 550}}
	for _, r := range m.Recipients {
		if w := want[r.Address]; r.State != w.state || r.LastCode != w.code {
			t.Errorf("%s: %s %d, want %s %d", r.Address, r.State, r.LastCode, w.state, w.code)
		}
		if r.Address == "carol@c.example" && (!r.NextAttempt.Equal(later) || r.LastError != "CRL unavailable") {
			t.Errorf("carol: next %v, %q", r.NextAttempt, r.LastError)
		}
	}
	if len(m.Data) == 0 {
		t.Error("the plain message was released while carol waits")
	}
	// A crash while sealing carol: she is deferred again, not queued
	// (her message is plain and must never be sent as it is).
	claimed, err = s.ClaimDue(ctx, later, 10, DefaultBackoff())
	tcheck(t, err, "claim carol")
	if len(claimed) != 1 || len(claimed[0].Recipients) != 1 {
		t.Fatalf("claimed: %+v", claimed)
	}
	n, err := s.RecoverQueue(ctx, later, true)
	tcheck(t, err, "recover")
	if r := queuedByID(t, s, id).Recipients[1]; n != 1 || r.State != StateDeferred {
		t.Errorf("recovered %d: %+v", n, r)
	}
	// Retried by hand (hisp queue retry): due at once.
	if n, err := s.QueueRetry(ctx, id, later.Add(time.Second)); err != nil || n != 1 {
		t.Errorf("retry: %d, %v", n, err)
	}
	claimed, err = s.ClaimDue(ctx, later.Add(time.Second), 10, DefaultBackoff())
	tcheck(t, err, "claim again")
	tcheck(t, s.UpdateRecipients(ctx, now, []RecipientUpdate{{ID: claimed[0].Recipients[0].ID, State: StateSealed, Code: 250}}), "seal carol")
	if m := queuedByID(t, s, id); len(m.Data) != 0 {
		t.Error("the plain message kept once every recipient is final")
	}
	if list, err := s.QueueList(ctx, false); err != nil || len(list) != 0 {
		t.Errorf("pending after all sealed: %+v, %v", list, err)
	}
}

// TestMigrateDeferred: the deferred submissions of a store from before
// migration 0012 become plain queue messages with deferred recipients.
func TestMigrateDeferred(t *testing.T) {
	sqliteOnly(t) // a SQLite store from before 0013
	ctx := context.Background()
	dir := t.TempDir()
	ms, err := migrations(engineSQLite)
	tcheck(t, err, "migrations")
	db, err := sql.Open("sqlite3", sqliteDSN(filepath.Join(dir, DBFile)))
	tcheck(t, err, "open raw")
	_, err = db.ExecContext(ctx, `CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied BIGINT NOT NULL)`)
	tcheck(t, err, "schema_migrations")
	for _, m := range ms {
		if m.version >= 12 {
			break
		}
		if _, err := db.ExecContext(ctx, m.sql); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		_, err := db.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.version, m.name)
		tcheck(t, err, "record "+m.name)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO deferred_submissions
		(message_id, mail_from, auth_user, recipients, data, created, attempts, next_attempt, last_error)
		VALUES ('<d1@a.example>', 'alice@a.example', 'alice@a.example', ?, ?, 1000, 3, 5000, '451 4.4.3 dns timeout')`,
		"bob@b.example\ncarol@C.example", []byte("Subject: plain\r\n\r\nbody\r\n"))
	tcheck(t, err, "deferred row")
	tcheck(t, db.Close(), "close raw")
	if _, err := os.Stat(filepath.Join(dir, DBFile)); err != nil {
		t.Fatal(err)
	}

	s, err := testOpen(t, dir)
	tcheck(t, err, "open and migrate")
	defer s.Close()
	list, err := s.QueueList(ctx, false)
	tcheck(t, err, "list")
	if len(list) != 1 {
		t.Fatalf("%d queued messages", len(list))
	}
	m, err := s.QueueMessage(ctx, list[0].ID)
	tcheck(t, err, "message")
	if !m.Plain || m.MessageID != "<d1@a.example>" || m.User != "alice@a.example" || string(m.Data) != "Subject: plain\r\n\r\nbody\r\n" ||
		m.Origin != "deferred submission" || len(m.Recipients) != 2 {
		t.Fatalf("migrated: %+v", m)
	}
	for i, want := range []struct{ addr, domain string }{{"bob@b.example", "b.example"}, {"carol@C.example", "c.example"}} {
		r := m.Recipients[i]
		if r.Address != want.addr || r.Domain != want.domain || r.State != StateDeferred || r.Attempts != 3 ||
			r.NextAttempt.UnixMilli() != 5000 || r.LastError != "451 4.4.3 dns timeout" {
			t.Errorf("recipient %d: %+v", i, r)
		}
	}
}
