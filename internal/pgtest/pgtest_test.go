package pgtest

import (
	"context"
	"database/sql"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// Two calls give two empty databases, both reachable, that do not see each
// other's tables.
func TestURL(t *testing.T) {
	ctx := context.Background()
	u1, u2 := URL(t), URL(t)
	if u1 == u2 {
		t.Fatalf("same URL twice: %s", u1)
	}
	open := func(u string) *sql.DB {
		db, err := sql.Open("pgx", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db1, db2 := open(u1), open(u2)
	for i, db := range []*sql.DB{db1, db2} {
		var name string
		var tables int
		if err := db.QueryRowContext(ctx, `SELECT current_database(), (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public')`).Scan(&name, &tables); err != nil {
			t.Fatalf("database %d: %v", i+1, err)
		}
		if tables != 0 {
			t.Errorf("database %d (%s): %d tables, want an empty database", i+1, name, tables)
		}
	}
	if _, err := db1.ExecContext(ctx, `CREATE TABLE t (id BIGINT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db1.ExecContext(ctx, `INSERT INTO t (id) VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db2.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the second database sees the first one's table")
	}
}

// A database is dropped when its test ends, even with connections open.
func TestURLDropped(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("use", func(t *testing.T) {
		db, err := sql.Open("pgx", URL(t))
		if err != nil {
			t.Fatal(err)
		}
		// Left open on purpose: the drop ends it.
		if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	s, err := get()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.admin.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still there after its test", name)
	}
}
