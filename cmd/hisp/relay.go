package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/store"
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
	if len(password) < store.MinPasswordLength {
		return c.fail(fmt.Errorf("password in %s is shorter than %d characters", *pwFile, store.MinPasswordLength))
	}
	var cas []*x509.Certificate
	for _, f := range caArgs {
		certs, err := certfile.LoadCertificates(f)
		if err != nil {
			return c.fail(fmt.Errorf("client CA: %w", err))
		}
		now := time.Now()
		for _, cert := range certs {
			if !cert.IsCA {
				c.warn("%s is not a CA certificate", cert.Subject)
			}
			if now.After(cert.NotAfter) {
				c.warn("%s expired on %s", cert.Subject, day(cert.NotAfter))
			}
		}
		cas = append(cas, certs...)
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		for _, d := range domains {
			if err := c.requireDomain(ctx, st, d); err != nil {
				return c.fail(err)
			}
		}
		r, err := st.AddRelay(ctx, store.Relay{Name: name, Domains: domains, Networks: networks, ClientCAs: cas}, password)
		if errors.Is(err, store.ErrExists) {
			return c.fail(fmt.Errorf("relay %s already exists (hisp relay remove it first)", relayName(name)))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "relay.add", r.Name, relaySummary(r))
		fmt.Fprintf(env.stdout, "added relay %s: %s\n", r.Name, relaySummary(r))
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

// relayName is a relay name as the store keeps it, for messages.
func relayName(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// relaySummary says what a relay may do, for add's confirmation and the
// audit log.
func relaySummary(r store.Relay) string {
	return fmt.Sprintf("sends for %s; from %s; client certificates: %s",
		strings.Join(r.Domains, ", "), relayNetworks(r), relayCAs(r))
}

// relayNetworks lists a relay's networks, "any network" when unlimited.
func relayNetworks(r store.Relay) string {
	if len(r.Networks) == 0 {
		return "any network"
	}
	var ns []string
	for _, p := range r.Networks {
		ns = append(ns, p.String())
	}
	return strings.Join(ns, ", ")
}

// relayCAs counts a relay's client CAs and names their subjects.
func relayCAs(r store.Relay) string {
	if len(r.ClientCAs) == 0 {
		return "0 (none required)"
	}
	return fmt.Sprintf("%d (%s)", len(r.ClientCAs), strings.Join(caSubjects(r), "; "))
}

func caSubjects(r store.Relay) []string {
	out := []string{}
	for _, c := range r.ClientCAs {
		out = append(out, c.Subject.String())
	}
	return out
}

type relayJSON struct {
	Name      string    `json:"name"`
	Domains   []string  `json:"domains"`
	Networks  []string  `json:"networks"`
	ClientCAs []string  `json:"client_cas"` // subjects
	Created   time.Time `json:"created"`
}

// relayList is "hisp relay list [--json]": never the password hashes.
func relayList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "relay list", "", true)
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		rs, err := st.Relays(ctx)
		if err != nil {
			return c.fail(err)
		}
		out := []relayJSON{}
		var rows [][]string
		for _, r := range rs {
			j := relayJSON{Name: r.Name, Domains: append([]string{}, r.Domains...), Networks: []string{},
				ClientCAs: caSubjects(r), Created: r.Created.UTC()}
			for _, p := range r.Networks {
				j.Networks = append(j.Networks, p.String())
			}
			out = append(out, j)
			rows = append(rows, []string{r.Name, strings.Join(r.Domains, ", "), relayNetworks(r), relayCAs(r), day(r.Created)})
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
	name := relayName(pos[0])
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		if err := st.RemoveRelay(ctx, name); errors.Is(err, store.ErrNotFound) {
			return c.fail(fmt.Errorf("relay %s not found (see %s relay list)", name, env.progName()))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "relay.remove", name, "")
		fmt.Fprintf(env.stdout, "removed relay %s\n", name)
		return 0
	})
}
