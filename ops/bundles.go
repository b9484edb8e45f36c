package ops

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// BundleInfo is a trust bundle as listed.
type BundleInfo struct {
	ID          int64      `json:"id"`
	Domain      string     `json:"domain"`
	Location    string     `json:"location"`
	Direction   string     `json:"direction"`
	Refresh     string     `json:"refresh"`
	Signed      bool       `json:"signed"`
	Anchors     int        `json:"anchors"`
	Checksum    string     `json:"checksum_sha256,omitempty"`
	LastAttempt *time.Time `json:"last_attempt"`
	LastSuccess *time.Time `json:"last_success"`
	LastError   string     `json:"last_error,omitempty"`
	Created     *time.Time `json:"created,omitempty"`
}

func bundleInfo(b store.Bundle) BundleInfo {
	return BundleInfo{ID: b.ID, Domain: b.Domain, Location: b.Location, Direction: string(b.Direction),
		Refresh: b.Refresh.String(), Signed: b.Signer != nil, Anchors: b.Anchors, Checksum: b.Checksum,
		LastAttempt: optTime(b.LastAttempt), LastSuccess: optTime(b.LastSuccess), LastError: b.LastError,
		Created: optTime(b.Created)}
}

// maxRefresh is the longest refresh interval: a bundle not read for a
// year has lost its point.
const maxRefresh = 366 * 24 * time.Hour

// ParseRefresh parses a refresh interval: a Go duration ("90m", "6h") or a
// number of days ("1d"), from trust.MinRefresh to a year; "" is a day.
func ParseRefresh(s string) (time.Duration, error) {
	if s == "" {
		return 24 * time.Hour, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > int(maxRefresh/(24*time.Hour)) {
			return 0, invalidf("invalid refresh interval %q: want 1d to 366d, or a duration such as 6h", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, invalidf("invalid refresh interval %q: want a duration such as 6h, 90m or 1d", s)
		}
	}
	if d < trust.MinRefresh {
		return 0, invalidf("refresh interval %s is shorter than %s", d, trust.MinRefresh)
	}
	if d > maxRefresh {
		return 0, invalidf("refresh interval %s is longer than a year", d)
	}
	return d, nil
}

// BundleLocation returns where a bundle is read from: an http or https URL
// as given, a file as an absolute path (the server may run elsewhere).
// Files only with files set: the web and the API take URLs only, so that
// nobody reads the server's files through them.
func BundleLocation(arg string, files bool) (string, error) {
	if strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://") {
		if u, err := url.Parse(arg); err != nil || u.Host == "" {
			return "", invalidf("invalid bundle URL %q", arg)
		}
		return arg, nil
	}
	if !files {
		return "", invalidf("unsupported bundle location %q: want an https URL (or http for a signed bundle)", arg)
	}
	if p, ok := strings.CutPrefix(arg, "file://"); ok {
		arg = p
	} else if strings.Contains(arg, "://") {
		return "", invalidf("unsupported bundle location %q: want an http or https URL or a file", arg)
	}
	p, err := filepath.Abs(arg)
	if err != nil {
		return "", invalidf("%v", err)
	}
	return p, nil
}

// CheckBundleTransport applies DT-01 to a bundle's location: anchors come
// over HTTPS with the server's certificate checked, or signed by a pinned
// signer; plain http of an unsigned bundle only from this machine or on an
// explicit opt-in (allowHTTP).
func CheckBundleTransport(location string, signed, allowHTTP bool) error {
	if strings.HasPrefix(location, "http://") && !signed && !allowHTTP && !loopbackURL(location) {
		return invalidf("%s is plain http and the bundle is not signed: anyone on the path could add trust anchors; use https, a CMS-signed bundle with --signer FILE, or --allow-http to accept the risk", location)
	}
	return nil
}

// loopbackURL reports whether a URL's host is this machine (localhost or a
// loopback address), where nobody else is on the path.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

// BundleRequest is a bundle to add.
type BundleRequest struct {
	Domain    string
	Location  string // as BundleLocation returns it
	Direction store.Direction
	Refresh   time.Duration // 0: a day
	Signer    *x509.Certificate
	// NoFetch records the bundle without fetching it (the server will).
	NoFetch bool
	// AllowHTTP accepts an unsigned bundle over plain http.
	AllowHTTP bool
}

// BundleAdded is the result of AddBundle.
type BundleAdded struct {
	Bundle   BundleInfo
	Fetched  bool
	Warnings []string
}

// fetchTimeout bounds one fetch made for an admin who waits for it.
const fetchTimeout = 30 * time.Second

// AddBundle records a trust bundle of a local domain. Unless NoFetch, it is
// fetched first, so that a wrong location or format is reported now and
// nothing is recorded; its certificates become anchors at once. The server
// refreshes it on its interval (TA-03).
func (o *Ops) AddBundle(ctx context.Context, req BundleRequest) (BundleAdded, error) {
	domain, err := o.domain(ctx, req.Domain)
	if err != nil {
		return BundleAdded{}, err
	}
	if req.Refresh == 0 {
		req.Refresh = 24 * time.Hour
	}
	if req.Refresh < trust.MinRefresh || req.Refresh > maxRefresh {
		return BundleAdded{}, invalidf("refresh interval %s: want %s to a year", req.Refresh, trust.MinRefresh)
	}
	if req.Direction == "" {
		req.Direction = store.DirectionBoth
	}
	if _, err := store.ParseDirection(string(req.Direction)); err != nil {
		return BundleAdded{}, invalidf("%v", err)
	}
	if req.Location == "" {
		return BundleAdded{}, invalidf("no bundle location")
	}
	if err := CheckBundleTransport(req.Location, req.Signer != nil, req.AllowHTTP); err != nil {
		return BundleAdded{}, err
	}
	var res BundleAdded
	var state trust.BundleState
	if !req.NoFetch {
		src := trust.BundleSource{Domain: domain, Location: req.Location, Signer: req.Signer, Refresh: req.Refresh}
		fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		state, _, err = trust.FetchBundle(fctx, o.HTTPClient, src, trust.BundleState{}, o.now())
		cancel()
		if err != nil {
			return BundleAdded{}, refusedf("%v; nothing recorded", err)
		}
		res.Fetched = true
	} else if !strings.Contains(req.Location, "://") {
		if _, err := os.Stat(req.Location); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
		}
	}
	b := store.Bundle{Domain: domain, Location: req.Location, Direction: req.Direction, Refresh: req.Refresh}
	if req.Signer != nil {
		b.Signer = req.Signer.Raw
	}
	b, err = o.st.AddBundle(ctx, b)
	if errors.Is(err, store.ErrExists) {
		return BundleAdded{}, &kindError{store.ErrExists, fmt.Sprintf("%s already has a bundle from %s (see %s bundle list %s)", domain, req.Location, o.prog(), domain)}
	} else if err != nil {
		return BundleAdded{}, err
	}
	o.audit(ctx, "bundle.add", domain, fmt.Sprintf("bundle %d %s", b.ID, req.Location))
	if res.Fetched {
		if err := o.st.SetBundleAnchors(ctx, b.ID, state.Anchors, state.Checksum, state.LastSuccess); err != nil {
			return BundleAdded{}, err
		}
		if b, err = o.st.Bundle(ctx, b.ID); err != nil {
			return BundleAdded{}, err
		}
	}
	res.Bundle = bundleInfo(b)
	return res, nil
}

// Bundles lists the bundles of a local domain, or of all ("").
func (o *Ops) Bundles(ctx context.Context, domainArg string) ([]BundleInfo, error) {
	domain := ""
	if domainArg != "" {
		var err error
		if domain, err = o.domain(ctx, domainArg); err != nil {
			return nil, err
		}
	}
	list, err := o.st.Bundles(ctx, domain)
	if err != nil {
		return nil, err
	}
	out := []BundleInfo{}
	for _, b := range list {
		out = append(out, bundleInfo(b))
	}
	return out, nil
}

