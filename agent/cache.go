package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hisp-project/hisp/policy"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// Verdicts are kept this long at most: trusted ones until the certificate
// expires or trustedTTL passes (revocation is checked again after that),
// untrusted ones briefly, since a missing CRL or intermediate may come back.
const (
	trustedTTL   = 5 * time.Minute
	untrustedTTL = 30 * time.Second
	maxVerdicts  = 10000
)

// snapshot is what the agent knows of the store's configuration at one value
// of its change counter. Domains and anchors are read when it is made;
// certificates, keys, addresses and verdicts as they are first needed. A new
// snapshot replaces it when the counter moves, which drops all of it at once.
type snapshot struct {
	version int64
	checked atomic.Int64 // time.Now().UnixNano() of the last counter check

	domains map[string]bool
	in, out map[string]anchorSet // per domain

	rules map[string]map[store.Direction]policy.RuleSet // trust policies by domain and direction (policy.go)

	mu       sync.Mutex
	owners   map[string][]*localCert // by owner (address or domain)
	keys     map[int64]crypto.Signer // by certificate id
	addrs    map[string]bool         // local address exists
	verdicts map[string]cachedVerdict
}

// anchorSet is the anchors of one domain and direction, with a key that
// changes when they do.
type anchorSet struct {
	certs []*x509.Certificate
	key   string
}

// localCert is a certificate of the store, parsed.
type localCert struct {
	id     int64
	cert   *x509.Certificate
	chain  []*x509.Certificate
	hasKey bool
}

type cachedVerdict struct {
	v       trust.Verdict
	expires time.Time
}

