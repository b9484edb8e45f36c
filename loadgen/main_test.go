package loadgen

import (
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// TestMain stops the PostgreSQL server BenchmarkGateway's queue-postgres
// runs started (pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }
