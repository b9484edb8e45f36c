package store

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// TestMain stops the PostgreSQL server the tests started (pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }

// The store's tests run on SQLite, and on PostgreSQL with
// HISP_TEST_STORE=postgres (make test runs both): a test's data directory
// then stands for a fresh database of its own on pgtest's server, the same
// one each time the test opens that directory again.
var testDatabases sync.Map // data directory → PostgreSQL URL

// testPostgres reports whether the tests run on PostgreSQL.
func testPostgres() bool { return os.Getenv("HISP_TEST_STORE") == "postgres" }

// testLocation is the store of a test's data directory on the engine under
// test.
func testLocation(t testing.TB, dir string) Location {
	t.Helper()
	if !testPostgres() {
		return Location{Dir: dir}
	}
	if u, ok := testDatabases.Load(dir); ok {
		return Location{Dir: dir, URL: u.(string)}
	}
	u := pgtest.URL(t)
	testDatabases.Store(dir, u)
	t.Cleanup(func() { testDatabases.Delete(dir) })
	return Location{Dir: dir, URL: u}
}

// testOpen opens the store of a test's data directory on the engine under
// test.
func testOpen(t testing.TB, dir string) (*Store, error) {
	t.Helper()
	return OpenAt(context.Background(), testLocation(t, dir))
}

// sqliteOnly skips a test of what only the SQLite store has (its files,
// its migrations from old schemas).
func sqliteOnly(t testing.TB) {
	if testPostgres() {
		t.Skip("SQLite only")
	}
}
