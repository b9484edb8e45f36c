package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// A PostgreSQL store: several hisp nodes share one database (one queue, one
// set of mailboxes, one tracking table, one configuration), so that the
// nodes stay stateless and mail keeps flowing when one of them dies.

// migrationLock is the key of the session advisory lock the nodes take
// while they bring the schema up to date, so that nodes started at the same
// moment migrate once, one after the other.
const migrationLock = 0x6869_7370_0001 // "hisp", 1

func openPostgres(ctx context.Context, loc Location, create bool) (*Store, error) {
	if create && loc.Dir != "" {
		// The data directory still holds this node's own files (TLS
		// keys made on first start, by default the master key).
		if err := os.MkdirAll(loc.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	cc, err := pgx.ParseConfig(loc.URL)
	if err != nil {
		return nil, fmt.Errorf("store url %s: %w", redactURL(loc.URL), err)
	}
	db := stdlib.OpenDB(*cc)
	// A node's writers queue on writeMu, its readers (IMAP, the admin
	// page, the deliverer) run beside them.
	// As many kept idle as may be open: a connection closed after a
	// burst is a backend to fork, authenticate and prepare statements on
	// again at the next (TestPostgresPoolKeepsConnections); idle ones go
	// after five minutes.
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	w := newSQLDB(db, enginePostgres)
	s := &Store{db: w, rdb: w, stmts: newStmtCache(w), loc: loc,
		creds:    newCredentialCache(DefaultCredentialCacheTTL),
		pgConfig: cc}
	fail := func(err error) (*Store, error) {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", loc, err)
	}
	if err := db.PingContext(ctx); err != nil {
		return fail(err)
	}
	if !create {
		ok, err := s.pgHasSchema(ctx)
		if err != nil {
			return fail(err)
		}
		if !ok {
			s.Close()
			return nil, fmt.Errorf("%w in %s", ErrNoStore, loc)
		}
		if _, err := os.Stat(loc.masterKeyPath()); err != nil {
			s.Close()
			return nil, fmt.Errorf("store %s: no readable master key file %s (copy it from another node): %w", loc, loc.masterKeyPath(), err)
		}
	}
	if err := s.migrateLocked(ctx); err != nil {
		return fail(err)
	}
	if err := s.loadMasterKey(ctx, loc.masterKeyPath()); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// pgHasSchema reports whether the database holds hisp's schema.
func (s *Store) pgHasSchema(ctx context.Context) (bool, error) {
	var name sql.NullString
	if err := s.db.QueryRowContext(ctx, `SELECT to_regclass('schema_migrations')::text`).Scan(&name); err != nil {
		return false, fmt.Errorf("look for hisp's schema: %w", err)
	}
	return name.Valid, nil
}

// migrateLocked runs migrate holding the migration advisory lock on a
// connection of its own.
func (s *Store) migrateLocked(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("wait for the migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	return s.migrate(ctx)
}

// redactURL returns a connection URL without its password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable store url)"
	}
	return u.Redacted()
}

// mailChannel is the channel of the mail change notifications (migration
// 0016).
const mailChannel = "hisp_mail"

// MailNotifications returns a channel that receives a value soon after
// another node (or process) changes mail, until ctx ends: a PostgreSQL
// LISTEN on a connection of its own, made again after a failure. It is nil
// for SQLite, whose readers poll (MailChanged). Values are not queued: a
// receiver that was busy gets one for several changes.
func (s *Store) MailNotifications(ctx context.Context, log func(msg string, err error)) <-chan struct{} {
	if s.pgConfig == nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	go func() {
		for wait := time.Second; ctx.Err() == nil; {
			start := time.Now()
			err := s.listen(ctx, ch)
			if ctx.Err() != nil {
				return
			}
			if time.Since(start) > time.Minute {
				wait = time.Second // it had worked: a new failure starts again
			}
			if log != nil {
				log("listen for mail changes (retrying)", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Minute)
		}
	}()
	return ch
}

// listen runs one LISTEN connection until it fails or ctx ends.
func (s *Store) listen(ctx context.Context, ch chan<- struct{}) error {
	conn, err := pgx.ConnectConfig(ctx, s.pgConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+mailChannel); err != nil {
		return err
	}
	// A change made while this connection was being made is not missed:
	// the receiver looks once now.
	select {
	case ch <- struct{}{}:
	default:
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
