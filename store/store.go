// Package store keeps hisp's state: domains, addresses, certificates and
// their private keys, trust anchors and bundles, the per-domain local CAs
// with their revocations, and the audit log. It is the only package that
// speaks SQL, and it knows no protocol.
//
// The database is SQLite by default, the file hisp.db in the data
// directory, opened in WAL mode with synchronous=FULL, foreign keys on and a
// busy timeout, so the admin command line and a running server can use it
// at the same time. Several nodes share a PostgreSQL database instead
// (Location.URL, through pgx): one queue, one set of mailboxes, one
// tracking table, one configuration. Every operation is written once, in
// standard SQL both engines run (RETURNING, ON CONFLICT, ON DELETE CASCADE;
// "?" placeholders, rebound to $n for PostgreSQL, engine.go); what differs
// is the connection, the row locks that make nodes take turns where
// SQLite's one writer did (lockRow, skipLocked) and the migration files:
// one numbered list, migrations/NNNN_name.sql for SQLite and
// migrations_pg/NNNN_name.sql for PostgreSQL, recorded in the
// schema_migrations table and applied in order when the store opens (on
// PostgreSQL under an advisory lock, so nodes starting together migrate
// once). Times are stored as milliseconds since the Unix epoch. Nothing
// engine-specific leaves this package.
//
// Private keys are encrypted at rest: PKCS#8 sealed with AES-256-GCM under a
// 32-byte master key kept in master.key in the data directory, or the file
// Location.MasterKeyFile names (mode 0600, made on first use), never in the
// database: every node of a PostgreSQL store has a copy of the one file. List methods return metadata only; a key leaves the
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

	"github.com/jackc/pgx/v5"
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

// Store is an open store. Its methods are safe for concurrent use, and
// several Stores (in several processes, on several nodes with PostgreSQL)
// may use one store.
type Store struct {
	// writeMu queues this process's write transactions in Go: SQLite lets
	// one writer in at a time, and waiting on a mutex is far cheaper than
	// its busy-retry sleeping (other processes still wait on the busy
	// timeout). On PostgreSQL it keeps one node's writers from deadlocking
	// each other; nodes take turns on row locks (lockRow).
	writeMu sync.Mutex
	db      *sqlDB
	stmts   *stmtCache // of write transactions
	// rdb is a pool for snapshot reads (read), whose transactions begin
	// DEFERRED: in WAL mode they see one consistent state without taking
	// the write lock, so an admin listing the queue does not stall it.
	// With PostgreSQL it is db (reads run REPEATABLE READ, READ ONLY).
	rdb  *sqlDB
	loc  Location
	aead cipher.AEAD // master key, for private keys at rest
	// creds is the verified-credential cache of password checks.
	creds *credentialCache
	// defaultQuota is the quota of mail accounts without one of their
	// own, in bytes; 0: none (SetDefaultQuota).
	defaultQuota atomic.Int64
	// node is this process as a node of the store (leases.go).
	node atomic.Pointer[nodeInfo]
	// nodeConn holds the advisory lock of the node's name on PostgreSQL
	// while the store is open (HoldNode).
	nodeMu   sync.Mutex
	nodeConn *pgx.Conn
	// pgConfig is a PostgreSQL store's connection settings, for the
	// connections it makes outside the pool (LISTEN); nil for SQLite.
	pgConfig *pgx.ConnConfig
}

// Location says where a store is: SQLite in a data directory (the
// default), or a PostgreSQL database that several nodes share.
type Location struct {
	// Dir is the data directory: it holds the SQLite database (when URL
	// is empty) and, unless MasterKeyFile names another, the master key.
	Dir string
	// URL is a PostgreSQL connection URL (postgres://user:pass@host/db);
	// empty: SQLite in Dir.
	URL string
	// MasterKeyFile is the file of the master key that encrypts private
	// keys at rest; empty: master.key in Dir. Every node of one
	// PostgreSQL store needs a copy of the same file: the key is never
	// kept in the database.
	MasterKeyFile string
}

// Postgres reports whether the store is a PostgreSQL database.
func (l Location) Postgres() bool { return l.URL != "" }

// String names the store for messages, without a password.
func (l Location) String() string {
	if l.URL == "" {
		return l.Dir
	}
	return redactURL(l.URL)
}

func (l Location) masterKeyPath() string {
	if l.MasterKeyFile != "" {
		return l.MasterKeyFile
	}
	return filepath.Join(l.Dir, MasterKeyFile)
}

