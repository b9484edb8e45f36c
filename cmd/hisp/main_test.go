package main

import (
	"os"
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// TestMain stops the PostgreSQL server that tests of several nodes started
// (pgtest) and removes the hisp binary the cluster tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	removeClusterBinary()
	os.Exit(code)
}
