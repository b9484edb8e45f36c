package store

import (
	"context"
	"fmt"
)

// insertID runs an INSERT (without RETURNING) into a table whose id
// column is its INTEGER PRIMARY KEY, in the transaction, and returns the
// new row's id.
//
// On SQLite it takes the statement's last insert rowid: SQLite gathers
// the rows of RETURNING in a temporary b-tree, with a page cache of its
// own that is made, faulted in and destroyed for every statement, which
// made each INSERT ... RETURNING about twice the CPU of the insert itself
// (seven of them per submitted message). Other databases (PostgreSQL,
// whose driver has no last insert id) run the statement with RETURNING id
// appended, as before.
func insertID(ctx context.Context, tx *txn, query string, args ...any) (int64, error) {
	if !tx.sqlite() {
		var id int64
		err := tx.QueryRowContext(ctx, query+" RETURNING id", args...).Scan(&id)
		return id, err
	}
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("new row id: %w", err)
	}
	return id, nil
}

// sqlite reports whether the transaction is on SQLite.
func (t *txn) sqlite() bool { return t.db.engine == engineSQLite }
