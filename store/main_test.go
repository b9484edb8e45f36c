package store

import (
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// TestMain stops the PostgreSQL server the tests started (pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }
