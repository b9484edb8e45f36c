package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

const (
	// DefaultRefresh is the refresh interval of a bundle that sets none:
	// daily, our reading of DT-01.
	DefaultRefresh = 24 * time.Hour
	// MinRefresh is the shortest refresh interval honoured.
	MinRefresh = time.Minute
	// RetryAfterFailure is how soon a bundle whose last fetch failed is
	// tried again, when its refresh interval is longer.
	RetryAfterFailure = 5 * time.Minute
	// DefaultPoll is how often a Refresher rereads the sources, so that a
	// bundle added or removed by an admin command is seen within seconds.
	DefaultPoll = 5 * time.Second
)

// BundleStore is where a Refresher reads the configured bundles and records
// the outcome of each fetch.
type BundleStore interface {
	// Sources returns the configured bundles. It is called on every poll,
	// so it should be cheap.
	Sources(ctx context.Context) ([]BundleSource, error)
	// SaveState records the state of bundle id after a fetch attempt,
	// successful or not. State.Anchors is the set in use.
	SaveState(ctx context.Context, id int64, state BundleState) error
}

// BundleStateLoader may be implemented by a BundleStore that persists
// states. A Refresher then starts each bundle from its saved state: its
// anchors are in use at once, even before (or without) a successful fetch,
// and the refresh interval counts from the saved LastAttempt.
type BundleStateLoader interface {
	// LoadState returns the saved state of bundle id; ok is false if there
	// is none.
	LoadState(ctx context.Context, id int64) (state BundleState, ok bool, err error)
}

// RefresherOptions configure a Refresher.
type RefresherOptions struct {
	// HTTPClient fetches bundles; nil means a client with a 10 second
	// timeout.
	HTTPClient *http.Client
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// After waits between polls, like time.After (the default). Tests
	// inject a channel they control.
	After func(time.Duration) <-chan time.Time
	// Poll is the interval between polls; zero means DefaultPoll.
	Poll time.Duration
	// Leader, if set, says whether this node runs the refreshes now: when
	// several nodes share one store, one node at a time does (a job
	// lease, store.Job); nil runs it always.
	Leader func(context.Context) bool

	// Logger receives fetch outcomes; nil means slog.Default().
	Logger *slog.Logger
}

// Refresher keeps the anchors in a Bundles holder up to date: it fetches
// each configured bundle when its refresh interval has passed, swaps in the
// new anchors when the bundle changed, keeps the last good set when a fetch
// fails, and records every attempt in the store (DT-01).
type Refresher struct {
	store   BundleStore
	bundles *Bundles
	client  *http.Client
	now     func() time.Time
	after   func(time.Duration) <-chan time.Time
	poll    time.Duration
	log     *slog.Logger
	leader  func(context.Context) bool

	runMu sync.Mutex // serializes RefreshDue
	mu    sync.Mutex // protects known and the tracked states, held briefly
	known map[int64]*trackedBundle
}

type trackedBundle struct {
	src   BundleSource
	state BundleState
}

