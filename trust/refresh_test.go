package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// fakeStore is a BundleStore in memory. Saves are also sent on saved, when
// set.
type fakeStore struct {
	mu      sync.Mutex
	sources []BundleSource
	states  map[int64]BundleState
	saves   int
	saved   chan int64
	loads   map[int64]BundleState // for LoadState, see loaderStore
}

func (s *fakeStore) Sources(ctx context.Context) ([]BundleSource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]BundleSource(nil), s.sources...), nil
}

func (s *fakeStore) SaveState(ctx context.Context, id int64, st BundleState) error {
	s.mu.Lock()
	if s.states == nil {
		s.states = map[int64]BundleState{}
	}
	s.states[id] = st
	s.saves++
	ch := s.saved
	s.mu.Unlock()
	if ch != nil {
		ch <- id
	}
	return nil
}

func (s *fakeStore) setSources(l ...BundleSource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sources = l
}

func (s *fakeStore) state(id int64) (BundleState, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states[id], s.saves
}

// loaderStore also implements BundleStateLoader.
type loaderStore struct{ fakeStore }

func (s *loaderStore) LoadState(ctx context.Context, id int64) (BundleState, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.loads[id]
	return st, ok, nil
}

// fakeClock is a settable time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestRefreshDue(t *testing.T) {
	ctx := context.Background()
	bp := newBundlePKI(t)
	v1, v2 := makeP7B(t, bp.a.cert), makeP7B(t, bp.b.cert)
	bs := newBundleServer(t, v1)
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	store := &fakeStore{}
	store.setSources(BundleSource{ID: 7, Domain: "B.example", Location: bs.srv.URL, Refresh: time.Hour})
	var bundles Bundles
	r := NewRefresher(store, &bundles, RefresherOptions{HTTPClient: bs.srv.Client(), Now: clock.now, Logger: discardLogger()})

	// First pass fetches.
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.a.cert)
	st, saves := store.state(7)
	if saves != 1 || st.Checksum != checksum(v1) || !st.LastSuccess.Equal(clock.now()) {
		t.Errorf("saved state %+v after %d saves", st, saves)
	}

	// Not due yet: no fetch.
	clock.advance(59 * time.Minute)
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bs.hitCount(); n != 1 {
		t.Errorf("%d fetches before the interval passed, want 1", n)
	}

	// Due, unchanged: state saved, anchors the same.
	clock.advance(time.Minute)
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bs.hitCount(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	if st, saves := store.state(7); saves != 2 || st.Checksum != checksum(v1) || !st.LastAttempt.Equal(clock.now()) {
		t.Errorf("saved state %+v after %d saves", st, saves)
	}

	// Changed: swapped.
	bs.set(v2, http.StatusOK)
	clock.advance(time.Hour)
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.b.cert)
	if st, _ := store.state(7); st.Checksum != checksum(v2) {
		t.Errorf("checksum %s after change", st.Checksum)
	}

	// Failure: last good set kept, error recorded, retried sooner.
	bs.set(nil, http.StatusInternalServerError)
	clock.advance(time.Hour)
	if err := r.RefreshDue(ctx); err == nil {
		t.Error("no error from a failing fetch")
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.b.cert)
	if st, _ := store.state(7); st.LastError == "" || st.Checksum != checksum(v2) || len(st.Anchors) != 1 {
		t.Errorf("state after failure: %+v", st)
	}
	if st, ok := r.State(7); !ok || st.LastError == "" {
		t.Errorf("refresher state after failure: %+v", st)
	}
	bs.set(v1, http.StatusOK)
	clock.advance(RetryAfterFailure)
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.a.cert)
	if st, _ := store.state(7); st.LastError != "" {
		t.Errorf("error kept after success: %q", st.LastError)
	}

	// Location change: fetched at once.
	bs.set(v2, http.StatusOK)
	store.setSources(BundleSource{ID: 7, Domain: "b.example", Location: bs.srv.URL + "/other", Refresh: time.Hour})
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.b.cert)

	// Removed: anchors gone.
	store.setSources()
	if err := r.RefreshDue(ctx); err != nil {
		t.Fatal(err)
	}
	if a := bundles.Anchors("b.example"); len(a) != 0 {
		t.Errorf("%d anchors after removal", len(a))
	}
	if _, ok := bundles.Bundle(7); ok {
		t.Error("bundle 7 still held")
	}
}

