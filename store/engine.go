package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// The store runs on one of two SQL engines: SQLite (embedded, the default)
// or PostgreSQL (several nodes sharing one database). Every operation is
// written once, in the SQL both understand; what differs is kept here and
// in the connection code (store.go, postgres.go): placeholders ("?" is
// rebound to "$n" for PostgreSQL), row locks (lockRow, skipLocked), snapshot reads and
// the migration files.

// engine names the SQL database behind a Store.
type engine int

const (
	engineSQLite engine = iota
	enginePostgres
)

// sqlDB is a connection pool that speaks the store's SQL to its engine.
type sqlDB struct {
	*sql.DB
	engine engine
	binds  *rebinder
}

func newSQLDB(db *sql.DB, e engine) *sqlDB {
	return &sqlDB{DB: db, engine: e, binds: &rebinder{}}
}

func (db *sqlDB) q(query string) string {
	if db.engine != enginePostgres {
		return query
	}
	return db.binds.rebind(query)
}

// ExecContext runs a statement.
func (db *sqlDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.DB.ExecContext(ctx, db.q(query), args...)
}

// QueryContext runs a query.
func (db *sqlDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.DB.QueryContext(ctx, db.q(query), args...)
}

// QueryRowContext runs a query for one row.
func (db *sqlDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.DB.QueryRowContext(ctx, db.q(query), args...)
}

// PrepareContext prepares a statement.
func (db *sqlDB) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return db.DB.PrepareContext(ctx, db.q(query))
}

// BeginTx begins a transaction.
func (db *sqlDB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*dbTx, error) {
	tx, err := db.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &dbTx{Tx: tx, db: db}, nil
}

// dbTx is a transaction that speaks the store's SQL to its engine.
type dbTx struct {
	*sql.Tx
	db *sqlDB
}

// ExecContext runs a statement in the transaction.
func (t *dbTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.db.q(query), args...)
}

// QueryContext runs a query in the transaction.
func (t *dbTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.db.q(query), args...)
}

// QueryRowContext runs a query for one row in the transaction.
func (t *dbTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.db.q(query), args...)
}

// PrepareContext prepares a statement for the transaction.
func (t *dbTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.Tx.PrepareContext(ctx, t.db.q(query))
}

// execRaw runs a script of several statements without placeholders (a
// migration), unprepared.
func (t *dbTx) execRaw(ctx context.Context, script string) error {
	_, err := t.Tx.ExecContext(ctx, script)
	return err
}

// rebinder turns "?" placeholders into PostgreSQL's "$1", "$2"... outside
// quoted strings and identifiers, remembering each query it has seen (the
// store's queries are a fixed set).
type rebinder struct {
	mu sync.Mutex
	m  map[string]string
}

// maxRebound bounds the memory of rebound queries; a query built with a
// variable number of arguments makes one per count.
const maxRebound = 2000

func (r *rebinder) rebind(query string) string {
	r.mu.Lock()
	out, ok := r.m[query]
	r.mu.Unlock()
	if ok {
		return out
	}
	out = rebindQuery(query)
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]string{}
	}
	if len(r.m) < maxRebound {
		r.m[query] = out
	}
	r.mu.Unlock()
	return out
}

// rebindQuery numbers the "?" placeholders of query as $1, $2...; a "?"
// inside '...' or "..." is left alone.
func rebindQuery(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// skipLocked is the clause of a worker that claims rows: PostgreSQL's FOR
// UPDATE SKIP LOCKED, so that a node passes over the rows another node is
// claiming rather than waiting for them. SQLite needs none: its write
// transactions hold its one write lock from their start (BEGIN IMMEDIATE).
func (s *Store) skipLocked() string {
	if s.db.engine == enginePostgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// lockRow locks row id of table until the write transaction ends, on
// PostgreSQL, so that a transaction that reads the row to decide how to
// change it does not race another node's (SQLite's write transactions
// hold its one write lock already). table is a constant of the caller.
func lockRow(ctx context.Context, tx *txn, table string, id int64) error {
	if tx.db.engine != enginePostgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT id FROM `+table+` WHERE id = ? FOR UPDATE`, id); err != nil {
		return fmt.Errorf("lock %s %d: %w", table, id, err)
	}
	return nil
}
