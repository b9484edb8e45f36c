package store

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// stmtCache keeps the statements of write transactions prepared: the
// SQLite driver prepares every statement anew otherwise (parsing and
// planning it each time), which was a tenth of the CPU a submitted message
// costs the store. A statement is prepared once on the database and, by
// database/sql, once per connection it runs on.
type stmtCache struct {
	db *sqlDB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// maxCachedStmts bounds the cache; the store's queries are a fixed set, but
// a query built with a variable number of arguments makes one per count.
const maxCachedStmts = 500

func newStmtCache(db *sqlDB) *stmtCache {
	return &stmtCache{db: db, m: make(map[string]*sql.Stmt)}
}

// get returns query prepared on the database, or nil when it cannot be
// cached (the caller runs it unprepared).
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	st := c.m[query]
	c.mu.Unlock()
	if st != nil {
		return st
	}
	st, err := c.db.PrepareContext(context.WithoutCancel(ctx), query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[query]; old != nil {
		st.Close()
		return old
	}
	if len(c.m) >= maxCachedStmts {
		st.Close()
		return nil
	}
	c.m[query] = st
	return st
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}

// txn is a write transaction that runs its statements from the cache.
type txn struct {
	*dbTx
	cache *stmtCache
	// defaultQuota is the store's default mailbox quota when the
	// transaction began (SetDefaultQuota).
	defaultQuota int64
}

func (t *txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if strings.Contains(strings.TrimRight(query, "; \t\r\n"), ";") {
		return nil // several statements: a prepared statement is one
	}
	if st := t.cache.get(ctx, query); st != nil {
		return t.dbTx.StmtContext(ctx, st)
	}
	return nil
}

// ExecContext runs a statement in the transaction.
func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.dbTx.ExecContext(ctx, query, args...)
}

// QueryContext runs a query in the transaction.
func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.dbTx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query for one row in the transaction.
func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.dbTx.QueryRowContext(ctx, query, args...)
}

// PrepareContext returns the statement prepared for the transaction, from
// the cache when it can be.
func (t *txn) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st, nil
	}
	return t.dbTx.PrepareContext(ctx, query)
}
