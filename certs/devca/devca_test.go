package devca

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

func TestIssue(t *testing.T) {
	now := time.Now()
	ca, err := New("A.Example", now)
	tcheck(t, err, "new CA")
	if ca.Domain != "a.example" || ca.Cert.Subject.CommonName != "hisp trial CA for a.example" || !ca.Cert.IsCA {
		t.Fatalf("CA %s, domain %q", ca.Cert.Subject, ca.Domain)
	}
	if ca.Cert.SignatureAlgorithm != x509.SHA256WithRSA || ca.Cert.PublicKey.(*rsa.PublicKey).N.BitLen() != 2048 {
		t.Errorf("CA algorithm %v", ca.Cert.SignatureAlgorithm)
	}
	tcheck(t, ca.Cert.CheckSignatureFrom(ca.Cert), "CA self-signature")
	if ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 || ca.Cert.KeyUsage&x509.KeyUsageCRLSign == 0 || len(ca.Cert.SubjectKeyId) == 0 {
		t.Errorf("CA key usage %v, SKI %x", ca.Cert.KeyUsage, ca.Cert.SubjectKeyId)
	}

	// The CA survives a round trip through its stored form.
	ca, err = Load("a.example", ca.Cert.Raw, ca.Key)
	tcheck(t, err, "load CA")

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for i, owner := range []string{"Bob@a.example", "a.example"} {
		cert, key, err := ca.Issue(Request{Owner: owner, Serial: big.NewInt(int64(i + 1)), BaseURL: "http://hisp.a.example:8080/"})
		tcheck(t, err, "issue "+owner)
		if cert.SerialNumber.Int64() != int64(i+1) {
			t.Errorf("%s: serial %v", owner, cert.SerialNumber)
		}
		if i == 0 {
			if !slices.Equal(cert.EmailAddresses, []string{"bob@a.example"}) || len(cert.DNSNames) != 0 {
				t.Errorf("%s: SAN email %v dns %v", owner, cert.EmailAddresses, cert.DNSNames)
			}
			if cert.Subject.CommonName != "bob@a.example" {
				t.Errorf("%s: CN %q", owner, cert.Subject.CommonName)
			}
		} else {
			if !slices.Equal(cert.DNSNames, []string{"a.example"}) || len(cert.EmailAddresses) != 0 {
				t.Errorf("%s: SAN email %v dns %v", owner, cert.EmailAddresses, cert.DNSNames)
			}
			if cert.Subject.CommonName != "a.example" {
				t.Errorf("%s: CN %q", owner, cert.Subject.CommonName)
			}
		}
		if !slices.Equal(cert.Subject.Organization, []string{"a.example"}) {
			t.Errorf("%s: O %v", owner, cert.Subject.Organization)
		}
		if cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
			t.Errorf("%s: key usage %v, want digitalSignature|keyEncipherment", owner, cert.KeyUsage)
		}
		if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}) {
			t.Errorf("%s: EKU %v", owner, cert.ExtKeyUsage)
		}
		if !slices.Equal(cert.CRLDistributionPoints, []string{"http://hisp.a.example:8080/crl/a.example.crl"}) {
			t.Errorf("%s: CDP %v", owner, cert.CRLDistributionPoints)
		}
		if !cert.BasicConstraintsValid || cert.IsCA {
			t.Errorf("%s: basic constraints valid=%v CA=%v", owner, cert.BasicConstraintsValid, cert.IsCA)
		}
		if len(cert.SubjectKeyId) == 0 || !bytes.Equal(cert.AuthorityKeyId, ca.Cert.SubjectKeyId) {
			t.Errorf("%s: SKI %x AKI %x, CA SKI %x", owner, cert.SubjectKeyId, cert.AuthorityKeyId, ca.Cert.SubjectKeyId)
		}
		if cert.SignatureAlgorithm != x509.SHA256WithRSA || key.N.BitLen() != 2048 || !key.PublicKey.Equal(cert.PublicKey) {
			t.Errorf("%s: algorithm %v, key %d bits", owner, cert.SignatureAlgorithm, key.N.BitLen())
		}
		if d := cert.NotAfter.Sub(now); d < CertValidity-time.Hour || d > CertValidity+time.Hour {
			t.Errorf("%s: valid for %v, want about 2 years", owner, d)
		}
		if !ca.Issued(cert) {
			t.Errorf("%s: Issued = false", owner)
		}
		_, err = cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
		tcheck(t, err, "verify "+owner)
	}

	// Default CRL URL.
	cert, _, err := ca.Issue(Request{Owner: "carol@a.example", Serial: big.NewInt(9)})
	tcheck(t, err, "issue with default URL")
	if !slices.Equal(cert.CRLDistributionPoints, []string{"http://localhost:8080/crl/a.example.crl"}) {
		t.Errorf("default CDP %v", cert.CRLDistributionPoints)
	}

	for _, bad := range []string{"bob@b.example", "b.example", "@a.example", "x@y@a.example"} {
		if _, _, err := ca.Issue(Request{Owner: bad, Serial: big.NewInt(5)}); err == nil {
			t.Errorf("issued for %q", bad)
		}
	}
	if _, _, err := ca.Issue(Request{Owner: "bob@a.example"}); err == nil {
		t.Error("issued without a serial")
	}

	other, err := New("b.example", now)
	tcheck(t, err, "second CA")
	if other.Issued(cert) {
		t.Error("another CA claims the certificate")
	}
	if _, err := Load("b.example", other.Cert.Raw, ca.Key); err == nil {
		t.Error("Load accepted a key that does not match")
	}
}

