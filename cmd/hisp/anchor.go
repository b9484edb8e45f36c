package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("anchor", command{
		summary: "add, list or remove the trust anchors of local domains",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "anchor", args, map[string]func(*cliEnv, []string) int{
				"add":    anchorAdd,
				"list":   anchorList,
				"remove": anchorRemove,
			})
		},
	})
}

// anchorAdd is "hisp anchor add DOMAIN FILE [--direction in|out|both]":
// every certificate in FILE (PEM, several allowed, or DER) becomes an
// anchor of DOMAIN.
func anchorAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "anchor add", "DOMAIN FILE", false)
	dirFlag := c.fs.String("direction", "both", "`in` (senders we accept), out (recipients we send to) or both")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	dir, err := store.ParseDirection(*dirFlag)
	if err != nil {
		return c.usageError("%v", err)
	}
	certs, err := certfile.LoadCertificates(pos[1])
	if err != nil {
		return c.fail(err)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		added, err := o.AddAnchors(ctx, domain, certs, dir)
		for _, r := range added {
			c.warnAll(r.Warnings)
			a := r.Anchor
			if r.Existing {
				fmt.Fprintf(env.stdout, "already an anchor of %s: %d (%s) %s\n", domain, a.ID, a.Direction, a.Subject)
				if a.Direction != string(dir) {
					c.warn("anchor %d keeps direction %s; to change it: %s anchor remove %s %d, then add it again", a.ID, a.Direction, c.env.progName(), domain, a.ID)
				}
				continue
			}
			fmt.Fprintf(env.stdout, "added anchor %d to %s (%s): %s, not after %s, fingerprint %s\n",
				a.ID, domain, a.Direction, a.Subject, day(a.NotAfter), a.Fingerprint)
		}
		if err != nil {
			return c.opFail(err)
		}
		return 0
	})
}

// anchorList is "hisp anchor list [DOMAIN] [--json]".
func anchorList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "anchor list", "[DOMAIN]", true)
	domain, code, ok := parseOptionalDomain(c, args)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Anchors(ctx, domain)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, a := range out {
			source := a.Source
			if a.BundleID != 0 {
				source = "bundle " + strconv.FormatInt(a.BundleID, 10)
			}
			rows = append(rows, []string{strconv.FormatInt(a.ID, 10), a.Domain, a.Direction, source,
				day(a.NotAfter), a.Subject, a.Fingerprint})
		}
		return c.list(out, []string{"ID", "DOMAIN", "DIRECTION", "SOURCE", "NOT-AFTER", "SUBJECT", "FINGERPRINT"}, rows)
	})
}

// anchorRemove is "hisp anchor remove DOMAIN ID|FINGERPRINT|FILE ...": each
// argument is an anchor id as listed, a SHA-256 fingerprint (hex, colons
// allowed, a unique prefix of 8 digits or more), or a certificate file whose
// certificates are removed as anchors.
func anchorRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "anchor remove", "DOMAIN ID|FINGERPRINT|FILE ...", false)
	pos, code, ok := c.parse(args, 2, -1)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		anchors, err := o.Anchors(ctx, domain)
		if err != nil {
			return c.opFail(err)
		}
		var ids []int64
		for _, arg := range pos[1:] {
			found, err := resolveAnchors(anchors, arg)
			if err != nil {
				return c.fail(fmt.Errorf("anchor %s of %s: %w", arg, domain, err))
			}
			ids = append(ids, found...)
		}
		failed := false
		done := map[int64]bool{}
		for _, id := range ids {
			if done[id] {
				continue
			}
			done[id] = true
			a, err := o.RemoveAnchor(ctx, domain, id)
			if err != nil {
				fmt.Fprintf(env.stderr, "hisp: %v\n", err)
				failed = true
				continue
			}
			fmt.Fprintf(env.stdout, "removed anchor %d of %s: %s\n", a.ID, domain, a.Subject)
		}
		if failed {
			return 1
		}
		return 0
	})
}

// resolveAnchors finds the anchors an argument of anchor remove names.
func resolveAnchors(anchors []ops.AnchorInfo, arg string) ([]int64, error) {
	if id, err := strconv.ParseInt(arg, 10, 64); err == nil && len(arg) < 8 {
		for _, a := range anchors {
			if a.ID == id {
				return []int64{id}, nil
			}
		}
		return nil, errors.New("no such anchor (anchor list shows them)")
	}
	if fi, err := os.Stat(arg); err == nil && fi.Mode().IsRegular() {
		certs, err := certfile.LoadCertificates(arg)
		if err != nil {
			return nil, err
		}
		var ids []int64
		for _, cert := range certs {
			fp := store.Fingerprint(cert.Raw)
			n := len(ids)
			for _, a := range anchors {
				if a.Fingerprint == fp && a.BundleID == 0 {
					ids = append(ids, a.ID)
				}
			}
			if len(ids) == n {
				return nil, fmt.Errorf("%s is not a manual anchor", cert.Subject)
			}
		}
		return ids, nil
	}
	fp := strings.ToLower(strings.ReplaceAll(arg, ":", ""))
	if len(fp) < 8 || strings.Trim(fp, "0123456789abcdef") != "" {
		return nil, errors.New("want an anchor id, a fingerprint (8 hex digits or more) or a certificate file")
	}
	var manual, all []int64
	fps := map[string]bool{}
	for _, a := range anchors {
		if strings.HasPrefix(a.Fingerprint, fp) {
			fps[a.Fingerprint] = true
			all = append(all, a.ID)
			if a.BundleID == 0 {
				manual = append(manual, a.ID)
			}
		}
	}
	switch {
	case len(all) == 0:
		return nil, errors.New("no anchor has this fingerprint (anchor list shows them)")
	case len(fps) > 1:
		return nil, errors.New("fingerprint prefix matches several anchors: give more digits")
	case len(manual) > 0:
		return manual, nil
	}
	return all, nil // from bundles: RemoveAnchor explains
}
