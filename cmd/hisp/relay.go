package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/ops"
)

func init() {
	register("relay", command{
		summary: "add, list or remove relay accounts: an EHR's login that sends for any address of its domains",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "relay", args, map[string]func(*cliEnv, []string) int{
				"add":    relayAdd,
				"list":   relayList,
				"remove": relayRemove,
			})
		},
	})
}

// relayAdd is "hisp relay add NAME --password-file FILE --domain D
// [--domain D ...] [--from-ip CIDR ...] [--client-cert CA.pem ...]".
func relayAdd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "relay add", "NAME --password-file FILE --domain DOMAIN", false)
	pwFile := c.fs.String("password-file", "", "`FILE` whose first line is the relay's submission password")
	var domainArgs, ipArgs, caArgs multiFlag
	c.fs.Var(&domainArgs, "domain", "local `DOMAIN` whose addresses the relay sends for (repeatable; at least one)")
	c.fs.Var(&ipArgs, "from-ip", "`CIDR` or IP the relay may log in from (repeatable; default any network)")
	c.fs.Var(&caArgs, "client-cert", "PEM `FILE` of CA certificates, one of which must issue the relay's TLS client certificate (repeatable)")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	name := pos[0]
	if *pwFile == "" {
		return c.usageError("need --password-file FILE (the relay's login password)")
	}
	if len(domainArgs) == 0 {
		return c.usageError("need --domain DOMAIN (a local domain the relay sends for)")
	}
	var domains []string
	for _, d := range domainArgs {
		nd, code, ok := normalizeDomainArg(c, d)
		if !ok {
			return code
		}
		domains = append(domains, nd)
	}
	var networks []netip.Prefix
	for _, a := range ipArgs {
		p, err := parseNetwork(a)
		if err != nil {
			return c.usageError("--from-ip %q: %v", a, err)
		}
		networks = append(networks, p)
	}
	password, err := certfile.ReadPasswordFile(*pwFile)
	if err != nil {
		return c.fail(err)
	}
	var cas []*x509.Certificate
	for _, f := range caArgs {
		certs, err := certfile.LoadCertificates(f)
		if err != nil {
			return c.fail(fmt.Errorf("client CA: %w", err))
		}
		cas = append(cas, certs...)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		r, warnings, err := o.AddRelay(ctx, ops.RelayRequest{Name: name, Password: password, Domains: domains, Networks: networks, ClientCAs: cas})
		c.warnAll(warnings)
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "added relay %s: %s\n", r.Name, ops.RelaySummary(r))
		return 0
	})
}

// parseNetwork parses a --from-ip value: a CIDR, or a bare IP meaning that
// address alone (/32 or /128).
func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("want a CIDR such as 10.0.0.0/8 or an IP address")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("want a CIDR such as 10.0.0.0/8 or an IP address")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// relayList is "hisp relay list [--json]": never the password hashes.
func relayList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "relay list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Relays(ctx)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, r := range out {
			nets, cas := "any network", "0 (none required)"
			if len(r.Networks) > 0 {
				nets = strings.Join(r.Networks, ", ")
			}
			if len(r.ClientCAs) > 0 {
				cas = fmt.Sprintf("%d (%s)", len(r.ClientCAs), strings.Join(r.ClientCAs, "; "))
			}
			rows = append(rows, []string{r.Name, strings.Join(r.Domains, ", "), nets, cas, day(r.Created)})
		}
		return c.list(out, []string{"NAME", "DOMAINS", "FROM", "CLIENT-CAS", "CREATED"}, rows)
	})
}

// relayRemove is "hisp relay remove NAME": the login stops working at once.
func relayRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "relay remove", "NAME", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		name, err := o.RemoveRelay(ctx, pos[0])
		if err != nil {
			return c.opFail(err)
		}
		fmt.Fprintf(env.stdout, "removed relay %s\n", name)
		return 0
	})
}