func TestCRL(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ca, err := New("a.example", now)
	tcheck(t, err, "new CA")
	revoked := []x509.RevocationListEntry{
		{SerialNumber: big.NewInt(2), RevocationTime: now.Add(-time.Hour).UTC()},
		{SerialNumber: big.NewInt(5), RevocationTime: now.Add(-time.Minute).UTC(), ReasonCode: 1},
	}
	der, err := ca.CRL(big.NewInt(3), revoked, now)
	tcheck(t, err, "CRL")
	crl, err := x509.ParseRevocationList(der)
	tcheck(t, err, "parse CRL")
	tcheck(t, crl.CheckSignatureFrom(ca.Cert), "CRL signature")
	if crl.Number.Int64() != 3 || !crl.ThisUpdate.Equal(now) || !crl.NextUpdate.Equal(now.Add(7*24*time.Hour)) {
		t.Errorf("CRL number %v this %v next %v", crl.Number, crl.ThisUpdate, crl.NextUpdate)
	}
	if len(crl.RevokedCertificateEntries) != 2 {
		t.Fatalf("%d entries, want 2", len(crl.RevokedCertificateEntries))
	}
	for i, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(revoked[i].SerialNumber) != 0 || !e.RevocationTime.Equal(revoked[i].RevocationTime) || e.ReasonCode != revoked[i].ReasonCode {
			t.Errorf("entry %d: %v %v %d", i, e.SerialNumber, e.RevocationTime, e.ReasonCode)
		}
	}
	if !bytes.Equal(crl.AuthorityKeyId, ca.Cert.SubjectKeyId) {
		t.Errorf("CRL AKI %x, CA SKI %x", crl.AuthorityKeyId, ca.Cert.SubjectKeyId)
	}

	other, err := New("b.example", now)
	tcheck(t, err, "other CA")
	if crl.CheckSignatureFrom(other.Cert) == nil {
		t.Error("CRL verifies against another CA")
	}

	empty, err := ca.CRL(big.NewInt(4), nil, now)
	tcheck(t, err, "empty CRL")
	crl, err = x509.ParseRevocationList(empty)
	tcheck(t, err, "parse empty CRL")
	if len(crl.RevokedCertificateEntries) != 0 {
		t.Error("empty CRL has entries")
	}
}

func TestCRLURL(t *testing.T) {
	for _, tc := range []struct{ base, domain, want string }{
		{"", "A.example", "http://localhost:8080/crl/a.example.crl"},
		{"https://hisp.example/", "b.example", "https://hisp.example/crl/b.example.crl"},
	} {
		if got := CRLURL(tc.base, tc.domain); got != tc.want {
			t.Errorf("CRLURL(%q, %q) = %q, want %q", tc.base, tc.domain, got, tc.want)
		}
	}
}

// TestOpenSSLVerify checks an issued certificate and the CRL with openssl,
// an independent X.509 implementation.
func TestOpenSSLVerify(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	ca, err := New("a.example", time.Now())
	tcheck(t, err, "new CA")
	cert, _, err := ca.Issue(Request{Owner: "bob@a.example", Serial: big.NewInt(7)})
	tcheck(t, err, "issue")
	crl, err := ca.CRL(big.NewInt(1), []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: time.Now().UTC()}}, time.Now())
	tcheck(t, err, "CRL")
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		tcheck(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600), "write "+name)
		return p
	}
	caFile := write("ca.pem", "CERTIFICATE", ca.Cert.Raw)
	certFile := write("bob.pem", "CERTIFICATE", cert.Raw)
	crlFile := write("a.crl", "X509 CRL", crl)
	for _, purpose := range []string{"smimesign", "smimeencrypt"} {
		out, err := exec.Command("openssl", "verify", "-purpose", purpose, "-CAfile", caFile, certFile).CombinedOutput()
		if err != nil {
			t.Errorf("openssl verify -purpose %s: %v\n%s", purpose, err, out)
		}
	}
	out, err := exec.Command("openssl", "verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crlFile, certFile).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("revoked")) {
		t.Errorf("openssl verify with the CRL: %v, want revoked\n%s", err, out)
	}
}
