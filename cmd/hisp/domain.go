package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hisp-project/hisp/store"
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
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		d, err := st.AddDomain(ctx, name)
		if errors.Is(err, store.ErrExists) {
			return c.fail(fmt.Errorf("domain %s already exists", name))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "domain.add", d.Name, "")
		fmt.Fprintf(env.stdout, "added domain %s\n", d.Name)
		return 0
	})
}

type domainJSON struct {
	Name         string    `json:"name"`
	Addresses    int       `json:"addresses"`
	Certificates int       `json:"certificates"`
	Anchors      int       `json:"anchors"`
	Bundles      int       `json:"bundles"`
	Created      time.Time `json:"created"`
}

// domainList is "hisp domain list [--json]".
func domainList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "domain list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		ds, err := st.Domains(ctx)
		if err != nil {
			return c.fail(err)
		}
		if c.json {
			out := []domainJSON{}
			for _, d := range ds {
				out = append(out, domainJSON{d.Name, d.Addresses, d.Certificates, d.Anchors, d.Bundles, d.Created})
			}
			if err := adminJSON(env.stdout, out); err != nil {
				return c.fail(err)
			}
			return 0
		}
		var rows [][]string
		for _, d := range ds {
			rows = append(rows, []string{d.Name, strconv.Itoa(d.Addresses), strconv.Itoa(d.Certificates),
				strconv.Itoa(d.Anchors), strconv.Itoa(d.Bundles), day(d.Created)})
		}
		if err := adminTable(env.stdout, []string{"DOMAIN", "ADDRESSES", "CERTIFICATES", "ANCHORS", "BUNDLES", "CREATED"}, rows); err != nil {
			return c.fail(err)
		}
		return 0
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
	return c.withDomain(name, func(ctx context.Context, st *store.Store) int {
		d, err := st.RemoveDomain(ctx, name)
		if err != nil {
			return c.fail(err)
		}
		what := fmt.Sprintf("%d addresses, %d certificates, %d anchors, %d bundles", d.Addresses, d.Certificates, d.Anchors, d.Bundles)
		c.audit(ctx, st, "domain.remove", d.Name, "with "+what)
		fmt.Fprintf(env.stdout, "removed domain %s with %s, its keys and its local CA\n", d.Name, what)
		return 0
	})
}
