package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/certs/devca"
	"github.com/hisp-project/hisp/smime/directprofile"
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
	owner, domain, code, ok := parseOwnerArg(c, pos[0])
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
	if err := checkBinding(id.Cert, owner); err != nil {
		return c.fail(err)
	}
	alg, err := checkDirectKey(id.Cert)
	if err != nil {
		return c.fail(err)
	}

	return c.withDomain(domain, func(ctx context.Context, st *store.Store) int {
		now := time.Now()
		if now.After(id.Cert.NotAfter) {
			c.warn("the certificate expired on %s", day(id.Cert.NotAfter))
		} else if now.Before(id.Cert.NotBefore) {
			c.warn("the certificate is not valid before %s", day(id.Cert.NotBefore))
		}
		role := usageRole(id.Cert)
		if role == "none" {
			c.warn("the key usage allows neither signing (digitalSignature) nor encryption (keyEncipherment): Direct cannot use it")
		}
		sc, err := st.AddCertificate(ctx, owner, id.Cert, id.Chain, id.Key)
		if errors.Is(err, store.ErrExists) {
			return c.fail(fmt.Errorf("this certificate is already imported for %s (see %s cert list %s)", owner, env.progName(), owner))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "cert.import", owner, "certificate "+strconv.FormatInt(sc.ID, 10)+" "+sc.Fingerprint)
		fmt.Fprintf(env.stdout, "imported certificate %d for %s (%s): %s, key usage %s, %s, not after %s, fingerprint %s\n",
			sc.ID, owner, bindingKind(owner), sc.Subject, role, alg, day(sc.NotAfter), sc.Fingerprint)
		if len(id.Chain) > 0 {
			fmt.Fprintf(env.stdout, "kept %d chain certificate(s) to send with signatures\n", len(id.Chain))
		}
		return 0
	})
}

func bindingKind(owner string) string {
	if strings.Contains(owner, "@") {
		return "address-bound"
	}
	return "organization-bound"
}

// checkBinding checks that a certificate binds to its owner the Direct way:
// SAN rfc822Name equal to the address, or SAN dNSName equal to the domain
// (no wildcard), case-insensitively.
func checkBinding(cert *x509.Certificate, owner string) error {
	if strings.Contains(owner, "@") {
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, owner) {
				return nil
			}
		}
		return fmt.Errorf("certificate does not bind to %s: an address-bound certificate needs SAN rfc822Name %s; its SAN has %s",
			owner, owner, sanOrNone(cert))
	}
	for _, d := range cert.DNSNames {
		if strings.EqualFold(strings.TrimSuffix(d, "."), owner) {
			return nil
		}
	}
	return fmt.Errorf("certificate does not bind to %s: an organization-bound certificate needs SAN dNSName %s; its SAN has %s",
		owner, owner, sanOrNone(cert))
}

func sanOrNone(cert *x509.Certificate) string {
	if s := store.SANSummary(cert); s != "" {
		return s
	}
	return "nothing"
}

// checkDirectKey checks the public key against the Direct profile
// (directprofile.Keys, MinRSABits, Curves). It returns a description:
// "RSA 2048", "ECDSA P-256".
func checkDirectKey(cert *x509.Certificate) (string, error) {
	_, desc, err := directprofile.CheckCertKey(cert, directprofile.AnyUse)
	if err != nil {
		return "", fmt.Errorf("the certificate has %w", err)
	}
	return desc, nil
}

// usageRole names what a certificate's key usage lets it do in Direct:
// "dual" (sign and encrypt), "sign", "encrypt" or "none". Without a key
// usage extension a key may do both.
func usageRole(cert *x509.Certificate) string {
	ku := cert.KeyUsage
	if ku == 0 {
		return "dual"
	}
	sign := ku&x509.KeyUsageDigitalSignature != 0
	encrypt := ku&x509.KeyUsageKeyEncipherment != 0
	if k, ok := directprofile.KeyOf(cert.PublicKey); ok && !k.Encrypt {
		encrypt = false // Direct encrypts to RSA keys only
	}
	switch {
	case sign && encrypt:
		return "dual"
	case sign:
		return "sign"
	case encrypt:
		return "encrypt"
	}
	return "none"
}

// storedRole is usageRole for a stored certificate.
func storedRole(c store.Certificate) string {
	cert, err := c.Parse()
	if err != nil {
		return "?"
	}
	return usageRole(cert)
}

// localCA returns the local CA of a domain, making it on first use.
func localCA(ctx context.Context, c *adminCmd, st *store.Store, domain string) (*devca.CA, bool, error) {
	rec, err := st.LocalCA(ctx, domain)
	if errors.Is(err, store.ErrNotFound) {
		ca, cerr := devca.New(domain, time.Now())
		if cerr != nil {
			return nil, false, cerr
		}
		_, cerr = st.CreateLocalCA(ctx, domain, ca.Cert, ca.Key)
		if cerr == nil {
			c.audit(ctx, st, "ca.create", domain, "fingerprint "+store.Fingerprint(ca.Cert.Raw))
			return ca, true, nil
		}
		if !errors.Is(cerr, store.ErrExists) {
			return nil, false, cerr
		}
		// Another process made it first: use theirs (and its error, which
		// the inner scope used to drop).
		rec, err = st.LocalCA(ctx, domain)
	}
	if err != nil {
		return nil, false, err
	}
	key, err := st.LocalCAKey(ctx, domain)
	if err != nil {
		return nil, false, err
	}
	ca, err := devca.Load(domain, rec.DER, key)
	return ca, false, err
}

