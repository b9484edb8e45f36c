package store

// The PostgreSQL migrations (migrations_pg/) against the SQLite ones
// (migrations/): one numbered list, the same end schema, and the same
// effect of triggers and data moves, on a real PostgreSQL server.

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/pgtest"
	_ "github.com/mattn/go-sqlite3"
)

// migTestMigrations returns the migrations of an engine, as Store.migrate
// reads them.
func migTestMigrations(t *testing.T, e engine) []migration {
	t.Helper()
	ms, err := migrations(e)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// migTestApply runs migrations in order, each in a transaction, as
// Store.migrate does.
func migTestApply(t *testing.T, db *sql.DB, ms []migration) {
	t.Helper()
	ctx := context.Background()
	for _, m := range ms {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			tx.Rollback()
			t.Fatalf("%s: %v", m.name, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
}

// migTestDBs opens an in-memory SQLite database and a fresh PostgreSQL
// database, both empty.
func migTestDBs(t *testing.T) (lite, pg *sql.DB) {
	t.Helper()
	lite, err := sql.Open("sqlite3", "file::memory:?_foreign_keys=on")
	if err != nil {
		t.Fatal(err)
	}
	lite.SetMaxOpenConns(1) // each connection would be a database of its own
	t.Cleanup(func() { lite.Close() })
	pg, err = sql.Open("pgx", pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	return lite, pg
}

func migTestStrings(t *testing.T, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, v := range vals {
			if v.Valid {
				parts = append(parts, v.String)
			} else {
				parts = append(parts, "NULL")
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Where the PostgreSQL schema differs on purpose (see the migrations'
// comments): api_tokens.admin is BOOLEAN, as the store binds a Go bool;
// relay_client_cas is unique by the SHA-256 of the certificate, no primary
// key.
var (
	migTestTypeExceptions = map[string]string{"api_tokens.admin": "boolean"}
	migTestPKExceptions   = map[string]bool{"relay_client_cas": true}
)

// migTestSQLiteType maps a declared SQLite type to the PostgreSQL one.
func migTestSQLiteType(decl string) string {
	switch strings.ToUpper(decl) {
	case "INTEGER", "BIGINT":
		return "bigint"
	case "TEXT":
		return "text"
	case "BLOB":
		return "bytea"
	case "BOOLEAN":
		return "boolean"
	}
	return "unknown " + decl
}

// migTestDefault normalizes a column default of either engine.
func migTestDefault(s string) string {
	s = strings.TrimSuffix(s, "::text")
	switch strings.ToLower(s) {
	case "false":
		return "0"
	case "true":
		return "1"
	}
	return s
}

var (
	migTestCheckIn  = regexp.MustCompile(`CHECK \((\w+) IN \(([^)]*)\)\)`)
	migTestCheckEq  = regexp.MustCompile(`CHECK \((\w+) = (\d+)\)`)
	migTestPGIn     = regexp.MustCompile(`^CHECK \(\((\w+) = ANY \(ARRAY\[(.*)\]\)\)\)$`)
	migTestPGEq     = regexp.MustCompile(`^CHECK \(\((\w+) = (\d+)\)\)$`)
	migTestLiteral  = regexp.MustCompile(`'([^']*)'`)
	migTestSpaceRun = regexp.MustCompile(`\s+`)
)

// migTestCheck renders a CHECK as "col IN a,b,c" or "col = n".
func migTestCheck(col, values string) string {
	var vs []string
	for _, m := range migTestLiteral.FindAllStringSubmatch(values, -1) {
		vs = append(vs, m[1])
	}
	return col + " IN " + strings.Join(vs, ",")
}

// migTestSchema describes a schema engine-neutrally: one line per column
// (position, name, type, not null, default), primary key, unique key,
// index, check, foreign key and trigger, sorted.
type migTestSchema map[string][]string // table (or "triggers") -> lines

func migTestSQLiteSchema(t *testing.T, db *sql.DB) migTestSchema {
	s := migTestSchema{}
	tables := migTestStrings(t, db, `SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	for _, row := range tables {
		table, createSQL, _ := strings.Cut(row, "|")
		var lines []string
		pk := migTestStrings(t, db, `SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk`, table)
		for _, c := range migTestStrings(t, db, `SELECT cid, name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid`, table) {
			f := strings.Split(c, "|")
			typ := migTestSQLiteType(f[2])
			if e, ok := migTestTypeExceptions[table+"."+f[1]]; ok {
				typ = e
			}
			notNull := f[3] == "1"
			if f[5] != "0" {
				notNull = true // a primary key column is NOT NULL on PostgreSQL
			}
			dflt := ""
			if f[4] != "NULL" {
				dflt = migTestDefault(f[4])
			}
			lines = append(lines, fmt.Sprintf("column %02s %s %s notnull=%v default=%s", f[0], f[1], typ, notNull, dflt))
		}
		if len(pk) > 0 && !migTestPKExceptions[table] {
			lines = append(lines, "primary key "+strings.Join(pk, ","))
		}
		for _, ix := range migTestStrings(t, db, `SELECT name, origin FROM pragma_index_list(?)`, table) {
			name, origin, _ := strings.Cut(ix, "|")
			cols := strings.Join(migTestStrings(t, db, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, name), ",")
			switch origin {
			case "u":
				lines = append(lines, "unique "+cols)
			case "c":
				lines = append(lines, "index "+name+" "+cols)
			case "pk":
				if migTestPKExceptions[table] {
					lines = append(lines, "unique by hash "+cols)
				}
			}
		}
		oneLine := migTestSpaceRun.ReplaceAllString(createSQL, " ")
		for _, m := range migTestCheckIn.FindAllStringSubmatch(oneLine, -1) {
			lines = append(lines, "check "+migTestCheck(m[1], m[2]))
		}
		for _, m := range migTestCheckEq.FindAllStringSubmatch(oneLine, -1) {
			lines = append(lines, "check "+m[1]+" = "+m[2])
		}
		for _, fk := range migTestStrings(t, db, `SELECT "from", "table", "to", on_delete FROM pragma_foreign_key_list(?)`, table) {
			f := strings.Split(fk, "|")
			lines = append(lines, fmt.Sprintf("foreign key %s -> %s(%s) on delete %s", f[0], f[1], f[2], f[3]))
		}
		slices.Sort(lines)
		s[table] = lines
	}
	s["triggers"] = migTestStrings(t, db, `SELECT tbl_name || ' ' || name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1`)
	return s
}

func migTestPGSchema(t *testing.T, db *sql.DB) migTestSchema {
	s := migTestSchema{}
	tables := migTestStrings(t, db, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`)
	for _, table := range tables {
		var lines []string
		// Positions renumbered from 0, as dropped columns leave gaps.
		for _, c := range migTestStrings(t, db, `SELECT ordinal_position - 1, column_name, data_type, is_nullable, column_default
			FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position`, table) {
			f := strings.Split(c, "|")
			dflt := ""
			if f[4] != "NULL" {
				dflt = migTestDefault(f[4])
			}
			lines = append(lines, fmt.Sprintf("column %02s %s %s notnull=%v default=%s", f[0], f[1], f[2], f[3] == "NO", dflt))
		}
		for _, ix := range migTestStrings(t, db, `SELECT i.relname, x.indisprimary, x.indisunique,
				EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid),
				(SELECT string_agg(COALESCE(a.attname, 'expr'), ',' ORDER BY k.n)
					FROM unnest(x.indkey) WITH ORDINALITY AS k (attnum, n)
					LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum)
			FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
			WHERE x.indrelid = ('public.' || $1)::regclass`, table) {
			f := strings.Split(ix, "|")
			switch {
			case f[1] == "true":
				lines = append(lines, "primary key "+f[4])
			case f[2] == "true" && f[3] == "true":
				lines = append(lines, "unique "+f[4])
			case f[2] == "true" && strings.Contains(f[4], "expr"):
				lines = append(lines, "unique by hash "+strings.ReplaceAll(f[4], "expr", "cert"))
			default:
				lines = append(lines, "index "+f[0]+" "+f[4])
			}
		}
		for _, def := range migTestStrings(t, db, `SELECT pg_get_constraintdef(oid) FROM pg_constraint
			WHERE contype = 'c' AND conrelid = ('public.' || $1)::regclass`, table) {
			if m := migTestPGIn.FindStringSubmatch(def); m != nil {
				lines = append(lines, "check "+migTestCheck(m[1], m[2]))
			} else if m := migTestPGEq.FindStringSubmatch(def); m != nil {
				lines = append(lines, "check "+m[1]+" = "+m[2])
			} else {
				lines = append(lines, "check unknown "+def)
			}
		}
		for _, fk := range migTestStrings(t, db, `SELECT a.attname, rt.relname, ra.attname,
				CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT'
					WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' END
			FROM pg_constraint c
			JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
			JOIN pg_class rt ON rt.oid = c.confrelid
			JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
			WHERE c.contype = 'f' AND c.conrelid = ('public.' || $1)::regclass`, table) {
			f := strings.Split(fk, "|")
			lines = append(lines, fmt.Sprintf("foreign key %s -> %s(%s) on delete %s", f[0], f[1], f[2], f[3]))
		}
		slices.Sort(lines)
		s[table] = lines
	}
	// mail_state_notify (0016) is PostgreSQL's only: it tells the other
	// nodes of mail changes, and SQLite has no other nodes.
	s["triggers"] = migTestStrings(t, db, `SELECT DISTINCT event_object_table || ' ' || trigger_name
		FROM information_schema.triggers WHERE trigger_schema = 'public' AND trigger_name <> 'mail_state_notify' ORDER BY 1`)
	return s
}

// The PostgreSQL migrations are the SQLite ones, file for file, and end in
// the same schema: tables, columns (order, type, NOT NULL, default), keys,
// indexes, CHECK lists, foreign keys and triggers.
func TestMigrationsPGMatchSQLite(t *testing.T) {
	liteMs, pgMs := migTestMigrations(t, engineSQLite), migTestMigrations(t, enginePostgres)
	names := func(ms []migration) (out []string) {
		for _, m := range ms {
			out = append(out, m.name)
		}
		return out
	}
	if liteNames, pgNames := names(liteMs), names(pgMs); !slices.Equal(liteNames, pgNames) {
		t.Fatalf("migration files differ:\nmigrations:    %v\nmigrations_pg: %v", liteNames, pgNames)
	}
	lite, pg := migTestDBs(t)
	migTestApply(t, lite, liteMs)
	migTestApply(t, pg, pgMs)
	want, got := migTestSQLiteSchema(t, lite), migTestPGSchema(t, pg)
	for table, lines := range want {
		if _, ok := got[table]; !ok {
			t.Errorf("table %s missing on PostgreSQL", table)
			continue
		}
		if !slices.Equal(lines, got[table]) {
			t.Errorf("%s differs:\nSQLite:\n\t%s\nPostgreSQL:\n\t%s", table, strings.Join(lines, "\n\t"), strings.Join(got[table], "\n\t"))
		}
	}
	for table := range got {
		if _, ok := want[table]; !ok {
			t.Errorf("table %s only on PostgreSQL", table)
		}
	}
	if len(want) < 20 {
		t.Errorf("only %d tables read from SQLite", len(want))
	}
}

// migTestExec runs statements without parameters (the same text on both
// engines).
func migTestExec(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// The triggers have the same effect on both engines: a body shared by two
// messages stays until its last message goes, also by cascade, and a
// removed mailbox moves the modification sequence.
func TestMigrationsPGTriggers(t *testing.T) {
	lite, pg := migTestDBs(t)
	migTestApply(t, lite, migTestMigrations(t, engineSQLite))
	migTestApply(t, pg, migTestMigrations(t, enginePostgres))
	results := map[string][]string{}
	for engine, db := range map[string]*sql.DB{"sqlite": lite, "postgres": pg} {
		migTestExec(t, db,
			`INSERT INTO domains (name, created) VALUES ('a.example', 0)`,
			`INSERT INTO addresses (address, domain, created) VALUES ('u@a.example', 'a.example', 0)`,
			`INSERT INTO mail_accounts (address, quota, created) VALUES ('u@a.example', 0, 0)`,
			`INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, modseq, size, subscribed, special_use, created)
				VALUES (1, 'INBOX', 1, 3, 0, 0, 1, '', 0), (1, 'Archive', 2, 2, 0, 0, 1, '', 0)`,
			`INSERT INTO mail_bodies (header_size, data) VALUES (1, 'A'), (1, 'B')`,
			// Body 1 in both mailboxes (COPY), body 2 in INBOX only.
			`INSERT INTO messages (mailbox_id, uid, body_id, size, internal_date, modseq, seen, answered, flagged, deleted, draft, keywords)
				VALUES (1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, ''), (1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, ''),
				(2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, '')`,
		)
		state := func(step string) {
			rows := migTestStrings(t, db, `SELECT 'bodies ' || (SELECT COUNT(*) FROM mail_bodies) || ' modseq ' || modseq FROM mail_state`)
			results[engine] = append(results[engine], step+": "+strings.Join(rows, ""))
		}
		state("start")
		migTestExec(t, db, `DELETE FROM messages WHERE mailbox_id = 1 AND uid = 1`)
		state("shared body's first message expunged")
		migTestExec(t, db, `DELETE FROM mailboxes WHERE name = 'INBOX'`)
		state("INBOX deleted")
		migTestExec(t, db, `DELETE FROM domains`)
		state("domain deleted")
	}
	want := []string{
		"start: bodies 2 modseq 0",
		"shared body's first message expunged: bodies 2 modseq 0",
		"INBOX deleted: bodies 1 modseq 1",
		"domain deleted: bodies 0 modseq 2",
	}
	for engine, got := range results {
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n\t%s\nwant\n\t%s", engine, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	}
}

// 0013 moves deferred submissions into the queue the same way on both
// engines.
func TestMigrationsPGDeferredMove(t *testing.T) {
	lite, pg := migTestDBs(t)
	results := map[string][]string{}
	for engine, db := range map[string]*sql.DB{"sqlite": lite, "postgres": pg} {
		e := engineSQLite
		if engine == "postgres" {
			e = enginePostgres
		}
		ms := migTestMigrations(t, e)
		i := slices.IndexFunc(ms, func(m migration) bool { return m.name == "0013_deferred_in_queue.sql" })
		if i < 0 {
			t.Fatal("no 0013_deferred_in_queue.sql")
		}
		migTestApply(t, db, ms[:i])
		migTestExec(t, db,
			`INSERT INTO queue_messages (message_id, mail_from, auth_user, origin, data, size, created, delay_notified)
				VALUES ('<q@a.example>', 'u@a.example', 'u@a.example', 'submission', 'z', 1, 5, 0)`,
			`INSERT INTO queue_recipients (queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
				last_code, last_enhanced, last_error, remote_mta, status, updated)
				VALUES (1, 'x@b.example', 'b.example', FALSE, 'queued', 0, 0, 0, 0, '', '', '', '', 0)`,
			// Newlines inside the literals: one address a line.
			"INSERT INTO deferred_submissions (message_id, mail_from, auth_user, recipients, data, created, attempts, next_attempt, last_error)"+
				" VALUES ('<d1@a.example>', 'u@a.example', 'u@a.example', 'one@B.Example\ntwo@c.example', 'abc', 10, 2, 99, 'dns down'),"+
				" ('<d2@a.example>', 'u@a.example', 'relay', 'three@d.example\n', 'd', 20, 0, 50, 'ldap down')",
		)
		migTestApply(t, db, ms[i:])
		results[engine] = append(migTestStrings(t, db, `SELECT id, message_id, origin, data, size, created, delay_notified, plain
			FROM queue_messages ORDER BY id`),
			// Recipient ids may differ: SQLite's recursive split numbers
			// the first lines of all submissions first.
			migTestStrings(t, db, `SELECT queue_id, recipient, domain, local, state, attempts, next_attempt, last_attempt,
				last_code, last_enhanced, last_error, remote_mta, status, updated FROM queue_recipients ORDER BY queue_id, recipient`)...)
		if _, err := db.Exec(`SELECT 1 FROM deferred_submissions`); err == nil {
			t.Errorf("%s: deferred_submissions still there", engine)
		}
	}
	// Booleans read back as false/true from both (go-sqlite3 converts
	// columns declared BOOLEAN). Blobs were written as text literals, which
	// both engines take.
	lr, pr := results["sqlite"], results["postgres"]
	if !slices.Equal(lr, pr) {
		t.Errorf("0013 moved differently:\nSQLite:\n\t%s\nPostgreSQL:\n\t%s", strings.Join(lr, "\n\t"), strings.Join(pr, "\n\t"))
	}
	want := []string{
		"1|<q@a.example>|submission|z|1|5|0|false",
		"2|<d1@a.example>|deferred submission|abc|3|10|0|true",
		"3|<d2@a.example>|deferred submission|d|1|20|0|true",
		"1|x@b.example|b.example|false|queued|0|0|0|0|||||0",
		"2|one@B.Example|b.example|false|deferred|2|99|10|0||dns down|||10",
		"2|two@c.example|c.example|false|deferred|2|99|10|0||dns down|||10",
		"3|three@d.example|d.example|false|deferred|0|50|20|0||ldap down|||20",
	}
	if !slices.Equal(lr, want) {
		t.Errorf("SQLite after 0013:\n\t%q\nwant\n\t%q", lr, want)
	}
}

// A client CA certificate larger than a B-tree entry may hold is stored
// once per relay on PostgreSQL, duplicates ignored as on SQLite.
func TestMigrationsPGLargeClientCA(t *testing.T) {
	_, pg := migTestDBs(t)
	migTestApply(t, pg, migTestMigrations(t, enginePostgres))
	migTestExec(t, pg, `INSERT INTO relay_accounts (name, password_hash, created) VALUES ('ehr', '', 0)`)
	big := make([]byte, 8000)
	for i := range big {
		big[i] = byte(i*7 + i/251)
	}
	for range 2 {
		if _, err := pg.Exec(`INSERT INTO relay_client_cas (relay_id, cert) VALUES (1, $1) ON CONFLICT DO NOTHING`, big); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pg.Exec(`INSERT INTO relay_client_cas (relay_id, cert) VALUES (1, $1) ON CONFLICT DO NOTHING`, big[:100]); err != nil {
		t.Fatal(err)
	}
	if n := migTestStrings(t, pg, `SELECT COUNT(*) FROM relay_client_cas`); n[0] != "2" {
		t.Errorf("%s client CAs, want 2 (one large, stored once; one small)", n[0])
	}
}

// On PostgreSQL, writers run concurrently: expunging a body's last message
// while another transaction copies it (not yet committed) waits for that
// copy, keeps the body for it and succeeds.
func TestMigrationsPGBodyGCConcurrentCopy(t *testing.T) {
	ctx := context.Background()
	_, pg := migTestDBs(t)
	migTestApply(t, pg, migTestMigrations(t, enginePostgres))
	migTestExec(t, pg,
		`INSERT INTO domains (name, created) VALUES ('a.example', 0)`,
		`INSERT INTO addresses (address, domain, created) VALUES ('u@a.example', 'a.example', 0)`,
		`INSERT INTO mail_accounts (address, quota, created) VALUES ('u@a.example', 0, 0)`,
		`INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, modseq, size, subscribed, special_use, created)
			VALUES (1, 'INBOX', 1, 2, 0, 0, 1, '', 0), (1, 'Archive', 2, 1, 0, 0, 1, '', 0)`,
		`INSERT INTO mail_bodies (header_size, data) VALUES (1, 'A')`,
		`INSERT INTO messages (mailbox_id, uid, body_id, size, internal_date, modseq, seen, answered, flagged, deleted, draft, keywords)
			VALUES (1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, '')`,
	)
	copyTx, err := pg.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer copyTx.Rollback()
	if _, err := copyTx.Exec(`INSERT INTO messages (mailbox_id, uid, body_id, size, internal_date, modseq, seen, answered, flagged, deleted, draft, keywords)
		VALUES (2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, '')`); err != nil {
		t.Fatal(err)
	}
	expunged := make(chan error, 1)
	go func() {
		_, err := pg.Exec(`DELETE FROM messages WHERE mailbox_id = 1 AND uid = 1 /* expunge */`)
		expunged <- err
	}()
	// Wait until the expunge waits for the copy's lock. (Asked outside
	// copyTx: a transaction sees one snapshot of pg_stat_activity.)
	for {
		var waiting int
		if err := pg.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity
			WHERE query LIKE '%/* expunge */%' AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-expunged:
			t.Fatalf("expunge did not wait for the copy: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := copyTx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-expunged; err != nil {
		t.Fatalf("expunge: %v", err)
	}
	got := migTestStrings(t, pg, `SELECT (SELECT COUNT(*) FROM messages) || ' ' || (SELECT COUNT(*) FROM mail_bodies)`)
	if got[0] != "1 1" {
		t.Errorf("messages, bodies = %s, want 1 1 (the copy keeps the body)", got[0])
	}
}
