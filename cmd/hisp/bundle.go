package main

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

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

func init() {
	register("bundle", command{
		summary: "add, list or remove trust bundles (PKCS#7 sets of anchors) of local domains",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "bundle", args, map[string]func(*cliEnv, []string) int{
				"add":    bundleAdd,
				"list":   bundleList,
				"remove": bundleRemove,
			})
		},
	})
}

// parseRefresh parses a refresh interval: a Go duration ("90m", "6h") or a
// number of days ("1d").
func parseRefresh(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return 0, fmt.Errorf("invalid refresh interval %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid refresh interval %q: want a duration such as 6h, 90m or 1d", s)
	}
	if d < trust.MinRefresh {
		return 0, fmt.Errorf("refresh interval %s is shorter than %s", d, trust.MinRefresh)
	}
	return d, nil
}

// bundleLocation returns where a bundle is read from: an http or https URL
// as given, a file as an absolute path (the server may run elsewhere).
func bundleLocation(arg string) (string, error) {
	if strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://") {
		return arg, nil
	}
	if p, ok := strings.CutPrefix(arg, "file://"); ok {
		arg = p
	} else if strings.Contains(arg, "://") {
		return "", fmt.Errorf("unsupported bundle location %q: want an http or https URL or a file", arg)
	}
	return filepath.Abs(arg)
}

// bundleAdd is "hisp bundle add DOMAIN URL|FILE [--refresh DURATION]": the
// bundle is fetched once (its certificates become anchors of DOMAIN at
// once) and recorded; the server refreshes it on the interval.
func bundleAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "bundle add", "DOMAIN URL|FILE", false)
	refreshFlag := c.fs.String("refresh", "24h", "refresh `interval`: a duration such as 6h or 1d")
	dirFlag := c.fs.String("direction", "both", "`in`, out or both: the direction of the bundle's anchors")
	signerFile := c.fs.String("signer", "", "pinned signer certificate `FILE` of a CMS-signed bundle")
	noFetch := c.fs.Bool("no-fetch", false, "record the bundle without fetching it now (the server fetches it)")
	allowHTTP := c.fs.Bool("allow-http", false, "accept an unsigned bundle over plain http (anyone on the path could add anchors)")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	refresh, err := parseRefresh(*refreshFlag)
	if err != nil {
		return c.usageError("%v", err)
	}
	dir, err := store.ParseDirection(*dirFlag)
	if err != nil {
		return c.usageError("%v", err)
	}
	location, err := bundleLocation(pos[1])
	if err != nil {
		return c.usageError("%v", err)
	}
	// DT-01: anchors come over HTTPS with the server's certificate checked,
	// or signed by a pinned signer; plain http of an unsigned bundle only
	// from this machine or on an explicit opt-in.
	if strings.HasPrefix(location, "http://") && *signerFile == "" && !*allowHTTP && !loopbackURL(location) {
		return c.usageError("%s is plain http and the bundle is not signed: anyone on the path could add trust anchors; use https, a CMS-signed bundle with --signer FILE, or --allow-http to accept the risk", location)
	}
	var signer *x509.Certificate
	if *signerFile != "" {
		certs, err := certfile.LoadCertificates(*signerFile)
		if err != nil {
			return c.fail(err)
		}
		if len(certs) != 1 {
			return c.fail(fmt.Errorf("%s: want one signer certificate, found %d", *signerFile, len(certs)))
		}
		signer = certs[0]
	}

	return c.withDomain(domain, func(ctx context.Context, st *store.Store) int {
		var err error

		// Fetch before recording, so a wrong location or format is reported now.
		var state trust.BundleState
		if !*noFetch {
			src := trust.BundleSource{Domain: domain, Location: location, Signer: signer, Refresh: refresh}
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			state, _, err = trust.FetchBundle(fctx, nil, src, trust.BundleState{}, time.Now())
			cancel()
			if err != nil {
				return c.fail(fmt.Errorf("%v; nothing recorded (to record it anyway and let the server fetch it: --no-fetch)", err))
			}
		} else if !strings.Contains(location, "://") {
			if _, err := os.Stat(location); err != nil {
				c.warn("%v", err)
			}
		}

		b := store.Bundle{Domain: domain, Location: location, Direction: dir, Refresh: refresh}
		if signer != nil {
			b.Signer = signer.Raw
		}
		b, err = st.AddBundle(ctx, b)
		if errors.Is(err, store.ErrExists) {
			return c.fail(fmt.Errorf("%s already has a bundle from %s (see %s bundle list %s)", domain, location, env.progName(), domain))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "bundle.add", domain, fmt.Sprintf("bundle %d %s", b.ID, location))
		if *noFetch {
			fmt.Fprintf(env.stdout, "added bundle %d to %s (%s, refresh %s): %s; the server will fetch it\n",
				b.ID, domain, dir, refresh, location)
			return 0
		}
		if err := st.SetBundleAnchors(ctx, b.ID, state.Anchors, state.Checksum, state.LastSuccess); err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(env.stdout, "added bundle %d to %s (%s, refresh %s): %s, %d anchors\n",
			b.ID, domain, dir, refresh, location, len(state.Anchors))
		return 0
	})
}