// certIssue is "hisp cert issue ADDRESS|DOMAIN": a trial certificate from
// the domain's local CA.
func certIssue(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "cert issue", "ADDRESS|DOMAIN", false)
	cfgFile := c.fs.String("config", "", "configuration `file` of hisp serve (default $HISP_CONFIG): its public_url, else its [listen] admin address, is where the CRL is served")
	base := c.fs.String("crl-url", "", "base `URL` of hisp's admin listener, where the CRL is served as URL/crl/DOMAIN.crl (default: from the config)")
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	// The CRL distribution point must be where the server serves it: the
	// same config as hisp serve, read the same way (and its data
	// directory, as hisp serve takes it).
	cfg, given, err := loadConfig(env, *cfgFile)
	if err != nil {
		return c.usageError("%v", err)
	}
	if given && c.data == "" && env.getenv("HISP_DATA") == "" {
		c.data = cfg.Data
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
	return c.withDomain(domain, func(ctx context.Context, st *store.Store) int {
		ca, created, err := localCA(ctx, c, st, domain)
		if err != nil {
			return c.fail(err)
		}
		if created {
			fmt.Fprintf(env.stdout, "made the local CA of %s (%s), fingerprint %s\n", domain, ca.Cert.Subject.CommonName, store.Fingerprint(ca.Cert.Raw))
		}
		serial, err := st.NextSerial(ctx, domain)
		if err != nil {
			return c.fail(err)
		}
		cert, key, err := ca.Issue(devca.Request{Owner: owner, Serial: big.NewInt(serial), BaseURL: baseURL})
		if err != nil {
			return c.fail(err)
		}
		sc, err := st.AddCertificate(ctx, owner, cert, nil, key)
		if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "cert.issue", owner, "certificate "+strconv.FormatInt(sc.ID, 10)+" serial "+cert.SerialNumber.String())
		fmt.Fprintf(env.stdout, "issued certificate %d for %s (%s) by %q: serial %s, key usage %s, not after %s, CRL %s, fingerprint %s\n",
			sc.ID, owner, bindingKind(owner), ca.Cert.Subject.CommonName, cert.SerialNumber, usageRole(cert), day(cert.NotAfter),
			cert.CRLDistributionPoints[0], sc.Fingerprint)
		if created {
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
	return c.withDomain(domain, func(ctx context.Context, st *store.Store) int {
		ca, _, err := localCA(ctx, c, st, domain)
		if err != nil {
			return c.fail(err)
		}
		if err := pem.Encode(env.stdout, &pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}); err != nil {
			return c.fail(err)
		}
		return 0
	})
}

type certJSON struct {
	ID          int64      `json:"id"`
	Owner       string     `json:"owner"`
	Domain      string     `json:"domain"`
	Binding     string     `json:"binding"` // address or organization
	Subject     string     `json:"subject"`
	SAN         string     `json:"san"`
	Issuer      string     `json:"issuer"`
	Serial      string     `json:"serial"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	KeyUsage    string     `json:"key_usage"` // dual, sign, encrypt or none
	HasKey      bool       `json:"has_key"`
	Fingerprint string     `json:"fingerprint_sha256"`
	Chain       int        `json:"chain"`
	Created     *time.Time `json:"created,omitempty"`
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
	var f store.CertFilter
	if len(pos) == 1 {
		owner, domain, code, ok := parseOwnerArg(c, pos[0])
		if !ok {
			return code
		}
		if owner == domain {
			f.Domain = domain
		} else {
			f.Owner = owner
		}
	}
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		var err error
		if len(pos) == 1 {
			_, domain, _ := store.ParseOwner(pos[0])
			if err := c.requireDomain(ctx, st, domain); err != nil {
				return c.fail(err)
			}
		}
		list, err := st.Certificates(ctx, f)
		if err != nil {
			return c.fail(err)
		}
		out := []certJSON{}
		for _, sc := range list {
			j := certJSON{ID: sc.ID, Owner: sc.Owner, Domain: sc.Domain, Subject: sc.Subject, SAN: sc.SAN, Issuer: sc.Issuer,
				NotBefore: sc.NotBefore, NotAfter: sc.NotAfter, KeyUsage: storedRole(sc), HasKey: sc.HasKey,
				Fingerprint: sc.Fingerprint, Chain: len(sc.Chain), Created: optTime(sc.Created)}
			j.Binding = "organization"
			if strings.Contains(sc.Owner, "@") {
				j.Binding = "address"
			}
			if cert, err := sc.Parse(); err == nil {
				j.Serial = cert.SerialNumber.String()
			}
			out = append(out, j)
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
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		sc, err := st.RemoveCertificate(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return c.fail(fmt.Errorf("no certificate %d (see %s cert list)", id, env.progName()))
		} else if err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "cert.remove", sc.Owner, "certificate "+strconv.FormatInt(sc.ID, 10)+" "+sc.Fingerprint)
		fmt.Fprintf(env.stdout, "removed certificate %d of %s (%s)\n", sc.ID, sc.Owner, sc.Subject)

		// Revoke it if the domain's local CA issued it, so the CRL lists it.
		cert, err := sc.Parse()
		if err != nil {
			return 0
		}
		rec, err := st.LocalCA(ctx, sc.Domain)
		if err != nil {
			return 0
		}
		caCert, err := rec.Parse()
		if err != nil || cert.CheckSignatureFrom(caCert) != nil {
			return 0
		}
		if err := st.Revoke(ctx, sc.Domain, cert.SerialNumber, 0, time.Now()); err != nil {
			return c.fail(err)
		}
		c.audit(ctx, st, "cert.revoke", sc.Owner, "serial "+cert.SerialNumber.String())
		fmt.Fprintf(env.stdout, "revoked serial %s on the CRL of the local CA of %s\n", cert.SerialNumber, sc.Domain)
		return 0
	})
}
