// Package store keeps hisp's state: domains, addresses, certificates and
// their private keys, trust anchors and bundles, the per-domain local CAs
// with their revocations, and the audit log. It is the only package that
// speaks SQL, and it knows no protocol.
//
// The database is SQLite, the file hisp.db in the data directory, opened in
// WAL mode with synchronous=FULL, foreign keys on and a busy timeout, so the
// admin command line and a running server can use it at the same time. The
// schema comes from numbered migrations (migrations/NNNN_name.sql), recorded
// in the schema_migrations table and applied in order when the store opens.
// Queries use standard SQL that PostgreSQL understands as well (RETURNING,
// ON CONFLICT, ON DELETE CASCADE; "?" placeholders, which a PostgreSQL
// driver would rebind to $n); times are stored as milliseconds since the
// Unix epoch. Connection settings and the migration files are per database;
// nothing SQLite-specific leaves this package.
//
// Private keys are encrypted at rest: PKCS#8 sealed with AES-256-GCM under a
// 32-byte master key kept in master.key in the data directory (mode 0600,
// made on first use). List methods return metadata only; a key leaves the
// store only through an explicit call such as [Store.PrivateKey].
//
// Every change to configuration (domains, addresses, certificates, anchors,
// bundles, local CAs) increases a counter that [Store.Changed] returns, so a
// running server notices changes made by another process by polling it.
package store

import (
	"context"
	"crypto/cipher"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"
)

// File names inside the data directory.
const (
	DBFile        = "hisp.db"
	MasterKeyFile = "master.key"
)

// ErrNotFound is returned (wrapped) when a row does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned (wrapped) when a row to be added already exists.
var ErrExists = errors.New("already exists")

// ErrNoStore is returned (wrapped) by OpenExisting when the directory holds
// no hisp data.
var ErrNoStore = errors.New("no hisp data")

// ErrNoKey is returned (wrapped) when a certificate has no private key.
var ErrNoKey = errors.New("no private key stored")

// Store is an open data directory. Its methods are safe for concurrent use,
// and several Stores (in several processes) may use one data directory.
type Store struct {
	// writeMu queues this process's write transactions in Go: SQLite lets
	// one writer in at a time, and waiting on a mutex is far cheaper than
	// its busy-retry sleeping (other processes still wait on the busy
	// timeout).
	writeMu sync.Mutex
	db      *sql.DB
	stmts   *stmtCache // of write transactions
	// rdb is a pool for snapshot reads (read), whose transactions begin
	// DEFERRED: in WAL mode they see one consistent state without taking
	// the write lock, so an admin listing the queue does not stall it.
	rdb  *sql.DB
	dir  string
	aead cipher.AEAD // master key, for private keys at rest
	// creds is the verified-credential cache of password checks.
	creds *credentialCache
	// defaultQuota is the quota of mail accounts without one of their
	// own, in bytes; 0: none (SetDefaultQuota).
	defaultQuota atomic.Int64
}

// Open opens the store in dataDir, creating the directory (mode 0700), the
// master key and the database on first use, and brings the schema up to
// date. It refuses a master.key readable by others than its owner.
func Open(ctx context.Context, dataDir string) (*Store, error) {
	return open(ctx, dataDir, true)
}

// OpenExisting is Open for a data directory that must hold a store
// already: when dataDir has no database it returns an error wrapping
// ErrNoStore and creates nothing (no directory, no master key). Commands
// that read or change a store use it, so that a mistyped directory is not
// silently a new, empty one.
func OpenExisting(ctx context.Context, dataDir string) (*Store, error) {
	return open(ctx, dataDir, false)
}