// bundle returns a bundle of a local domain.
func (o *Ops) bundle(ctx context.Context, domainArg string, id int64) (store.Bundle, error) {
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return store.Bundle{}, err
	}
	b, err := o.st.Bundle(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && b.Domain != domain {
		return store.Bundle{}, &kindError{store.ErrNotFound, fmt.Sprintf("%s has no bundle %d (see %s bundle list %s)", domain, id, o.prog(), domain)}
	}
	return b, err
}

// BundleContents is a bundle with the anchors it holds now.
type BundleContents struct {
	Bundle  BundleInfo   `json:"bundle"`
	Anchors []AnchorInfo `json:"anchors"`
}

// Bundle returns a bundle of a local domain with its anchors and their
// expiry.
func (o *Ops) Bundle(ctx context.Context, domain string, id int64) (BundleContents, error) {
	b, err := o.bundle(ctx, domain, id)
	if err != nil {
		return BundleContents{}, err
	}
	as, err := o.st.BundleAnchors(ctx, id)
	if err != nil {
		return BundleContents{}, err
	}
	out := BundleContents{Bundle: bundleInfo(b), Anchors: []AnchorInfo{}}
	for _, a := range as {
		out.Anchors = append(out.Anchors, anchorInfo(a))
	}
	return out, nil
}

// RefreshBundle fetches a bundle now, as the server's refresher would: a
// success replaces its anchors at once; a failure keeps the last good set
// and is recorded as the bundle's last error (TA-03).
func (o *Ops) RefreshBundle(ctx context.Context, domain string, id int64) (BundleInfo, error) {
	b, err := o.bundle(ctx, domain, id)
	if err != nil {
		return BundleInfo{}, err
	}
	src, err := trust.NewBundleSource(b.ID, b.Domain, b.Location, b.Signer, b.Refresh)
	if err != nil {
		return BundleInfo{}, err
	}
	now := o.now()
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	state, _, ferr := trust.FetchBundle(fctx, o.HTTPClient, src, trust.BundleState{}, now)
	cancel()
	if ferr != nil {
		if err := o.st.BundleFailed(ctx, b.ID, now, ferr.Error()); err != nil {
			return BundleInfo{}, err
		}
		o.AuditFailure(ctx, "bundle.refresh", b.Domain, "failed", fmt.Sprintf("bundle %d %s: %v", b.ID, b.Location, ferr))
		return BundleInfo{}, refusedf("refresh of bundle %d failed, its last good anchors stay: %v", b.ID, ferr)
	}
	if err := o.st.SetBundleAnchors(ctx, b.ID, state.Anchors, state.Checksum, now); err != nil {
		return BundleInfo{}, err
	}
	o.audit(ctx, "bundle.refresh", b.Domain, fmt.Sprintf("bundle %d %s: %d anchors", b.ID, b.Location, len(state.Anchors)))
	if b, err = o.st.Bundle(ctx, b.ID); err != nil {
		return BundleInfo{}, err
	}
	return bundleInfo(b), nil
}

// RemoveBundle removes a bundle with the anchors it brought.
func (o *Ops) RemoveBundle(ctx context.Context, domainArg string, id int64) (BundleInfo, error) {
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return BundleInfo{}, err
	}
	b, err := o.st.RemoveBundle(ctx, domain, id)
	if errors.Is(err, store.ErrNotFound) {
		return BundleInfo{}, &kindError{store.ErrNotFound, fmt.Sprintf("%s has no bundle %d (see %s bundle list %s)", domain, id, o.prog(), domain)}
	} else if err != nil {
		return BundleInfo{}, err
	}
	o.audit(ctx, "bundle.remove", domain, fmt.Sprintf("bundle %d %s", b.ID, b.Location))
	return bundleInfo(b), nil
}