// NewRefresher returns a Refresher that reads sources from store and keeps
// bundles up to date.
func NewRefresher(store BundleStore, bundles *Bundles, opts RefresherOptions) *Refresher {
	r := &Refresher{
		store:   store,
		bundles: bundles,
		client:  opts.HTTPClient,
		now:     opts.Now,
		after:   opts.After,
		poll:    opts.Poll,
		leader:  opts.Leader,
		log:     opts.Logger,
		known:   map[int64]*trackedBundle{},
	}
	if r.client == nil {
		r.client = &http.Client{Timeout: defaultTimeout}
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.after == nil {
		r.after = time.After
	}
	if r.poll <= 0 {
		r.poll = DefaultPoll
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	return r
}

// Run refreshes the bundles that are due, then waits for the poll interval,
// until ctx is done. It returns ctx's error.
func (r *Refresher) Run(ctx context.Context) error {
	for {
		// Else another node refreshes; its fetches reach this node's trust
		// through the store.
		if r.leader == nil || r.leader(ctx) {
			if err := r.RefreshDue(ctx); err != nil && ctx.Err() == nil {
				r.log.Debug("trust bundle refresh pass had errors", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.after(r.poll):
		}
	}
}

// RefreshDue rereads the sources, forgets bundles no longer configured, and
// fetches every bundle that is due. It returns the errors of the pass,
// joined; a failed fetch does not stop the others.
func (r *Refresher) RefreshDue(ctx context.Context) error {
	r.runMu.Lock()
	defer r.runMu.Unlock()

	srcs, err := r.store.Sources(ctx)
	if err != nil {
		return fmt.Errorf("list trust bundles: %w", err)
	}
	now := r.now()
	present := map[int64]bool{}
	var errs []error
	for _, src := range srcs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		present[src.ID] = true
		prev, due := r.track(ctx, src, now)
		if !due {
			continue
		}
		state, changed, err := FetchBundle(ctx, r.client, src, prev, now)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		r.mu.Lock()
		r.known[src.ID].state = state
		r.mu.Unlock()
		_, held := r.bundles.Bundle(src.ID)
		switch {
		case err != nil:
			errs = append(errs, err)
			r.log.Warn("trust bundle fetch failed, keeping the last good anchors", "bundle", src.ID, "domain", src.Domain,
				"location", src.Location, "anchors", len(state.Anchors), "err", err)
		case changed:
			r.log.Info("trust bundle changed", "bundle", src.ID, "domain", src.Domain, "location", src.Location,
				"anchors", len(state.Anchors), "checksum", state.Checksum)
		}
		if (changed || !held) && len(state.Anchors) > 0 {
			r.bundles.Set(src.ID, src.Domain, state.Anchors)
		}
		if err := r.store.SaveState(ctx, src.ID, state); err != nil {
			errs = append(errs, fmt.Errorf("save state of trust bundle %d: %w", src.ID, err))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.known {
		if !present[id] {
			delete(r.known, id)
			r.bundles.Remove(id)
			r.log.Info("trust bundle removed", "bundle", id)
		}
	}
	return errors.Join(errs...)
}

// track returns the state of the bundle of src and whether it is due at now,
// starting it from the saved state when the store has one, and noticing
// configuration changes.
func (r *Refresher) track(ctx context.Context, src BundleSource, now time.Time) (BundleState, bool) {
	r.mu.Lock()
	t := r.known[src.ID]
	r.mu.Unlock()
	if t == nil {
		t = &trackedBundle{src: src}
		if loader, ok := r.store.(BundleStateLoader); ok {
			st, ok, err := loader.LoadState(ctx, src.ID)
			switch {
			case err != nil:
				r.log.Warn("loading saved trust bundle state", "bundle", src.ID, "err", err)
			case ok:
				t.state = st
				if len(st.Anchors) > 0 {
					r.bundles.Set(src.ID, src.Domain, st.Anchors)
				}
			}
		}
		r.mu.Lock()
		r.known[src.ID] = t
		r.mu.Unlock()
		return t.state, t.due(now)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := t.src
	t.src = src
	if old.Location != src.Location || !sameCert(old.Signer, src.Signer) {
		// Another bundle: reparse and fetch now, but keep the anchors in
		// use until the new one is good.
		t.state.Checksum = ""
		t.state.LastAttempt = time.Time{}
	}
	if normDomain(old.Domain) != normDomain(src.Domain) && len(t.state.Anchors) > 0 {
		r.bundles.Set(src.ID, src.Domain, t.state.Anchors)
	}
	return t.state, t.due(now)
}

// due reports whether the bundle should be fetched at now.
func (t *trackedBundle) due(now time.Time) bool {
	last := t.state.LastAttempt
	if last.IsZero() || now.Before(last) {
		return true
	}
	interval := t.src.Refresh
	if interval <= 0 {
		interval = DefaultRefresh
	}
	interval = max(interval, MinRefresh)
	if t.state.LastError != "" {
		interval = min(interval, RetryAfterFailure)
	}
	return !now.Before(last.Add(interval))
}

// State returns the state of bundle id after the last attempt of this
// Refresher, and whether the bundle is known.
func (r *Refresher) State(id int64) (BundleState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.known[id]
	if t == nil {
		return BundleState{}, false
	}
	return t.state, true
}

func sameCert(a, b *x509.Certificate) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}
