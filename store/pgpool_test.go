package store

import (
	"context"
	"sync"
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// TestPostgresPoolKeepsConnections: a node's pool keeps the connections it
// opened under load instead of closing those beyond a smaller idle limit
// and opening them again at the next burst (a PostgreSQL connection is a
// forked backend, an authentication and a fresh statement cache: with
// clients that connect for every message, churn doubled PostgreSQL's CPU
// per message in scripts/bench-store.sh). Three bursts of as many
// concurrent queries as the pool allows are served by at most that many
// backends (counted by pg_backend_pid).
func TestPostgresPoolKeepsConnections(t *testing.T) {
	ctx := context.Background()
	s, err := OpenAt(ctx, Location{Dir: t.TempDir(), URL: pgtest.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	open := s.db.Stats().MaxOpenConnections
	var mu sync.Mutex
	pids := map[int64]bool{}
	for range 3 {
		var wg sync.WaitGroup
		for range open {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var pid int64
				// Held a moment, so that the burst needs the whole pool.
				if err := s.db.QueryRowContext(ctx, `SELECT pg_backend_pid() FROM pg_sleep(0.05)`).Scan(&pid); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				pids[pid] = true
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	if len(pids) > open {
		t.Errorf("3 bursts of %d queries used %d backends: the pool closed connections and opened new ones", open, len(pids))
	}
	t.Logf("%d backends served 3 bursts of %d queries", len(pids), open)
}
