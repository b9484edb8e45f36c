package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hisp-project/hisp/ops"
)

func init() {
	register("domain", command{
		summary: "add, list or remove local Direct domains",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "domain", args, map[string]func(*cliEnv, []string) int{
				"add":    domainAdd,
				"list":   domainList,
				"remove": domainRemove,
			})
		},
	})
}

// domainAdd is "hisp domain add DOMAIN".
func domainAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "domain add", "DOMAIN", false)
	c.creates = true // the command that makes a new store
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	name, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		d, err := o.AddDomain(ctx, name)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "added domain %s\n", d.Name)
		return 0
	})
}

// domainList is "hisp domain list [--json]".
func domainList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "domain list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		ds, err := o.Domains(ctx)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, d := range ds {
			rows = append(rows, []string{d.Name, strconv.Itoa(d.Addresses), strconv.Itoa(d.Certificates),
				strconv.Itoa(d.Anchors), strconv.Itoa(d.Bundles), day(d.Created)})
		}
		return c.list(ds, []string{"DOMAIN", "ADDRESSES", "CERTIFICATES", "ANCHORS", "BUNDLES", "CREATED"}, rows)
	})
}

// domainRemove is "hisp domain remove DOMAIN": the domain goes with its
// addresses, certificates and keys, anchors, bundles and local CA.
func domainRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "domain remove", "DOMAIN", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	name, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		d, err := o.RemoveDomain(ctx, name)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed domain %s with %s, its keys and its local CA\n", d.Name, ops.DomainContents(d))
		return 0
	})
}