// current returns the snapshot to use, reloading it when the store's change
// counter moved. It checks the counter at most every reload interval.
func (a *Agent) current(ctx context.Context) (*snapshot, error) {
	if a.st == nil {
		return nil, errors.New("agent: no store configured")
	}
	s := a.snap.Load()
	if s != nil && a.fresh(s) {
		return s, nil
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if s = a.snap.Load(); s != nil && a.fresh(s) {
		return s, nil
	}
	v, err := a.st.Changed(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if s != nil && s.version == v {
		s.checked.Store(time.Now().UnixNano())
		return s, nil
	}
	ns, err := a.load(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("agent: load configuration: %w", err)
	}
	a.snap.Store(ns)
	if s != nil {
		a.log.Info("agent: configuration changed, caches reloaded", "version", v)
	}
	return ns, nil
}

func (a *Agent) fresh(s *snapshot) bool {
	if a.reload < 0 {
		return false
	}
	return time.Since(time.Unix(0, s.checked.Load())) < a.reload
}

// load reads the domains and anchors of a new snapshot.
func (a *Agent) load(ctx context.Context, version int64) (*snapshot, error) {
	s := &snapshot{
		version:  version,
		domains:  map[string]bool{},
		in:       map[string]anchorSet{},
		out:      map[string]anchorSet{},
		owners:   map[string][]*localCert{},
		keys:     map[int64]crypto.Signer{},
		addrs:    map[string]bool{},
		verdicts: map[string]cachedVerdict{},
	}
	s.checked.Store(time.Now().UnixNano())
	domains, err := a.st.Domains(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range domains {
		s.domains[d.Name] = true
	}
	anchors, err := a.st.Anchors(ctx, "")
	if err != nil {
		return nil, err
	}
	in := map[string][]*x509.Certificate{}
	out := map[string][]*x509.Certificate{}
	for _, an := range anchors {
		c, err := an.Parse()
		if err != nil {
			a.log.Warn("agent: unreadable trust anchor skipped", "domain", an.Domain, "anchor", an.ID, "err", err)
			continue
		}
		// TV-05: inbound anchors judge signers, outbound ones recipients.
		if an.Direction.Includes(store.DirectionIn) {
			in[an.Domain] = append(in[an.Domain], c)
		}
		if an.Direction.Includes(store.DirectionOut) {
			out[an.Domain] = append(out[an.Domain], c)
		}
	}
	for d, list := range in {
		s.in[d] = newAnchorSet(list)
	}
	for d, list := range out {
		s.out[d] = newAnchorSet(list)
	}
	if err := a.loadPolicies(ctx, s); err != nil { // policy.go
		return nil, err
	}
	return s, nil
}

func newAnchorSet(list []*x509.Certificate) anchorSet {
	fps := make([]string, len(list))
	for i, c := range list {
		sum := sha256.Sum256(c.Raw)
		fps[i] = string(sum[:])
	}
	sort.Strings(fps)
	h := sha256.New()
	for _, fp := range fps {
		h.Write([]byte(fp))
	}
	return anchorSet{certs: list, key: hex.EncodeToString(h.Sum(nil)[:12])}
}

// owner returns the parsed certificates of an owner (an address or a domain).
func (s *snapshot) owner(ctx context.Context, a *Agent, owner string) ([]*localCert, error) {
	s.mu.Lock()
	list, ok := s.owners[owner]
	s.mu.Unlock()
	if ok {
		return list, nil
	}
	stored, err := a.st.Certificates(ctx, store.CertFilter{Owner: owner})
	if err != nil {
		return nil, err
	}
	list = []*localCert{}
	for _, sc := range stored {
		c, err := sc.Parse()
		if err != nil {
			a.log.Warn("agent: unreadable local certificate skipped", "owner", owner, "certificate", sc.ID, "err", err)
			continue
		}
		lc := &localCert{id: sc.ID, cert: c, hasKey: sc.HasKey}
		for _, der := range sc.Chain {
			if ic, err := x509.ParseCertificate(der); err == nil {
				lc.chain = append(lc.chain, ic)
			}
		}
		list = append(list, lc)
	}
	s.mu.Lock()
	s.owners[owner] = list
	s.mu.Unlock()
	return list, nil
}

// key returns the private key of a local certificate.
func (s *snapshot) key(ctx context.Context, a *Agent, id int64) (crypto.Signer, error) {
	s.mu.Lock()
	k, ok := s.keys[id]
	s.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := a.st.PrivateKey(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.keys[id] = k
	s.mu.Unlock()
	return k, nil
}

// isAddress reports whether mail for address has a taker (store.TakesMail,
// the backbone's rule too). Only takers are cached: a relay may send as an
// unknown address at any time.
func (s *snapshot) isAddress(ctx context.Context, a *Agent, address string) (bool, error) {
	s.mu.Lock()
	ok := s.addrs[address]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	ok, err := a.st.TakesMail(ctx, address)
	if err != nil || !ok {
		return false, err
	}
	s.mu.Lock()
	if len(s.addrs) < maxVerdicts {
		s.addrs[address] = true
	}
	s.mu.Unlock()
	return true, nil
}

// validate runs the Validator, or answers from the verdict cache. The cache
// key covers everything the verdict depends on: the certificate, the
// intermediates offered, the address, the purpose and the anchors.
func (s *snapshot) validate(ctx context.Context, a *Agent, req trust.Request, anchors anchorSet) trust.Verdict {
	req.Anchors = anchors.certs
	h := sha256.New()
	h.Write(req.Cert.Raw)
	for _, c := range req.Intermediates {
		sum := sha256.Sum256(c.Raw)
		h.Write(sum[:])
	}
	fmt.Fprintf(h, "\x00%s\x00%d\x00%s", req.Address, req.Purpose, anchors.key)
	key := string(h.Sum(nil))
	now := a.now()
	s.mu.Lock()
	cv, ok := s.verdicts[key]
	s.mu.Unlock()
	if ok && now.Before(cv.expires) {
		return cv.v
	}
	v := a.val.Validate(ctx, req)
	if ctx.Err() != nil || v.Provisional {
		// Not cached: the verdict may be the context's end, or a
		// revocation outage's (trust.DeferUnavailable).
		return v
	}
	exp := now.Add(untrustedTTL)
	if v.Trusted {
		exp = now.Add(trustedTTL)
		if req.Cert.NotAfter.Before(exp) {
			exp = req.Cert.NotAfter
		}
	}
	s.mu.Lock()
	if len(s.verdicts) >= maxVerdicts {
		clear(s.verdicts)
	}
	s.verdicts[key] = cachedVerdict{v: v, expires: exp}
	s.mu.Unlock()
	return v
}