func TestRefresherRun(t *testing.T) {
	bp := newBundlePKI(t)
	bs := newBundleServer(t, makeP7B(t, bp.a.cert))
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	store := &fakeStore{saved: make(chan int64)}
	store.setSources(BundleSource{ID: 1, Domain: "b.example", Location: bs.srv.URL, Refresh: time.Hour})
	var bundles Bundles
	ticks := make(chan time.Time)
	r := NewRefresher(store, &bundles, RefresherOptions{
		HTTPClient: bs.srv.Client(),
		Now:        clock.now,
		After:      func(time.Duration) <-chan time.Time { return ticks },
		Logger:     discardLogger(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	<-store.saved // first pass
	wantAnchors(t, bundles.Anchors("b.example"), bp.a.cert)

	// A tick before the interval: nothing fetched. A tick after it: the
	// change is picked up.
	// The second send completes only once the first tick's pass is over.
	bs.set(makeP7B(t, bp.a.cert, bp.b.cert), http.StatusOK)
	ticks <- clock.now()
	ticks <- clock.now()
	if n := bs.hitCount(); n != 1 {
		t.Errorf("%d fetches before the interval passed, want 1", n)
	}
	// The pass of the second tick may see the advanced clock or not.
	clock.advance(time.Hour)
	select {
	case ticks <- clock.now():
		<-store.saved
	case <-store.saved:
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.a.cert, bp.b.cert)
	if n := bs.hitCount(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}

func TestRefresherLoadsSavedState(t *testing.T) {
	bp := newBundlePKI(t)
	bs := newBundleServer(t, nil)
	bs.set(nil, http.StatusInternalServerError)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	store := &loaderStore{}
	store.setSources(BundleSource{ID: 3, Domain: "b.example", Location: bs.srv.URL})
	store.loads = map[int64]BundleState{3: {Checksum: "x", Anchors: []*x509.Certificate{bp.a.cert}, LastAttempt: now.Add(-time.Hour), LastSuccess: now.Add(-time.Hour)}}
	var bundles Bundles
	r := NewRefresher(store, &bundles, RefresherOptions{HTTPClient: bs.srv.Client(), Now: func() time.Time { return now }, Logger: discardLogger()})
	if err := r.RefreshDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Saved an hour ago, refreshed daily: not fetched, saved anchors used.
	if n := bs.hitCount(); n != 0 {
		t.Errorf("%d fetches, want 0", n)
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.a.cert)

	// A day later the server is down: the saved anchors stay.
	now = now.Add(DefaultRefresh)
	if err := r.RefreshDue(context.Background()); err == nil {
		t.Error("no error")
	}
	wantAnchors(t, bundles.Anchors("b.example"), bp.a.cert)
}

func TestBundlesAtomic(t *testing.T) {
	bp := newBundlePKI(t)
	setA := []*x509.Certificate{bp.a.cert}
	setB := []*x509.Certificate{bp.b.cert, bp.signer.cert, bp.other.cert}
	var b Bundles
	if a := b.Anchors("b.example"); a != nil {
		t.Fatalf("zero Bundles has anchors: %v", a)
	}
	b.Set(1, "b.example", setA)
	b.Set(2, "c.example", setB)
	if ids := b.IDs(); len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Errorf("IDs %v", ids)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := b.Anchors("B.EXAMPLE.")
				if !(len(a) == 1 && a[0] == setA[0]) && !(len(a) == 3 && a[0] == setB[0] && a[2] == setB[2]) {
					t.Errorf("reader saw a mixed set of %d anchors", len(a))
					return
				}
			}
		})
	}
	for i := range 2000 {
		if i%2 == 0 {
			b.Set(1, "b.example", setB)
		} else {
			b.Set(1, "b.example", setA)
		}
	}
	close(stop)
	wg.Wait()

	// Two bundles of one domain: union without duplicates.
	b.Set(1, "b.example", setA)
	b.Set(3, "b.example", append([]*x509.Certificate{bp.a.cert}, setB...))
	wantAnchors(t, b.Anchors("b.example"), bp.a.cert, bp.b.cert, bp.signer.cert, bp.other.cert)
	b.Remove(1)
	b.Remove(3)
	if a := b.Anchors("b.example"); len(a) != 0 {
		t.Errorf("%d anchors after removal", len(a))
	}
}
