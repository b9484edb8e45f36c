package trust

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
	"time"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// oidEmailAddress is the PKCS#9 emailAddress attribute of a subject DN.
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// bind says how cert binds to address, and why (or why not) in words.
//
// Only the subjectAltName counts (AS-04): an rfc822Name equal to the address
// (address-bound), or a dNSName equal to its domain (organization-bound,
// AS-02). Both compare case-insensitively, local part included (AS-03). A
// wildcard dNSName never binds (AS-05). An address-bound name wins over a
// domain-bound one (AS-08). An address without '@' is a domain and binds only
// by dNSName.
func bind(cert *x509.Certificate, address string) (Binding, string) {
	address = strings.TrimSpace(address)
	if address == "" {
		return Unbound, "no address to bind the certificate to"
	}
	domain := address
	isAddress := false
	if i := strings.LastIndexByte(address, '@'); i >= 0 {
		domain = address[i+1:]
		isAddress = true
	}
	domain = strings.TrimSuffix(domain, ".")

	if isAddress {
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, address) {
				return AddressBound, "SAN rfc822Name " + e
			}
		}
	}
	var wildcards []string
	for _, d := range cert.DNSNames {
		if strings.HasPrefix(d, "*") {
			wildcards = append(wildcards, d)
			continue
		}
		if domain != "" && strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return DomainBound, "SAN dNSName " + d
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "certificate %s is not bound to %s:", certName(cert), address)
	var have []string
	if len(cert.EmailAddresses) > 0 {
		have = append(have, "SAN rfc822Name "+strings.Join(cert.EmailAddresses, ", "))
	}
	if len(cert.DNSNames) > 0 {
		have = append(have, "SAN dNSName "+strings.Join(cert.DNSNames, ", "))
	}
	if len(have) == 0 {
		b.WriteString(" it has no SAN rfc822Name or dNSName")
	} else {
		b.WriteString(" it names " + strings.Join(have, "; "))
	}
	if !isAddress && len(cert.EmailAddresses) > 0 {
		b.WriteString("; only a dNSName binds to a domain")
	}
	if len(wildcards) > 0 {
		b.WriteString("; a wildcard dNSName never binds (AS-05)")
	}
	if emails := subjectEmails(cert); len(emails) > 0 {
		fmt.Fprintf(&b, "; subject emailAddress %s does not bind, only subjectAltName does (AS-04)", strings.Join(emails, ", "))
	}
	return Unbound, b.String()
}

func subjectEmails(cert *x509.Certificate) []string {
	var l []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidEmailAddress) {
			if s, ok := atv.Value.(string); ok {
				l = append(l, s)
			}
		}
	}
	return l
}

// checkValidity checks the validity period of cert at now (TV-01).
func checkValidity(cert *x509.Certificate, now time.Time) string {
	if now.Before(cert.NotBefore) {
		return fmt.Sprintf("certificate %s is not valid before %s", certName(cert), formatTime(cert.NotBefore))
	}
	if now.After(cert.NotAfter) {
		return fmt.Sprintf("certificate %s expired on %s", certName(cert), formatTime(cert.NotAfter))
	}
	return ""
}

// checkLeafUsage checks key usage and extended key usage of the end-entity
// certificate for the purpose (AS-06).
func (v *Validator) checkLeafUsage(cert *x509.Certificate, p Purpose) string {
	switch {
	case cert.KeyUsage == 0 && v.allowNoKU:
		// RFC 5280: no KeyUsage extension, no restriction.
	case cert.KeyUsage == 0:
		return fmt.Sprintf("certificate %s has no key usage, so it is not usable for %s (AS-06)", certName(cert), p)
	case p == Signing && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return fmt.Sprintf("key usage of %s (%s) lacks digitalSignature, needed for signing (AS-06)", certName(cert), keyUsageString(cert.KeyUsage))
	case p == Encryption && cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0:
		return fmt.Sprintf("key usage of %s (%s) lacks keyEncipherment, needed for encryption (AS-06)", certName(cert), keyUsageString(cert.KeyUsage))
	}
	if !ekuAllowsEmail(cert) {
		return fmt.Sprintf("extended key usage of %s does not include emailProtection", certName(cert))
	}
	return ""
}

// ekuAllowsEmail reports whether cert has no EKU extension, or one that
// includes emailProtection or anyExtendedKeyUsage.
func ekuAllowsEmail(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageEmailProtection || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// checkKey checks the public key against the Direct profile
// (directprofile.Keys, MinRSABits, Curves; DT-04, TV-09): for every
// certificate of a path a key type and size or curve Direct uses, and for
// an end-entity certificate used for encryption a key Direct encrypts to.
func checkKey(cert *x509.Certificate, p Purpose, leaf bool) string {
	use := directprofile.AnyUse
	if leaf && p == Encryption {
		use = directprofile.Encryption
	}
	if _, _, err := directprofile.CheckCertKey(cert, use); err != nil {
		return fmt.Sprintf("certificate %s has %v", certName(cert), err)
	}
	return ""
}

// checkSignatureAlgorithm refuses a certificate signature the Direct
// profile does not accept: SHA-1, MD5 and anything but SHA-2 with RSA
// (PKCS #1 v1.5 or PSS) or ECDSA (directprofile.Signatures; DT-04, TV-09).
func checkSignatureAlgorithm(cert *x509.Certificate) string {
	if err := directprofile.CheckX509Signature(cert.SignatureAlgorithm); err != nil {
		return fmt.Sprintf("certificate %s is signed with %v", certName(cert), err)
	}
	return ""
}

// checkChain applies the algorithm and usage rules to every certificate of a
// chain built by crypto/x509 (leaf first, anchor last). The leaf's own usage
// and validity have been checked before, and crypto/x509 checked validity
// periods and CA basic constraints of the rest.
func checkChain(chain []*x509.Certificate, p Purpose) string {
	for i, c := range chain {
		anchor := i == len(chain)-1
		if reason := checkKey(c, p, i == 0); reason != "" {
			return reason
		}
		// A self-signed anchor's own signature is not relied upon.
		if !(anchor && isSelfIssued(c)) {
			if reason := checkSignatureAlgorithm(c); reason != "" {
				return reason
			}
		}
		if i == 0 || anchor {
			continue
		}
		if !ekuAllowsEmail(c) {
			return fmt.Sprintf("intermediate %s has an extended key usage without emailProtection", certName(c))
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Sprintf("intermediate %s has a key usage without keyCertSign", certName(c))
		}
	}
	return ""
}

// isSelfIssued reports whether subject and issuer are the same name.
func isSelfIssued(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer)
}

func containsCert(l []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range l {
		if x != nil && x.Equal(c) {
			return true
		}
	}
	return false
}

// certName names a certificate in a reason: its quoted common name, else its
// subject, else its serial number.
func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	if s := c.Subject.String(); s != "" {
		return fmt.Sprintf("%q", s)
	}
	return "with serial " + c.SerialNumber.Text(16)
}

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func keyUsageString(ku x509.KeyUsage) string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var l []string
	for i, n := range names {
		if ku&(1<<i) != 0 {
			l = append(l, n)
		}
	}
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
