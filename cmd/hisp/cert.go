package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"strconv"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("cert", command{
		summary: "import, issue, list or remove certificates of local addresses and domains",
		run: func(env *cliEnv, args []string) int {
			return adminGroup(env, "cert", args, map[string]func(*cliEnv, []string) int{
				"import": certImport,
				"issue":  certIssue,
				"list":   certList,
				"remove": certRemove,
				"ca":     certCA,
			})
		},
	})
}

// parseOwnerArg normalizes an ADDRESS|DOMAIN argument.
func parseOwnerArg(c *adminCmd, arg string) (owner, domain string, code int, ok bool) {
	owner, domain, err := store.ParseOwner(arg)
	if err != nil {
		return "", "", c.usageError("%v", err), false
	}
	return owner, domain, 0, true
}

// certImport is "hisp cert import ADDRESS|DOMAIN --pkcs12 FILE
// [--password-file FILE]" or "... --cert CERT.pem --key KEY.pem".
func certImport(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "cert import", "ADDRESS|DOMAIN (--pkcs12 FILE [--password-file FILE] | --cert CERT.pem --key KEY.pem)", false)
	p12 := c.fs.String("pkcs12", "", "PKCS#12 `FILE` holding the key, the certificate and optionally its chain")
	pwFile := c.fs.String("password-file", "", "`FILE` whose first line is the PKCS#12 password (default: no password)")
	certFile := c.fs.String("cert", "", "PEM or DER certificate `FILE`; certificates after the first are its chain")
	keyFile := c.fs.String("key", "", "PEM or DER private key `FILE` (PKCS#8, PKCS#1 or SEC 1)")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	switch {
	case *p12 != "" && (*certFile != "" || *keyFile != ""):
		return c.usageError("give either --pkcs12 or --cert and --key, not both")
	case *p12 == "" && (*certFile == "" || *keyFile == ""):
		return c.usageError("give --pkcs12 FILE, or --cert FILE and --key FILE")
	case *pwFile != "" && *p12 == "":
		return c.usageError("--password-file goes with --pkcs12")
	}
	owner, _, code, ok := parseOwnerArg(c, pos[0])
	if !ok {
		return code
	}

	var id *certfile.Identity
	var err error
	if *p12 != "" {
		id, err = certfile.LoadPKCS12(*p12, *pwFile)
		if err == nil {
			err = id.Check()
		}
	} else {
		id, err = certfile.LoadPEM(*certFile, *keyFile)
	}
	if err != nil {
		return c.fail(err)
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		res, err := o.ImportCert(ctx, owner, id)
		c.warnAll(res.Warnings)
		if err != nil {
			return c.opFail(err)
		}
		sc := res.Cert
		fmt.Fprintf(env.stdout, "imported certificate %d for %s (%s): %s, key usage %s, %s, not after %s, fingerprint %s\n",
			sc.ID, owner, ops.BindingKind(owner), sc.Subject, res.Role, res.Key, day(sc.NotAfter), sc.Fingerprint)
		if len(id.Chain) > 0 {
			fmt.Fprintf(env.stdout, "kept %d chain certificate(s) to send with signatures\n", len(id.Chain))
		}
		return 0
	})
}

// certIssue is "hisp cert issue ADDRESS|DOMAIN": a trial certificate from
// the domain's local CA.
func certIssue(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "cert issue", "ADDRESS|DOMAIN", false)
	base := c.fs.String("crl-url", "", "base `URL` of hisp's admin listener, where the CRL is served as URL/crl/DOMAIN.crl (default: from the config)")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	// The CRL distribution point must be where the server serves it: the
	// same config as hisp serve, read the same way (and its data
	// directory, as hisp serve takes it).
	cfg, err := loadConfig(env, c.config)
	if err != nil {
		return c.usageError("%v", err)
	}
	baseURL := *base
	if baseURL == "" {
		if baseURL = cfg.BaseURL(); baseURL == "" {
			return c.usageError("the config has no admin listener to serve the CRL: set public_url, or give --crl-url")
		}
	}
	owner, domain, code, ok := parseOwnerArg(c, pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		res, err := o.IssueCert(ctx, owner, baseURL)
		if err != nil {
			return c.opFail(err)
		}
		ca, sc := res.CA, res.Cert
		if res.CACreated {
			fmt.Fprintf(env.stdout, "made the local CA of %s (%s), fingerprint %s\n", domain, ca.Cert.Subject.CommonName, store.Fingerprint(ca.Cert.Raw))
		}
		fmt.Fprintf(env.stdout, "issued certificate %d for %s (%s) by %q: serial %s, key usage %s, not after %s, CRL %s, fingerprint %s\n",
			sc.ID, owner, ops.BindingKind(owner), ca.Cert.Subject.CommonName, res.Serial, res.Role, day(sc.NotAfter),
			res.CRL, sc.Fingerprint)
		if res.CACreated {
			fmt.Fprintf(env.stdout, "to trust it from another domain: %[1]s cert ca %[2]s > %[2]s-ca.pem; %[1]s anchor add OTHER-DOMAIN %[2]s-ca.pem\n",
				env.progName(), domain)
		}
		return 0
	})
}

// certCA is "hisp cert ca DOMAIN": the local CA certificate in PEM on
// stdout (made on first use), to add as an anchor elsewhere.
func certCA(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "cert ca", "DOMAIN", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		ca, _, err := o.LocalCA(ctx, domain)
		if err != nil {
			return c.opFail(err)
		}
		if err := pem.Encode(env.stdout, &pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}); err != nil {
			return c.fail(err)
		}
		return 0
	})
}

// certList is "hisp cert list [ADDRESS|DOMAIN] [--json]": certificates of
// an address, of a domain (address- and organization-bound), or all. Keys
// are never printed.
func certList(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "cert list", "[ADDRESS|DOMAIN]", true)
	pos, code, ok := c.parse(args, 0, 1)
	if !ok {
		return code
	}
	filter := ""
	if len(pos) == 1 {
		if _, _, code, ok := parseOwnerArg(c, pos[0]); !ok {
			return code
		}
		filter = pos[0]
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		out, err := o.Certs(ctx, filter)
		if err != nil {
			return c.opFail(err)
		}
		var rows [][]string
		for _, j := range out {
			key := "no"
			if j.HasKey {
				key = "yes"
			}
			rows = append(rows, []string{strconv.FormatInt(j.ID, 10), j.Owner, j.Subject, j.SAN, j.Issuer,
				day(j.NotAfter), j.KeyUsage, key, j.Fingerprint})
		}
		return c.list(out, []string{"ID", "OWNER", "SUBJECT", "SAN", "ISSUER", "NOT-AFTER", "USAGE", "KEY", "FINGERPRINT"}, rows)
	})
}

// certRemove is "hisp cert remove ID": the certificate and its key go; a
// certificate of the domain's local CA is also revoked on its CRL.
func certRemove(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "cert remove", "ID", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	id, code, ok := parseID(c, "certificate", pos[0])
	if !ok {
		return code
	}
	return c.withOps(func(ctx context.Context, o *ops.Ops) int {
		res, err := o.RemoveCert(ctx, id)
		if res.Cert.ID != 0 {
			fmt.Fprintf(env.stdout, "removed certificate %d of %s (%s)\n", res.Cert.ID, res.Cert.Owner, res.Cert.Subject)
		}
		if err != nil {
			return c.opFail(err)
		}
		if res.Revoked != nil {
			fmt.Fprintf(env.stdout, "revoked serial %s on the CRL of the local CA of %s\n", res.Revoked, res.Cert.Domain)
		}
		return 0
	})
}