type bundleJSON struct {
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

// bundleList is "hisp bundle list [DOMAIN] [--json]".
func bundleList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "bundle list", "[DOMAIN]", true)
	pos, code, ok := c.parse(args, 0, 1)
	if !ok {
		return code
	}
	domain := ""
	if len(pos) == 1 {
		if domain, code, ok = normalizeDomainArg(c, pos[0]); !ok {
			return code
		}
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		var err error
		if domain != "" {
			if err := c.requireDomain(ctx, st, domain); err != nil {
				return c.fail(err)
			}
		}
		bundles, err := st.Bundles(ctx, domain)
		if err != nil {
			return c.fail(err)
		}
		out := []bundleJSON{}
		for _, b := range bundles {
			out = append(out, bundleJSON{ID: b.ID, Domain: b.Domain, Location: b.Location, Direction: string(b.Direction),
				Refresh: b.Refresh.String(), Signed: b.Signer != nil, Anchors: b.Anchors, Checksum: b.Checksum,
				LastAttempt: optTime(b.LastAttempt), LastSuccess: optTime(b.LastSuccess), LastError: b.LastError,
				Created: optTime(b.Created)})
		}
		var rows [][]string
		for _, b := range bundles {
			rows = append(rows, []string{strconv.FormatInt(b.ID, 10), b.Domain, string(b.Direction), b.Refresh.String(),
				strconv.Itoa(b.Anchors), instant(b.LastSuccess), oneLine(b.LastError), b.Location})
		}
		return c.list(out, []string{"ID", "DOMAIN", "DIRECTION", "REFRESH", "ANCHORS", "LAST-SUCCESS", "LAST-ERROR", "LOCATION"}, rows)
	})
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// bundleRemove is "hisp bundle remove DOMAIN ID": the bundle goes with the
// anchors it brought.
func bundleRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "bundle remove", "DOMAIN ID", false)
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	id, code, ok := parseID(c, "bundle", pos[1])
	if !ok {
		return code
	}
	return c.withDomain(domain, func(ctx context.Context, st *store.Store) int {
		b, err := st.RemoveBundle(ctx, domain, id)
		if errors.Is(err, store.ErrNotFound) {
			return c.fail(fmt.Errorf("%s has no bundle %d (see %s bundle list %s)", domain, id, env.progName(), domain))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "bundle.remove", domain, fmt.Sprintf("bundle %d %s", b.ID, b.Location))
		fmt.Fprintf(env.stdout, "removed bundle %d of %s (%s) with its %d anchors\n", b.ID, domain, b.Location, b.Anchors)
		return 0
	})
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
