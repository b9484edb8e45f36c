package ops

import (
	"context"
	"crypto/x509"
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
	"github.com/hisp-project/hisp/trust"
)

// CertInfo is a local certificate as listed; never its key.
type CertInfo struct {
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

func certInfo(sc store.Certificate) CertInfo {
	j := CertInfo{ID: sc.ID, Owner: sc.Owner, Domain: sc.Domain, Subject: sc.Subject, SAN: sc.SAN, Issuer: sc.Issuer,
		NotBefore: sc.NotBefore, NotAfter: sc.NotAfter, KeyUsage: "?", HasKey: sc.HasKey,
		Fingerprint: sc.Fingerprint, Chain: len(sc.Chain), Created: optTime(sc.Created), Binding: "organization"}
	if strings.Contains(sc.Owner, "@") {
		j.Binding = "address"
	}
	if cert, err := sc.Parse(); err == nil {
		j.Serial = cert.SerialNumber.String()
		j.KeyUsage = UsageRole(cert)
	}
	return j
}

// BindingKind is "address-bound" for an address, else
// "organization-bound".
func BindingKind(owner string) string {
	if strings.Contains(owner, "@") {
		return "address-bound"
	}
	return "organization-bound"
}

// UsageRole names what a certificate's key usage lets it do in Direct:
// "dual" (sign and encrypt), "sign", "encrypt" or "none". Without a key
// usage extension a key may do both; an ECDSA key only signs (Direct
// encrypts to RSA keys).
func UsageRole(cert *x509.Certificate) string {
	ku := cert.KeyUsage
	if ku == 0 {
		return "dual"
	}
	sign := ku&x509.KeyUsageDigitalSignature != 0
	encrypt := ku&x509.KeyUsageKeyEncipherment != 0
	if k, ok := directprofile.KeyOf(cert.PublicKey); ok && !k.Encrypt {
		encrypt = false // Direct encrypts to RSA keys only (the profile's Keys)
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

// KeyDescription describes a public key: "RSA 2048", "ECDSA P-256" (the
// Direct profile's words), else its algorithm's name.
func KeyDescription(cert *x509.Certificate) string {
	if _, desc, err := directprofile.CheckKey(cert.PublicKey, directprofile.AnyUse); err == nil {
		return desc
	}
	return cert.PublicKeyAlgorithm.String()
}

// CheckCertificate applies Direct's rules to a certificate of a local
// owner: it binds to the owner the way validation binds (SAN rfc822Name
// equal to an address, SAN dNSName equal to a domain, no wildcard: AS-02
// to AS-05), and its key is one Direct accepts (DT-04).
func CheckCertificate(cert *x509.Certificate, owner string) error {
	want := trust.DomainBound
	if strings.Contains(owner, "@") {
		want = trust.AddressBound
	}
	if b, why := trust.Bind(cert, owner); b != want {
		if b == trust.DomainBound {
			why = "it is organization-bound (SAN dNSName), an address needs SAN rfc822Name " + owner
		}
		return refusedf("certificate does not bind to %s: %s", owner, why)
	}
	if err := trust.CheckKey(cert); err != nil {
		return &kindError{ErrRefused, err.Error()}
	}
	return nil
}

// CertImported is the result of importing or issuing a certificate.
type CertImported struct {
	Cert     store.Certificate
	Role     string // UsageRole
	Key      string // KeyDescription
	Warnings []string
	// CA is the local CA that issued it (IssueCert); CACreated when this
	// call made it.
	CA        *devca.CA
	CACreated bool
	Serial    *big.Int
	CRL       string
}

// ImportCert stores a certificate with its key (and chain) for a local
// address or domain, after CheckCertificate.
func (o *Ops) ImportCert(ctx context.Context, ownerArg string, id *certfile.Identity) (CertImported, error) {
	owner, domain, err := store.ParseOwner(ownerArg)
	if err != nil {
		return CertImported{}, invalidf("%v", err)
	}
	if err := CheckCertificate(id.Cert, owner); err != nil {
		return CertImported{}, err
	}
	if _, err := o.domain(ctx, domain); err != nil {
		return CertImported{}, err
	}
	res := CertImported{Role: UsageRole(id.Cert), Key: KeyDescription(id.Cert)}
	now := o.now()
	if now.After(id.Cert.NotAfter) {
		res.Warnings = append(res.Warnings, "the certificate expired on "+day(id.Cert.NotAfter))
	} else if now.Before(id.Cert.NotBefore) {
		res.Warnings = append(res.Warnings, "the certificate is not valid before "+day(id.Cert.NotBefore))
	}
	if res.Role == "none" {
		res.Warnings = append(res.Warnings, "the key usage allows neither signing (digitalSignature) nor encryption (keyEncipherment): Direct cannot use it")
	}
	res.Cert, err = o.st.AddCertificate(ctx, owner, id.Cert, id.Chain, id.Key)
	if errors.Is(err, store.ErrExists) {
		return CertImported{}, &kindError{store.ErrExists, fmt.Sprintf("this certificate is already imported for %s (see %s cert list %s)", owner, o.prog(), owner)}
	} else if err != nil {
		return CertImported{}, err
	}
	o.audit(ctx, "cert.import", owner, "certificate "+strconv.FormatInt(res.Cert.ID, 10)+" "+res.Cert.Fingerprint)
	return res, nil
}

// LocalCA returns the local CA of a domain, making it on first use
// (created is then true).
func (o *Ops) LocalCA(ctx context.Context, domainArg string) (ca *devca.CA, created bool, err error) {
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return nil, false, err
	}
	rec, err := o.st.LocalCA(ctx, domain)
	if errors.Is(err, store.ErrNotFound) {
		made, merr := devca.New(domain, o.now())
		if merr != nil {
			return nil, false, merr
		}
		_, merr = o.st.CreateLocalCA(ctx, domain, made.Cert, made.Key)
		if merr == nil {
			o.audit(ctx, "ca.create", domain, "fingerprint "+store.Fingerprint(made.Cert.Raw))
			return made, true, nil
		}
		if !errors.Is(merr, store.ErrExists) {
			return nil, false, merr
		}
		// Another process made it first: use theirs.
		rec, err = o.st.LocalCA(ctx, domain)
	}
	if err != nil {
		return nil, false, err
	}
	key, err := o.st.LocalCAKey(ctx, domain)
	if err != nil {
		return nil, false, err
	}
	ca, err = devca.Load(domain, rec.DER, key)
	return ca, false, err
}

// IssueCert issues a trial certificate for a local address or domain from
// the domain's local CA (made on first use); its CRL distribution point
// is under baseURL, where hisp serve's admin listener serves it.
func (o *Ops) IssueCert(ctx context.Context, ownerArg, baseURL string) (CertImported, error) {
	owner, domain, err := store.ParseOwner(ownerArg)
	if err != nil {
		return CertImported{}, invalidf("%v", err)
	}
	if baseURL == "" {
		return CertImported{}, invalidf("no base URL for the CRL")
	}
	ca, created, err := o.LocalCA(ctx, domain)
	if err != nil {
		return CertImported{}, err
	}
	serial, err := o.st.NextSerial(ctx, domain)
	if err != nil {
		return CertImported{}, err
	}
	cert, key, err := ca.Issue(devca.Request{Owner: owner, Serial: big.NewInt(serial), BaseURL: baseURL})
	if err != nil {
		return CertImported{}, err
	}
	sc, err := o.st.AddCertificate(ctx, owner, cert, nil, key)
	if err != nil {
		return CertImported{}, err
	}
	o.audit(ctx, "cert.issue", owner, "certificate "+strconv.FormatInt(sc.ID, 10)+" serial "+cert.SerialNumber.String())
	res := CertImported{Cert: sc, Role: UsageRole(cert), Key: KeyDescription(cert), CA: ca, CACreated: created, Serial: cert.SerialNumber}
	if len(cert.CRLDistributionPoints) > 0 {
		res.CRL = cert.CRLDistributionPoints[0]
	}
	return res, nil
}

// Certs lists the certificates of an address, of a domain (address- and
// organization-bound), or all (""). Keys are never part of it.
func (o *Ops) Certs(ctx context.Context, filter string) ([]CertInfo, error) {
	var f store.CertFilter
	if filter != "" {
		owner, domain, err := store.ParseOwner(filter)
		if err != nil {
			return nil, invalidf("%v", err)
		}
		if _, err := o.domain(ctx, domain); err != nil {
			return nil, err
		}
		if owner == domain {
			f.Domain = domain
		} else {
			f.Owner = owner
		}
	}
	list, err := o.st.Certificates(ctx, f)
	if err != nil {
		return nil, err
	}
	out := []CertInfo{}
	for _, sc := range list {
		out = append(out, certInfo(sc))
	}
	return out, nil
}

// CertRemoved is what RemoveCert did.
type CertRemoved struct {
	Cert store.Certificate
	// Revoked is the serial put on the local CA's CRL; nil if another CA
	// issued the certificate.
	Revoked *big.Int
}

// RemoveCert removes a certificate and its key; a certificate of the
// domain's local CA is also revoked on its CRL.
func (o *Ops) RemoveCert(ctx context.Context, id int64) (CertRemoved, error) {
	sc, err := o.st.RemoveCertificate(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return CertRemoved{}, &kindError{store.ErrNotFound, fmt.Sprintf("no certificate %d (see %s cert list)", id, o.prog())}
	} else if err != nil {
		return CertRemoved{}, err
	}
	o.audit(ctx, "cert.remove", sc.Owner, "certificate "+strconv.FormatInt(sc.ID, 10)+" "+sc.Fingerprint)
	res := CertRemoved{Cert: sc}
	cert, err := sc.Parse()
	if err != nil {
		return res, nil
	}
	rec, err := o.st.LocalCA(ctx, sc.Domain)
	if err != nil {
		return res, nil
	}
	caCert, err := rec.Parse()
	if err != nil || cert.CheckSignatureFrom(caCert) != nil {
		return res, nil
	}
	if err := o.st.Revoke(ctx, sc.Domain, cert.SerialNumber, 0, o.now()); err != nil {
		return res, err
	}
	o.audit(ctx, "cert.revoke", sc.Owner, "serial "+cert.SerialNumber.String())
	res.Revoked = cert.SerialNumber
	return res, nil
}

// Expiring returns the certificates of all (a listing of Certs) that
// expire within the given time from now (or have expired), soonest first.
func (o *Ops) Expiring(all []CertInfo, within time.Duration) []CertInfo {
	limit := o.now().Add(within)
	var out []CertInfo
	for _, c := range all {
		if c.NotAfter.Before(limit) {
			out = append(out, c)
		}
	}
	sortBy(out, func(a, b CertInfo) bool { return a.NotAfter.Before(b.NotAfter) })
	return out
}

// day formats a time as a date.
func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02")
}