func open(ctx context.Context, dataDir string, create bool) (*Store, error) {
	if dataDir == "" {
		return nil, errors.New("open store: no data directory given")
	}
	// SQLite takes a file: URI; a relative name would read as its host.
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	dataDir = abs
	if !create {
		fi, err := os.Stat(filepath.Join(dataDir, DBFile))
		if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%w in %s", ErrNoStore, dataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
		}
		// A new master key could not decrypt the stored private keys.
		if _, err := os.Stat(filepath.Join(dataDir, MasterKeyFile)); err != nil {
			return nil, fmt.Errorf("data directory %s has a database but no readable %s (restore it from a backup): %w", dataDir, MasterKeyFile, err)
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	aead, err := loadMasterKey(filepath.Join(dataDir, MasterKeyFile))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, DBFile)
	// Create the database file ourselves so it is not readable by others;
	// SQLite gives its -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite3", sqliteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// Keep connections open: opening one (file, pragmas) costs far more
	// than a query, and a busy server has a few readers besides the writer.
	db.SetMaxIdleConns(8)
	rdb, err := sql.Open("sqlite3", sqliteReadDSN(path))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	rdb.SetMaxIdleConns(4)
	s := &Store{db: db, rdb: rdb, stmts: newStmtCache(db), dir: dataDir, aead: aead,
		creds: newCredentialCache(DefaultCredentialCacheTTL)}
	// Switching a new database to WAL and migrating it take locks that
	// SQLite's busy timeout does not always wait for; a second process
	// opening the same new data directory at that moment waits here.
	for attempt := 0; ; attempt++ {
		err = db.PingContext(ctx)
		if err == nil {
			err = s.migrate(ctx)
		}
		if err == nil {
			return s, nil
		}
		if attempt >= 50 || !strings.Contains(err.Error(), "database is locked") || ctx.Err() != nil {
			db.Close()
			rdb.Close()
			return nil, fmt.Errorf("open database %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sqliteDSN returns the connection string: every connection of the pool
// gets WAL, synchronous=FULL, foreign keys, a busy timeout, secure deletion
// (freed pages that held encrypted keys are zeroed) and BEGIN IMMEDIATE for
// transactions, so that writers queue on the busy timeout instead of failing
// when they upgrade a read lock.
func sqliteDSN(path string) string {
	u := url.URL{Scheme: "file", Path: path}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "10000")
	q.Set("_secure_delete", "on")
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	return u.String()
}

// sqliteReadDSN is the connection string of the snapshot-read pool:
// read-only connections whose transactions begin DEFERRED.
func sqliteReadDSN(path string) string {
	u := url.URL{Scheme: "file", Path: path}
	q := url.Values{}
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "10000")
	q.Set("_query_only", "true")
	q.Set("_txlock", "deferred")
	u.RawQuery = q.Encode()
	return u.String()
}

// read runs fn in a read-only transaction: a consistent snapshot that
// does not block writers (nor wait for them).
func (s *Store) read(ctx context.Context, fn func(q queryer) error) error {
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// Close closes the database.
func (s *Store) Close() error {
	s.stmts.close()
	s.rdb.Close()
	return s.db.Close()
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Changed returns a counter that increases with every committed change to
// configuration: domains, addresses, certificates, anchors, bundles and
// local CAs, whichever process made it. A server polls it (every few
// seconds) and reloads what it caches when the value differs. Audit records
// do not move it.
func (s *Store) Changed(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM config_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read change counter: %w", err)
	}
	return v, nil
}

// tx runs fn in a transaction, committing when fn returns nil.
func (s *Store) tx(ctx context.Context, fn func(tx *txn) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &txn{Tx: sqlTx, cache: s.stmts, defaultQuota: s.defaultQuota.Load()}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// change runs fn in a transaction that also moves the change counter.
func (s *Store) change(ctx context.Context, fn func(tx *txn) error) error {
	return s.tx(ctx, func(tx *txn) error {
		if err := fn(tx); err != nil {
			return err
		}
		return bump(ctx, tx)
	})
}

func bump(ctx context.Context, tx *txn) error {
	if _, err := tx.ExecContext(ctx, `UPDATE config_version SET version = version + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("move change counter: %w", err)
	}
	return nil
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order, checking that they
// are numbered 1, 2, 3...
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", e.Name())
		}
		data, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(data)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want number %d", m.name, i+1)
		}
	}
	return ms, nil
}

// migrate applies the migrations not yet recorded in schema_migrations,
// each in its own transaction. Concurrent openers serialize on the write
// lock and skip what the other applied.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY,
		name TEXT NOT NULL,
		applied BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var newest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if newest.Valid && newest.Int64 > int64(len(ms)) {
		return fmt.Errorf("database schema version %d is newer than this hisp knows (%d): use a newer hisp", newest.Int64, len(ms))
	}
	for _, m := range ms {
		err := s.tx(ctx, func(tx *txn) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			// Several statements: run unprepared (a prepared statement is
			// one statement).
			if _, err := tx.Tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)`,
				m.version, m.name, millis(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// SchemaVersion returns the number of the newest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}

// millis converts a time to the stored form; the zero time is stored as 0.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis converts a stored time back; 0 is the zero time.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// nullMillis converts a nullable stored time; NULL is the zero time.
func nullMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMillis(v.Int64)
}

// queryAll runs a query and scans every row with scan; errors say what was
// being listed.
func queryAll[T any](ctx context.Context, q queryer, what string, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// nullBytes returns b, or nil (SQL NULL) when b is empty.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Backup writes a consistent copy of the database to path (which must not
// exist), while the store stays in use: SQLite's VACUUM INTO reads one
// snapshot and writes a compact database file. Put it in a directory only
// the owner can enter (the file is made 0600 once written). The copy is
// useless without the master key (MasterKeyFile), which encrypts the
// private keys in it.
func (s *Store) Backup(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("backup to %s: %w", path, ErrExists)
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		os.Remove(path)
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
