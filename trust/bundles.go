package trust

import (
	"crypto/x509"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Bundles holds the current anchors of every trust bundle, by bundle ID and
// by local domain. Updates replace a bundle's anchors atomically: a reader
// sees the set before or after an update, never a mix (DT-01). The zero
// value is an empty holder ready to use; it is safe for concurrent use.
//
// Slices returned by Bundles are shared and must not be modified.
type Bundles struct {
	mu  sync.Mutex // serializes writers
	cur atomic.Pointer[bundleSnapshot]
}

// bundleSnapshot is immutable once published.
type bundleSnapshot struct {
	byID     map[int64]bundleEntry
	byDomain map[string][]*x509.Certificate // union of the domain's bundles
}

type bundleEntry struct {
	domain  string
	anchors []*x509.Certificate
}

func (b *Bundles) load() *bundleSnapshot {
	if s := b.cur.Load(); s != nil {
		return s
	}
	return &bundleSnapshot{}
}

// Set replaces the anchors of bundle id, which provides anchors for domain.
// The slice is kept; the caller must not modify it afterwards.
func (b *Bundles) Set(id int64, domain string, anchors []*x509.Certificate) {
	b.update(func(m map[int64]bundleEntry) {
		m[id] = bundleEntry{normDomain(domain), anchors}
	})
}

// Remove forgets bundle id.
func (b *Bundles) Remove(id int64) {
	b.update(func(m map[int64]bundleEntry) {
		delete(m, id)
	})
}

// update copies the current set, applies fn and publishes the result.
func (b *Bundles) update(fn func(map[int64]bundleEntry)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.load()
	byID := make(map[int64]bundleEntry, len(old.byID)+1)
	for id, e := range old.byID {
		byID[id] = e
	}
	fn(byID)

	// Union per domain, in bundle ID order, without duplicates.
	ids := make([]int64, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	byDomain := map[string][]*x509.Certificate{}
	seen := map[string]map[string]bool{}
	for _, id := range ids {
		e := byID[id]
		if seen[e.domain] == nil {
			seen[e.domain] = map[string]bool{}
		}
		for _, c := range e.anchors {
			if c != nil && !seen[e.domain][string(c.Raw)] {
				seen[e.domain][string(c.Raw)] = true
				byDomain[e.domain] = append(byDomain[e.domain], c)
			}
		}
	}
	b.cur.Store(&bundleSnapshot{byID: byID, byDomain: byDomain})
}

// Bundle returns the current anchors of bundle id, and whether it is known.
func (b *Bundles) Bundle(id int64) ([]*x509.Certificate, bool) {
	e, ok := b.load().byID[id]
	return e.anchors, ok
}

// Anchors returns the anchors of all bundles of domain (case-insensitive).
func (b *Bundles) Anchors(domain string) []*x509.Certificate {
	return b.load().byDomain[normDomain(domain)]
}

// IDs returns the IDs of the bundles held, in ascending order.
func (b *Bundles) IDs() []int64 {
	s := b.load()
	ids := make([]int64, 0, len(s.byID))
	for id := range s.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}
