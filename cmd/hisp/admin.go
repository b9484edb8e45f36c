package main

import (
	"context"
	"fmt"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/ops"
)

func init() {
	register("admin", command{
		summary: "add, list or remove accounts of the admin web page",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "admin", args, map[string]func(*cliEnv, []string) int{
				"add":    adminAdd,
				"list":   adminList,
				"remove": adminRemove,
			})
		},
	})
}

// adminAdd is "hisp admin add NAME --password-file FILE".
func adminAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "admin add", "NAME --password-file FILE", false)
	pwFile := c.fs.String("password-file", "", "`FILE` whose first line is the admin's password")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	if *pwFile == "" {
		return c.usageError("need --password-file FILE (the admin's password)")
	}
	password, err := certfile.ReadPasswordFile(*pwFile)
	if err != nil {
		return c.fail(err)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		a, err := o.AddAdmin(ctx, pos[0], password)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "added admin %s (the admin page is on the [listen] admin address)\n", a.Name)
		return 0
	})
}

// adminList is "hisp admin list [--json]".
func adminList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "admin list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Admins(ctx)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, a := range out {
			rows = append(rows, []string{a.Name, instant(a.Created)})
		}
		return c.list(out, []string{"NAME", "CREATED"}, rows)
	})
}

// adminRemove is "hisp admin remove NAME".
func adminRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "admin remove", "NAME", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if err := o.RemoveAdmin(ctx, pos[0]); err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed admin %s\n", pos[0])
		return 0
	})
}
