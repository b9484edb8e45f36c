package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("bundle", command{
		summary: "add, list or remove trust bundles (PKCS#7 sets of anchors) of local domains",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "bundle", args, map[string]func(*cliEnv, []string) int{
				"add":     bundleAdd,
				"list":    bundleList,
				"remove":  bundleRemove,
				"refresh": bundleRefresh,
				"show":    bundleShow,
			})
		},
	})
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
	refresh, err := ops.ParseRefresh(*refreshFlag)
	if err != nil {
		return c.usageError("%v", err)
	}
	dir, err := store.ParseDirection(*dirFlag)
	if err != nil {
		return c.usageError("%v", err)
	}
	location, err := ops.BundleLocation(pos[1], true)
	if err != nil {
		return c.usageError("%v", err)
	}
	// DT-01, before reading any file: ops.CheckBundleTransport.
	if err := ops.CheckBundleTransport(location, *signerFile != "", *allowHTTP); err != nil {
		return c.opFail(err)
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

	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		res, err := o.AddBundle(ctx, ops.BundleRequest{Domain: domain, Location: location, Direction: dir, Refresh: refresh,
			Signer: signer, NoFetch: *noFetch, AllowHTTP: *allowHTTP})
		c.warnAll(res.Warnings)
		if errors.Is(err, ops.ErrRefused) {
			return c.fail(fmt.Errorf("%w (to record it anyway and let the server fetch it: --no-fetch)", err))
		} else if err != nil {
			return c.opFail(err)
		}
		b := res.Bundle
		if !res.Fetched {
			fmt.Fprintf(env.stdout, "added bundle %d to %s (%s, refresh %s): %s; the server will fetch it\n",
				b.ID, domain, dir, refresh, location)
			return 0
		}
		fmt.Fprintf(env.stdout, "added bundle %d to %s (%s, refresh %s): %s, %d anchors\n",
			b.ID, domain, dir, refresh, location, b.Anchors)
		return 0
	})
}

// bundleList is "hisp bundle list [DOMAIN] [--json]".
func bundleList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "bundle list", "[DOMAIN]", true)
	domain, code, ok := parseOptionalDomain(c, args)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Bundles(ctx, domain)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, b := range out {
			success := "-"
			if b.LastSuccess != nil {
				success = instant(*b.LastSuccess)
			}
			rows = append(rows, []string{strconv.FormatInt(b.ID, 10), b.Domain, b.Direction, b.Refresh,
				strconv.Itoa(b.Anchors), success, oneLine(b.LastError), b.Location})
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
	domain, id, code, ok := parseDomainID(c, "bundle", args)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		b, err := o.RemoveBundle(ctx, domain, id)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed bundle %d of %s (%s) with its %d anchors\n", b.ID, domain, b.Location, b.Anchors)
		return 0
	})
}

// bundleRefresh is "hisp bundle refresh DOMAIN ID": fetch now.
func bundleRefresh(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "bundle refresh", "DOMAIN ID", false)
	domain, id, code, ok := parseDomainID(c, "bundle", args)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		b, err := o.RefreshBundle(ctx, domain, id)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "refreshed bundle %d of %s (%s): %d anchors\n", b.ID, domain, b.Location, b.Anchors)
		return 0
	})
}

// bundleShow is "hisp bundle show DOMAIN ID [--json]": the bundle and the
// anchors it holds now.
func bundleShow(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "bundle show", "DOMAIN ID", true)
	domain, id, code, ok := parseDomainID(c, "bundle", args)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		bc, err := o.Bundle(ctx, domain, id)
		if err != nil {
			return c.opFail(err)
		}
		if c.json {
			if err := adminJSON(env.stdout, bc); err != nil {
				return c.fail(err)
			}
			return 0
		}
		b := bc.Bundle
		success := "never"
		if b.LastSuccess != nil {
			success = instant(*b.LastSuccess)
		}
		fmt.Fprintf(env.stdout, "bundle %d of %s (%s, refresh %s): %s\nlast success %s", b.ID, b.Domain, b.Direction, b.Refresh, b.Location, success)
		if b.LastError != "" {
			fmt.Fprintf(env.stdout, ", last error: %s", oneLine(b.LastError))
		}
		fmt.Fprintf(env.stdout, "\n\n")
		var rows [][]string
		for _, a := range bc.Anchors {
			rows = append(rows, []string{strconv.FormatInt(a.ID, 10), day(a.NotAfter), a.Subject, a.Fingerprint})
		}
		return c.list(nil, []string{"ID", "NOT-AFTER", "SUBJECT", "FINGERPRINT"}, rows)
	})
}
