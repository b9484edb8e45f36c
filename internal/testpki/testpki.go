// Package testpki makes certificate authorities, certificates and keys for
// tests: Direct-shaped (SAN binding, key usage, emailProtection) and
// deliberately broken ones. It is test support only; production
// certificates come from package certs.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Identity is a certificate with its key.
type Identity struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Options shape a certificate; zero values give a valid Direct end-entity
// certificate: RSA-2048, SHA-256, dual-use, emailProtection, one year.
type Options struct {
	Email     []string // SAN rfc822Name
	DNS       []string // SAN dNSName
	CN        string
	KeyBits   int    // RSA size, default 2048
	Curve     string // "P-256" or "P-384": an ECDSA key instead of RSA
	KeyUsage  x509.KeyUsage
	NotBefore time.Time
	NotAfter  time.Time
	SigAlg    x509.SignatureAlgorithm
	CA        bool
	CRL       []string // CRL distribution points
	OCSP      []string
	AIA       []string // caIssuers URLs
	// Policies are certificate policy OIDs ("1.3.6.1.4.1.41179.1.3").
	Policies []string
}

// NewKey makes the key Options asks for.
func NewKey(t testing.TB, o Options) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch o.Curve {
	case "P-256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "P-384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		bits := o.KeyBits
		if bits == 0 {
			bits = 2048
		}
		k, err = rsa.GenerateKey(rand.Reader, bits)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewCA makes a self-signed root CA.
func NewCA(t testing.TB, cn string) *Identity {
	t.Helper()
	return Issue(t, nil, Options{CN: cn, CA: true})
}

// Issue makes a certificate signed by issuer (self-signed when nil).
func Issue(t testing.TB, issuer *Identity, o Options) *Identity {
	t.Helper()
	key := NewKey(t, o)
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if o.CN == "" {
		switch {
		case len(o.Email) > 0:
			o.CN = o.Email[0]
		case len(o.DNS) > 0:
			o.CN = o.DNS[0]
		default:
			o.CN = "test"
		}
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	ski := sha1.Sum(pubDER)
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: o.CN, Organization: []string{"hisp tests"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		EmailAddresses:        o.Email,
		DNSNames:              o.DNS,
		SubjectKeyId:          ski[:],
		BasicConstraintsValid: true,
		IsCA:                  o.CA,
		SignatureAlgorithm:    o.SigAlg,
		CRLDistributionPoints: o.CRL,
		OCSPServer:            o.OCSP,
		IssuingCertificateURL: o.AIA,
	}
	for _, p := range o.Policies {
		oid, err := x509.ParseOID(p)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.Policies = append(tmpl.Policies, oid)
	}
	if o.CA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = o.KeyUsage
		if tmpl.KeyUsage == 0 {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
			if o.Curve != "" {
				tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			}
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	}
	parent, signer := tmpl, key
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Identity{Cert: cert, Key: key}
}

// CertPEM returns the certificate as PEM.
func (id *Identity) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})
}

// KeyPEM returns the private key as PKCS#8 PEM.
func (id *Identity) KeyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFiles writes name.pem (certificate) and name.key (PKCS#8) in dir and
// returns their paths.
func (id *Identity) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, id.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, id.KeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
