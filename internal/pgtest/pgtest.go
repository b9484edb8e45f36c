// Package pgtest gives tests a real PostgreSQL server: one per test binary,
// shared by its tests, with a fresh empty database for each call to URL.
//
// The server is the one HISP_TEST_POSTGRES names (a URL of an admin
// database, e.g. postgres://hisp@127.0.0.1:5432/postgres?sslmode=disable,
// whose user may CREATE DATABASE), or else one started on first use from the
// installed PostgreSQL binaries (Debian package postgresql: make test-deps):
// initdb into a directory under os.TempDir(), trust authentication, TCP on
// 127.0.0.1 only, durability off (fsync, synchronous_commit,
// full_page_writes) since nothing outlives the test binary. As root it runs
// as the unprivileged user postgres (PostgreSQL refuses root).
//
// A package using URL stops the server it started at the end through
// TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it the server still goes with the test binary (on Linux it gets
// SIGQUIT when the binary exits), and the next start removes the directories
// of servers whose test binary is gone, e.g. one killed by go test -timeout.
//
// Without PostgreSQL binaries URL skips the test, unless the environment
// variable CI is "true": then it fails, so that CI really runs these tests.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// EnvURL is the environment variable naming a running server's admin
// database; when set no server is started.
const EnvURL = "HISP_TEST_POSTGRES"

// errNoBinaries is returned when the PostgreSQL server binaries are not
// installed: tests skip (fail in CI).
var errNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found in `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH: install the Debian package postgresql (make test-deps) or set " + EnvURL + " to a running server's admin database URL")

// shared is the one server of the test binary, made on first use.
var shared struct {
	mu      sync.Mutex
	started bool
	stopped bool
	srv     *server
	err     error
}

// server is a PostgreSQL server and an admin connection to it.
type server struct {
	admin    *sql.DB
	adminURL *url.URL
	local    *localServer // nil for HISP_TEST_POSTGRES
}

// get returns the shared server, starting it on first use.
func get() (*server, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.stopped {
		return nil, errors.New("server already stopped (URL called after Main's tests ended)")
	}
	if !shared.started {
		shared.started = true
		shared.srv, shared.err = open()
	}
	return shared.srv, shared.err
}

func open() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if env := os.Getenv(EnvURL); env != "" {
		u, err := url.Parse(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvURL, err)
		}
		db, err := connect(ctx, env)
		if err != nil {
			return nil, fmt.Errorf("%s=%s: %w", EnvURL, u.Redacted(), err)
		}
		return &server{admin: db, adminURL: u}, nil
	}
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	ls, err := startLocal(ctx, bin)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(ls.url("postgres"))
	db, err := connect(ctx, u.String())
	if err != nil {
		ls.stop()
		return nil, err
	}
	return &server{admin: db, adminURL: u, local: ls}, nil
}

// connect opens a database/sql pool and waits until it answers.
func connect(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// URL returns the URL of a new empty database on the shared server, for
// this test only: it is dropped when the test ends (connections still open
// to it are ended). Without PostgreSQL binaries it skips the test (fails
// when CI=true).
func URL(t testing.TB) string {
	t.Helper()
	s, err := get()
	if errors.Is(err, errNoBinaries) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v (CI=true: PostgreSQL tests must run)", err)
		}
		t.Skipf("pgtest: %v", err)
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	name := "hisp_test_" + hex.EncodeToString(rnd[:])
	ctx := context.Background()
	// Name is [a-z0-9_]: no quoting needed. template0: never connected to,
	// so concurrent creations from other test binaries do not conflict.
	if _, err := s.admin.ExecContext(ctx, `CREATE DATABASE `+name+` TEMPLATE template0 ENCODING 'UTF8'`); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		if _, err := s.admin.ExecContext(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u := *s.adminURL
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// Main runs the tests, stops a server started for them and exits with
// their result. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop closes the admin connection and stops the server if this test
// binary started one (fast shutdown), removing its directory. Main calls
// it; URL fails after it.
func Stop() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.stopped {
		return
	}
	shared.stopped = true
	s := shared.srv
	if s == nil {
		return
	}
	s.admin.Close()
	if s.local != nil {
		s.local.stop()
	}
}
