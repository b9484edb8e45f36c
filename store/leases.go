package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"hash/fnv"
	"os"
	"sync"
	"time"
)

// Nodes and leases: what lets several nodes share one store. A node has a
// name (SetNode); the queue's claims carry it with a lease the node renews
// (RenewClaims) while it works, and jobs that one node at a time must run
// (tracking timeouts, bundle refreshes, the queue's notices) are held
// through takeLease. A node that dies stops renewing: its claims and jobs
// pass to another node when their leases run out. With SQLite (one node)
// the same rules hold, and cost a row each.

// DefaultLease is how long a claim or a job stays with its node without a
// renewal.
const DefaultLease = time.Minute

// DefaultNode is the name of this process as a node: the host name and
// the data directory, so that a node restarted on the same machine knows
// its own claims from before (and takes them back at once) and two nodes
// on one machine differ by their data directories.
func DefaultNode(dataDir string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return host + ":" + dataDir
}

// SetNode names this process as a node of the store and sets how long its
// claims and jobs last without a renewal (0: DefaultLease). Call it before
// the store is used by a deliverer.
func (s *Store) SetNode(name string, lease time.Duration) {
	if lease <= 0 {
		lease = DefaultLease
	}
	s.node.Store(&nodeInfo{name: name, lease: lease})
}

// ErrNodeInUse is returned (wrapped) by HoldNode when another running
// process holds the node's name.
var ErrNodeInUse = errors.New("node name in use by another running node")

// nodeLockClass is the first key of the session advisory locks that hold
// node names on PostgreSQL ("hisp" as an int4; the two-key advisory lock
// space does not overlap the one-key space of migrationLock).
const nodeLockClass = 0x6869_7370

// HoldNode makes this process the one running node of its name (SetNode)
// for as long as the store is open: two processes given one name would
// take each other's queue claims and job leases as their own. On
// PostgreSQL a session advisory lock keyed by the name is held on a
// connection of its own (not one of the pool's); a process that dies
// loses it with its connection, so a node restarted at once gets its name
// back. An error wrapping ErrNodeInUse when another process holds the
// name. Called again (the gateway does, as the node renews its leases),
// it checks that the session still holds the lock and, when the session
// was lost (a database restart, a failover, a network cut), takes the lock
// again on a new one, ending the old session first when the server still
// runs it (it would hold the lock until TCP keepalive noticed). Nothing to
// do on SQLite, whose one process per data directory its caller ensures.
func (s *Store) HoldNode(ctx context.Context) error {
	if s.db.engine != enginePostgres {
		return nil
	}
	name, _ := s.Node()
	h := fnv.New32a()
	h.Write([]byte(name))
	key := int32(h.Sum32())
	s.nodeMu.Lock()
	defer s.nodeMu.Unlock()
	var lostPID uint32 // the backend of a session lost on our side
	if s.nodeConn != nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.nodeConn.Ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return ctx.Err() // held, or stopping: keep it to the end
		}
		lostPID = s.nodeConn.PgConn().PID()
		s.closeNodeConn()
	}
	c, err := pgx.ConnectConfig(ctx, s.pgConfig)
	if err != nil {
		return fmt.Errorf("hold node name %s: %w", name, err)
	}
	lock := func() (bool, error) {
		var ok bool
		err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(nodeLockClass), key).Scan(&ok)
		return ok, err
	}
	ok, err := lock()
	if err == nil && !ok && lostPID != 0 {
		// Held by our own lost session, the server not knowing it lost:
		// end it, then take the lock.
		var ended bool
		err = c.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted AND pid = $3`,
			int64(uint32(nodeLockClass)), int64(uint32(key)), int64(lostPID)).Scan(&ended)
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil // held by another process
		}
		for try := 0; err == nil && ended && !ok && try < 50; try++ {
			time.Sleep(100 * time.Millisecond) // the backend ends, its locks go
			ok, err = lock()
		}
	}
	if err != nil {
		c.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("hold node name %s: %w", name, err)
	}
	if !ok {
		c.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("%w: %q (give each node a name of its own: [store] node)", ErrNodeInUse, name)
	}
	s.nodeConn = c
	return nil
}

// closeNodeConn ends the session that holds the node's name (the lock
// ends with it); the caller holds nodeMu.
func (s *Store) closeNodeConn() {
	if s.nodeConn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.nodeConn.Close(ctx)
	s.nodeConn = nil
}

type nodeInfo struct {
	name  string
	lease time.Duration
}

// Node returns the name of this process as a node and its lease.
func (s *Store) Node() (name string, lease time.Duration) {
	if n := s.node.Load(); n != nil {
		return n.name, n.lease
	}
	return DefaultNode(s.loc.Dir), DefaultLease
}

// takeLease takes or renews the lease of job for this node until now plus
// the node's lease, and reports whether the node holds it: true when no
// node held it, the lease had run out, or this node held it already. A
// node runs the job only while it holds the lease, and renews it at least
// every third of the lease.
func (s *Store) takeLease(ctx context.Context, job string, now time.Time) (bool, error) {
	node, lease := s.Node()
	n, err := s.execAffected(ctx, "take lease "+job, `INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
		WHERE leases.holder = excluded.holder OR leases.expires <= ?`,
		job, node, millis(now.Add(lease)), millis(now))
	return n > 0, err
}

// execAffected runs one statement in a write transaction of its own and
// returns how many rows it changed; errors say what was being done.
func (s *Store) execAffected(ctx context.Context, what, query string, args ...any) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return n, nil
}

// ReleaseLease gives up this node's lease of job (a node that stops), so
// that another node takes the job at once.
func (s *Store) ReleaseLease(ctx context.Context, job string) error {
	node, _ := s.Node()
	_, err := s.execAffected(ctx, "release lease "+job, `DELETE FROM leases WHERE name = ? AND holder = ?`, job, node)
	return err
}

// Lease is a job's lease as stored.
type Lease struct {
	Job    string
	Holder string
	Until  time.Time
}

// Leases lists the jobs' leases (for monitoring: which node runs what).
func (s *Store) Leases(ctx context.Context) ([]Lease, error) {
	return queryAll(ctx, s.db, "list leases", func(r rowScanner) (Lease, error) {
		var l Lease
		var until int64
		err := r.Scan(&l.Job, &l.Holder, &until)
		l.Until = fromMillis(until)
		return l, err
	}, `SELECT name, holder, expires FROM leases ORDER BY name`)
}

// Job is a job that one node at a time runs, through its lease: Held takes
// or renews the lease, at most every third of the node's lease (between
// calls it answers from memory), so a loop may ask before every round.
type Job struct {
	s    *Store
	name string

	mu      sync.Mutex
	held    bool
	checked time.Time
}

// Job returns the job of that name.
func (s *Store) Job(name string) *Job { return &Job{s: s, name: name} }

// Held reports whether this node runs the job now; changed is set when
// that differs from the previous answer (for a log line).
func (j *Job) Held(ctx context.Context, now time.Time) (held, changed bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, lease := j.s.Node()
	if !j.checked.IsZero() && now.Sub(j.checked) < lease/3 && now.After(j.checked) {
		return j.held, false, nil
	}
	ok, err := j.s.takeLease(ctx, j.name, now)
	if err != nil {
		// Unsure: run nothing that must run once.
		changed = j.held
		j.held, j.checked = false, time.Time{}
		return false, changed, err
	}
	changed = ok != j.held || j.checked.IsZero()
	j.held, j.checked = ok, now
	return ok, changed, nil
}