// Open opens the store in dataDir, creating the directory (mode 0700), the
// master key and the database on first use, and brings the schema up to
// date. It refuses a master.key readable by others than its owner.
func Open(ctx context.Context, dataDir string) (*Store, error) {
	return open(ctx, Location{Dir: dataDir}, true)
}

// OpenExisting is Open for a data directory that must hold a store
// already: when dataDir has no database it returns an error wrapping
// ErrNoStore and creates nothing (no directory, no master key). Commands
// that read or change a store use it, so that a mistyped directory is not
// silently a new, empty one.
func OpenExisting(ctx context.Context, dataDir string) (*Store, error) {
	return open(ctx, Location{Dir: dataDir}, false)
}

// OpenAt is Open for a store at loc: SQLite in loc.Dir, or the PostgreSQL
// database at loc.URL (its schema made or brought up to date, once, when
// several nodes start at the same moment).
func OpenAt(ctx context.Context, loc Location) (*Store, error) {
	return open(ctx, loc, true)
}

// OpenExistingAt is OpenExisting for a store at loc: a PostgreSQL database
// without hisp's schema gives ErrNoStore as an empty data directory does.
func OpenExistingAt(ctx context.Context, loc Location) (*Store, error) {
	return open(ctx, loc, false)
}

func open(ctx context.Context, loc Location, create bool) (*Store, error) {
	if loc.Dir == "" && loc.URL == "" {
		return nil, errors.New("open store: no data directory given")
	}
	if loc.Dir != "" {
		// SQLite takes a file: URI; a relative name would read as its host.
		abs, err := filepath.Abs(loc.Dir)
		if err != nil {
			return nil, fmt.Errorf("data directory %s: %w", loc.Dir, err)
		}
		loc.Dir = abs
	}
	if loc.Postgres() {
		return openPostgres(ctx, loc, create)
	}
	return openSQLite(ctx, loc, create)
}

func openSQLite(ctx context.Context, loc Location, create bool) (*Store, error) {
	dataDir := loc.Dir
	keyPath := loc.masterKeyPath()
	if !create {
		fi, err := os.Stat(filepath.Join(dataDir, DBFile))
		if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%w in %s", ErrNoStore, dataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
		}
		// A new master key could not decrypt the stored private keys.
		if _, err := os.Stat(keyPath); err != nil {
			return nil, fmt.Errorf("data directory %s has a database but no readable %s (restore it from a backup): %w", dataDir, keyPath, err)
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	keepFreedMemory()
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
	w := newSQLDB(db, engineSQLite)
	s := &Store{db: w, rdb: newSQLDB(rdb, engineSQLite), stmts: newStmtCache(w), loc: loc,
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
			break
		}
		if attempt >= 50 || !strings.Contains(err.Error(), "database is locked") || ctx.Err() != nil {
			s.Close()
			return nil, fmt.Errorf("open database %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.loadMasterKey(ctx, keyPath); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
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
	var opts *sql.TxOptions
	if s.db.engine == enginePostgres {
		opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	tx, err := s.rdb.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// Close closes the database.
func (s *Store) Close() error {
	s.nodeMu.Lock()
	s.closeNodeConn()
	s.nodeMu.Unlock()
	s.stmts.close()
	if s.rdb != s.db {
		s.rdb.Close()
	}
	return s.db.Close()
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.loc.Dir }

// Location returns where the store is.
func (s *Store) Location() Location { return s.loc }

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
	tx := &txn{dbTx: sqlTx, cache: s.stmts, defaultQuota: s.defaultQuota.Load()}
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

// The migrations of each engine: one numbered list, a file of each number
// in migrations/ (SQLite) and migrations_pg/ (PostgreSQL).
//
//go:embed migrations/*.sql migrations_pg/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order, checking that they
// are numbered 1, 2, 3...
func migrations(e engine) ([]migration, error) {
	dir := "migrations"
	if e == enginePostgres {
		dir = "migrations_pg"
	}
	entries, err := fs.ReadDir(migrationFiles, dir)
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
		data, err := migrationFiles.ReadFile(dir + "/" + e.Name())
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
	ms, err := migrations(s.db.engine)
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
			if err := tx.execRaw(ctx, m.sql); err != nil {
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
	if s.db.engine == enginePostgres {
		return errors.New("backup: a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, or its replication); keep a copy of the master key file with it")
	}
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
