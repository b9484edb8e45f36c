// Package devca is a per-domain local certificate authority for trials: it
// makes a self-signed root ("hisp trial CA for <domain>") and issues
// end-entity certificates shaped like DirectTrust's, so a domain can send
// and receive Direct messages before it has certificates from an accredited
// CA. It also signs the CA's certificate revocation list.
//
// The package holds no state: the caller keeps the CA certificate and key,
// serial numbers, CRL numbers and revoked serials (package store does), and
// passes them in as plain values.
package devca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// DefaultBaseURL is where hisp serves CRLs by default: the admin listener of
// the default configuration (hostname localhost, admin port 8080).
const DefaultBaseURL = "http://localhost:8080"

// Validity periods.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour // the trial root
	CertValidity = 2 * 365 * 24 * time.Hour  // end-entity certificates
	CRLValidity  = 7 * 24 * time.Hour        // nextUpdate of a CRL after thisUpdate
)

// KeyBits is the RSA key size of the CA and the certificates it issues:
// the smallest the Direct profile accepts (AL-10).
const KeyBits = directprofile.MinRSABits

// backdate is how far before "now" certificates start, for clock skew.
const backdate = 5 * time.Minute

// CA is a domain's local certificate authority.
type CA struct {
	Domain string // lower case
	Cert   *x509.Certificate
	Key    crypto.Signer
}

// CommonName returns the subject common name of the CA of a domain.
func CommonName(domain string) string {
	return "hisp trial CA for " + strings.ToLower(domain)
}

// CRLURL returns the URL of a domain's CRL under baseURL ("" for
// DefaultBaseURL): baseURL/crl/<domain>.crl, which hisp's admin listener
// serves.
func CRLURL(baseURL, domain string) string {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	return strings.TrimSuffix(baseURL, "/") + "/crl/" + strings.ToLower(domain) + ".crl"
}

// New makes a new CA for domain: an RSA-2048 self-signed root valid from now
// for CAValidity, signed with SHA-256.
func New(domain string, now time.Time) (*CA, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" || strings.Contains(domain, "@") {
		return nil, fmt.Errorf("new CA: invalid domain %q", domain)
	}
	key, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("new CA for %s: generate key: %w", domain, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA for %s: %w", domain, err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("new CA for %s: %w", domain, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: CommonName(domain), Organization: []string{domain}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA for %s: sign: %w", domain, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA for %s: %w", domain, err)
	}
	return &CA{Domain: domain, Cert: cert, Key: key}, nil
}

// Load returns the CA of domain from its stored certificate and key,
// checking that they belong together and that the certificate is a CA.
func Load(domain string, certDER []byte, key crypto.Signer) (*CA, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("load CA of %s: %w", domain, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA of %s: certificate is not a CA", domain)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA of %s: key does not match the certificate", domain)
	}
	return &CA{Domain: strings.ToLower(domain), Cert: cert, Key: key}, nil
}

// Request describes a certificate to issue.
type Request struct {
	// Owner is a Direct address of the CA's domain (an address-bound
	// certificate, SAN rfc822Name) or the domain itself (organization-bound,
	// SAN dNSName).
	Owner string
	// Serial is the certificate serial number, unique for this CA (the
	// caller's counter); it must be positive.
	Serial *big.Int
	// BaseURL is where the CRL distribution point points: BaseURL/crl/<domain>.crl;
	// "" is DefaultBaseURL.
	BaseURL string
	// Organization is the subject O; "" is the domain.
	Organization string
	// Now is the issue time; zero is time.Now().
	Now time.Time
}

// Issue makes a new RSA-2048 key and a certificate for it, shaped like a
// DirectTrust end-entity certificate: SHA-256 with RSA, dual use (key usage
// digitalSignature and keyEncipherment), extended key usage
// emailProtection, the owner in the SAN and the subject CN, subject and
// authority key identifiers, basic constraints CA:false, the CA's CRL
// distribution point, and valid for CertValidity (not beyond the CA).
func (ca *CA) Issue(r Request) (*x509.Certificate, *rsa.PrivateKey, error) {
	owner := strings.ToLower(strings.TrimSpace(r.Owner))
	tmpl := &x509.Certificate{}
	if local, domain, ok := strings.Cut(owner, "@"); ok {
		if local == "" || domain != ca.Domain || strings.Contains(domain, "@") {
			return nil, nil, fmt.Errorf("issue: %q is not an address of %s", r.Owner, ca.Domain)
		}
		tmpl.EmailAddresses = []string{owner}
	} else {
		if owner != ca.Domain {
			return nil, nil, fmt.Errorf("issue: the CA of %s cannot issue for %q", ca.Domain, r.Owner)
		}
		tmpl.DNSNames = []string{owner}
	}
	if r.Serial == nil || r.Serial.Sign() <= 0 {
		return nil, nil, errors.New("issue: serial number must be positive")
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	org := r.Organization
	if org == "" {
		org = ca.Domain
	}
	key, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, nil, fmt.Errorf("issue for %s: generate key: %w", owner, err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("issue for %s: %w", owner, err)
	}
	notAfter := now.Add(CertValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl.SerialNumber = r.Serial
	tmpl.Subject = pkix.Name{CommonName: owner, Organization: []string{org}}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	tmpl.SubjectKeyId = ski
	tmpl.AuthorityKeyId = ca.Cert.SubjectKeyId
	tmpl.CRLDistributionPoints = []string{CRLURL(r.BaseURL, ca.Domain)}
	tmpl.SignatureAlgorithm = x509.SHA256WithRSA
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue for %s: sign: %w", owner, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("issue for %s: %w", owner, err)
	}
	return cert, key, nil
}

// Issued reports whether cert was issued by this CA (its signature checks
// against the CA key).
func (ca *CA) Issued(cert *x509.Certificate) bool {
	return cert.CheckSignatureFrom(ca.Cert) == nil
}

// CRL signs the CA's certificate revocation list (DER) numbered number,
// listing revoked, valid from now until now+CRLValidity.
func (ca *CA) CRL(number *big.Int, revoked []x509.RevocationListEntry, now time.Time) ([]byte, error) {
	if number == nil || number.Sign() < 0 {
		return nil, errors.New("CRL: number must not be negative")
	}
	tmpl := &x509.RevocationList{
		SignatureAlgorithm:        x509.SHA256WithRSA,
		RevokedCertificateEntries: revoked,
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(CRLValidity),
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("CRL of %s: %w", ca.Domain, err)
	}
	return der, nil
}

// subjectKeyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of
// the subjectPublicKey bits.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key identifier: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("subject key identifier: %w", err)
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

// randomSerial returns a positive random 127-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
