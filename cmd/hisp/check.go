package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/conformance"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("check", command{
		summary: "conformance self-check of a Direct domain as partners see it: MX, STARTTLS, DNS CERT, LDAP, certificates, loopback",
		run:     checkCmd,
	})
}

// checkCmd implements
//
//	hisp check DOMAIN [--resolver host:port] [--address ADDR ...] [--backbone host:port]
//	               [--anchor FILE ...] [--horizon 30d] [--strict] [--data DIR]
//
// It prints one line per check (PASS, FAIL or SKIP with the reason) and a
// summary, and exits 0 when no check failed (with --strict: and none was
// skipped), 1 when one did, 2 on a usage error. The checks are package
// conformance's; this only parses flags and prints.
func checkCmd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "check", "DOMAIN", false)
	resolver := c.fs.String("resolver", "", "DNS server `host:port` for every look-up (default: the system resolver)")
	var addresses, anchorFiles multiFlag
	c.fs.Var(&addresses, "address", "Direct `ADDRESS` of the domain whose address-bound certificates to check (repeatable; with the data directory, every address with a certificate is checked)")
	backbone := c.fs.String("backbone", "", "SMTP backbone `host:port` to test instead of the domain's MX hosts (a partner's static route)")
	port := c.fs.Int("port", 25, "SMTP `port` of the MX hosts")
	c.fs.Var(&anchorFiles, "anchor", "the domain's own trust anchor, PEM or DER `FILE` (repeatable; with the data directory its local CA and anchors are used too)")
	horizon := c.fs.String("horizon", "30d", "a certificate expiring within this `duration` fails (\"30d\", \"720h\")")
	timeout := c.fs.Duration("timeout", 2*time.Minute, "time limit for the whole check")
	strict := c.fs.Bool("strict", false, "a skipped check fails the run too")
	c.fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: hisp check DOMAIN [flags]\n\n"+
			"Checks a Direct domain the way partners see it and prints one line per check:\n"+
			"PASS, FAIL or SKIP, with the reason. Exit 0 when no check failed, 1 when one\n"+
			"did, 2 on a usage error. Run on the server (with the data directory) to add\n"+
			"the loopback probe and compare what is published with what the domain holds.\n\n")
		c.fs.PrintDefaults()
	}
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	domain, err := store.NormalizeDomain(pos[0])
	if err != nil {
		return c.usageError("%v", err)
	}
	hz, err := parseHorizon(*horizon)
	if err != nil {
		return c.usageError("--horizon: %v", err)
	}
	for _, a := range addresses {
		if _, d, err := store.NormalizeAddress(a); err != nil {
			return c.usageError("--address: %v", err)
		} else if d != domain {
			return c.usageError("--address %s is not an address of %s", a, domain)
		}
	}
	if *port <= 0 || *port > 65535 {
		return c.usageError("--port must be 1..65535")
	}
	if hz == 0 {
		hz = -1 // no horizon: only expired certificates fail
	}
	opts := conformance.Options{Domain: domain, Resolver: *resolver, Addresses: addresses, Backbone: *backbone,
		Port: *port, Horizon: hz}
	for _, f := range anchorFiles {
		certs, err := certfile.LoadCertificates(f)
		if err != nil {
			return c.fail(fmt.Errorf("--anchor: %w", err))
		}
		opts.Anchors = append(opts.Anchors, certs...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	if env.ctx != nil {
		ctx, cancel = context.WithTimeout(env.ctx, *timeout)
	}
	defer cancel()
	loc, err := c.location()
	if err != nil {
		return c.fail(err)
	}
	st, why, err := checkStore(ctx, loc, domain)
	if err != nil {
		return c.fail(err)
	}
	if st != nil {
		defer st.Close()
		opts.Store = st
	}
	opts.NoStore = why

	w := env.stdout
	fmt.Fprintf(w, "hisp check %s\n", domain)
	sum, err := conformance.Run(ctx, opts, func(r conformance.Result) { fmt.Fprintln(w, r) })
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", sum.Passed, sum.Failed, sum.Skipped)
	if err != nil {
		return c.fail(err)
	}
	if sum.Failed > 0 || *strict && sum.Skipped > 0 {
		return 1
	}
	return 0
}

// checkStore opens the data directory for the checks that need it, when
// it exists and holds the domain; otherwise it says why not. It never
// creates a data directory.
func checkStore(ctx context.Context, loc store.Location, domain string) (*store.Store, string, error) {
	dir := loc.String()
	st, err := store.OpenExistingAt(ctx, loc)
	if errors.Is(err, store.ErrNoStore) {
		return nil, fmt.Sprintf("no data directory at %s", dir), nil
	}
	if err != nil {
		return nil, "", err
	}
	if _, err := st.Domain(ctx, domain); err != nil {
		st.Close()
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Sprintf("the data directory %s does not hold %s", dir, domain), nil
		}
		return nil, "", err
	}
	return st, "", nil
}

// parseHorizon reads a duration in days ("30d") or as Go writes one
// ("720h").
func parseHorizon(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q: want days (30d) or a duration (720h)", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want days (30d) or a duration (720h)", s)
	}
	return d, nil
}
