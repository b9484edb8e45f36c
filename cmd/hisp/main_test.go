package main

import (
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// TestMain stops the PostgreSQL server that tests of several nodes started
// (pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }
