package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("address", command{
		summary: "add, list or remove local Direct addresses (a mailbox and a login each)",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "address", args, map[string]func(*cliEnv, []string) int{
				"add":    addressAdd,
				"list":   addressList,
				"remove": addressRemove,
				"passwd": addressPasswd,
				"quota":  addressQuota,
			})
		},
	})
}

// addressAdd is "hisp address add ADDRESS --password-file FILE".
func addressAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "address add", "ADDRESS --password-file FILE", false)
	pwFile := c.fs.String("password-file", "", "`FILE` whose first line is the login password (submission and IMAP)")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	addr, _, err := store.NormalizeAddress(pos[0])
	if err != nil {
		return c.usageError("%v", err)
	}
	if *pwFile == "" {
		return c.usageError("need --password-file FILE (the address's login password)")
	}
	password, err := certfile.ReadPasswordFile(*pwFile)
	if err != nil {
		return c.fail(err)
	}
	if len(password) < store.MinPasswordLength {
		return c.fail(fmt.Errorf("password in %s is shorter than %d characters", *pwFile, store.MinPasswordLength))
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if _, err := o.AddAddress(ctx, addr, password); err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "added address %s\n", addr)
		return 0
	})
}

// addressPasswd is "hisp address passwd ADDRESS --password-file FILE".
func addressPasswd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "address passwd", "ADDRESS --password-file FILE", false)
	pwFile := c.fs.String("password-file", "", "`FILE` whose first line is the new password")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	if *pwFile == "" {
		return c.usageError("need --password-file FILE")
	}
	password, err := certfile.ReadPasswordFile(*pwFile)
	if err != nil {
		return c.fail(err)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if err := o.SetPassword(ctx, pos[0], password); err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "password of %s changed\n", pos[0])
		return 0
	})
}

// addressQuota is "hisp address quota ADDRESS [SIZE]": with SIZE ("500MB",
// "2GB", bytes; 0 or "none" for no limit, "default" to follow [limits]
// mailbox_quota of hisp serve) it sets the mailbox quota; either way it
// prints the quota and the bytes in use. Mail over quota is refused with a
// failed MDN (the sender hears of it), an IMAP APPEND with NO [OVERQUOTA];
// mail already stored stays.
func addressQuota(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "address quota", "ADDRESS [SIZE]", false)
	pos, code, ok := c.parse(args, 1, 2)
	if !ok {
		return code
	}
	addr, _, err := store.NormalizeAddress(pos[0])
	if err != nil {
		return c.usageError("%v", err)
	}
	size, set := int64(0), len(pos) == 2
	if len(pos) == 2 {
		switch strings.ToLower(strings.TrimSpace(pos[1])) {
		case "default":
			size = store.QuotaDefault
		case "none", "0":
			size = store.QuotaNone
		default:
			if size, err = config.ParseSize(pos[1]); err != nil {
				return c.usageError("%v", err)
			}
			if size == 0 { // "0MB": no limit, as "0"
				size = store.QuotaNone
			}
		}
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		var q ops.Quota
		var err error
		if set {
			q, err = o.SetQuota(ctx, addr, size, pos[1])
		} else {
			q, err = o.Quota(ctx, addr)
		}
		if err != nil {
			return c.opFail(err)
		}
		quota := "none"
		switch {
		case q.Default:
			quota = "default ([limits] mailbox_quota of hisp serve)"
		case q.Bytes > 0:
			quota = formatSize(q.Bytes)
		}
		fmt.Fprintf(env.stdout, "%s: quota %s, %s in use\n", addr, quota, formatSize(q.Used))
		return 0
	})
}

// formatSize writes a byte count for people.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// addressList is "hisp address list [DOMAIN|ADDRESS] [--json]".
func addressList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "address list", "[DOMAIN|ADDRESS]", true)
	pos, code, ok := c.parse(args, 0, 1)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		filter := ""
		if len(pos) == 1 {
			filter = pos[0]
		}
		out, err := o.Addresses(ctx, filter)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, a := range out {
			login := "no"
			if a.Login {
				login = "yes"
			}
			rows = append(rows, []string{a.Address, a.Domain, login, fmt.Sprint(a.CertsNum), day(a.Created)})
		}
		return c.list(out, []string{"ADDRESS", "DOMAIN", "LOGIN", "CERTS", "CREATED"}, rows)
	})
}

// addressRemove is "hisp address remove ADDRESS".
func addressRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "address remove", "ADDRESS", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	addr, _, err := store.NormalizeAddress(pos[0])
	if err != nil {
		return c.usageError("%v", err)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		if _, err := o.RemoveAddress(ctx, addr); err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed address %s and its certificates\n", addr)
		return 0
	})
}
