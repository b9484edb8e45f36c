package trust

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
)

// maxAIAFetches bounds how many missing issuers one validation fetches.
const maxAIAFetches = 4

// maxAIASize bounds the size of an AIA caIssuers response.
const maxAIASize = 1 << 20

// aiaTTL is how long certificates fetched from an AIA URL are cached.
const aiaTTL = 24 * time.Hour

type aiaEntry struct {
	certs   []*x509.Certificate
	expires time.Time
}

// Chains returns the paths from leaf to one of anchors, leaf first, with
// missing intermediates fetched from AIA caIssuers URLs as Validate fetches
// them (TV-03), unless offline. It checks the path and validity only, for
// tools that show whether a signer chains to an anchor (hisp message open);
// the error says why there is none.
func (v *Validator) Chains(ctx context.Context, leaf *x509.Certificate, intermediates, anchors []*x509.Certificate, offline bool) ([][]*x509.Certificate, error) {
	chains, reason := v.buildChains(ctx, leaf, intermediates, anchors, v.now(), !offline)
	if reason != "" {
		return nil, errors.New(reason)
	}
	return chains, nil
}

// buildChains finds the paths from leaf to the anchors with crypto/x509,
// fetching missing issuers from AIA caIssuers URLs when fetch is set
// (TV-02, TV-03). On failure it returns a reason.
func (v *Validator) buildChains(ctx context.Context, leaf *x509.Certificate, intermediates, anchors []*x509.Certificate, now time.Time, fetch bool) ([][]*x509.Certificate, string) {
	roots := x509.NewCertPool()
	for _, a := range anchors {
		if a != nil {
			roots.AddCert(a)
		}
	}
	pool := x509.NewCertPool()
	have := map[string]bool{}
	for _, c := range intermediates {
		if c != nil && !have[string(c.Raw)] {
			have[string(c.Raw)] = true
			pool.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: pool,
		CurrentTime:   now,
		// EKU is checked by checkLeafUsage and checkChain, not by crypto/x509.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for i := 0; ; i++ {
		chains, err := leaf.Verify(opts)
		if err == nil {
			return chains, ""
		}
		var uae x509.UnknownAuthorityError
		if !fetch || !errors.As(err, &uae) || uae.Cert == nil || len(uae.Cert.IssuingCertificateURL) == 0 || i >= maxAIAFetches {
			return nil, describeVerifyError(err, now)
		}
		// TV-03: an intermediate is missing; fetch it from caIssuers.
		certs, ferr := v.fetchIssuers(ctx, uae.Cert, now)
		if ferr != nil {
			return nil, fmt.Sprintf("no path to a trust anchor: the issuer of %s is neither an anchor nor a given intermediate, and fetching it from the AIA caIssuers URL failed: %v (TV-03)", certName(uae.Cert), ferr)
		}
		added := 0
		for _, c := range certs {
			if !have[string(c.Raw)] {
				have[string(c.Raw)] = true
				pool.AddCert(c)
				added++
			}
		}
		if added == 0 {
			return nil, describeVerifyError(err, now)
		}
	}
}

// describeVerifyError turns an error of crypto/x509's Verify into a reason.
func describeVerifyError(err error, now time.Time) string {
	var cie x509.CertificateInvalidError
	if errors.As(err, &cie) && cie.Cert != nil {
		c := cie.Cert
		switch cie.Reason {
		case x509.Expired:
			if r := checkValidity(c, now); r != "" {
				return r
			}
			return fmt.Sprintf("certificate %s is outside its validity period", certName(c))
		case x509.NotAuthorizedToSign:
			return fmt.Sprintf("no path to a trust anchor: %s is not a CA certificate, so it cannot issue certificates", certName(c))
		case x509.CANotAuthorizedForThisName:
			return fmt.Sprintf("name constraints of %s forbid this certificate: %s", certName(c), cie.Detail)
		case x509.TooManyIntermediates:
			return fmt.Sprintf("path too long: the path length constraint of %s is exceeded", certName(c))
		case x509.TooManyConstraints:
			return fmt.Sprintf("certificate %s has too many name constraints to check", certName(c))
		}
		return "no path to a trust anchor: " + err.Error()
	}
	var uae x509.UnknownAuthorityError
	if errors.As(err, &uae) && uae.Cert != nil {
		// crypto/x509 refuses to check a SHA-1 signature and reports the
		// issuer as unknown; name the real problem.
		var iae x509.InsecureAlgorithmError
		if strings.Contains(err.Error(), "insecure algorithm") || errors.As(err, &iae) {
			if r := checkSignatureAlgorithm(uae.Cert); r != "" {
				return r
			}
		}
		msg := fmt.Sprintf("no path to a trust anchor: no anchor or intermediate issued %s (issuer %q)", certName(uae.Cert), uae.Cert.Issuer.String())
		// The error text carries crypto/x509's hint, e.g. a candidate issuer
		// whose signature uses SHA-1.
		if _, hint, ok := strings.Cut(err.Error(), "(possibly because of "); ok {
			msg += ", possibly because of " + strings.TrimSuffix(hint, ")")
		}
		return msg + " (TV-02)"
	}
	var uce x509.UnhandledCriticalExtension
	if errors.As(err, &uce) {
		return "a certificate in the path has an unhandled critical extension"
	}
	return "no path to a trust anchor: " + err.Error()
}

// fetchIssuers fetches the issuer of cert from its AIA caIssuers URLs,
// trying each in turn.
func (v *Validator) fetchIssuers(ctx context.Context, cert *x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	var errs []error
	for _, u := range cert.IssuingCertificateURL {
		if !isHTTPURL(u) {
			errs = append(errs, fmt.Errorf("%s: only http and https URLs are supported", u))
			continue
		}
		certs, err := v.aiaCerts(ctx, u, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return certs, nil
	}
	return nil, errors.Join(errs...)
}

func (v *Validator) aiaCerts(ctx context.Context, url string, now time.Time) ([]*x509.Certificate, error) {
	v.mu.Lock()
	e := v.aia[url]
	v.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		return e.certs, nil
	}
	key := "aia " + url
	r, err := v.once(ctx, key, now, func() (any, error) {
		data, err := httpGet(ctx, v.client, url, maxAIASize)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", url, err)
		}
		certs, err := parseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("parse certificates from %s: %w", url, err)
		}
		v.mu.Lock()
		v.aia[url] = &aiaEntry{certs: certs, expires: now.Add(aiaTTL)}
		sweep(v.aia, now, func(e *aiaEntry) time.Time { return e.expires })
		v.mu.Unlock()
		v.log.Debug("fetched issuer certificates from AIA", "url", url, "count", len(certs))
		return certs, nil
	})
	if err != nil {
		return nil, err
	}
	return r.([]*x509.Certificate), nil
}

// parseCertificates reads what a caIssuers URL serves: one DER certificate,
// PEM certificates, or a certs-only PKCS#7 in DER or PEM (RFC 5280 section
// 4.2.2.1).
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	if block, _ := pem.Decode(data); block != nil {
		var certs []*x509.Certificate
		for rest := data; ; {
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			switch block.Type {
			case "CERTIFICATE":
				c, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return nil, err
				}
				certs = append(certs, c)
			case "PKCS7", "CMS", "PKCS #7 SIGNED DATA":
				l, err := parsePKCS7Certs(block.Bytes)
				if err != nil {
					return nil, err
				}
				certs = append(certs, l...)
			}
		}
		if len(certs) == 0 {
			return nil, errors.New("no certificates in PEM data")
		}
		return certs, nil
	}
	if c, err := x509.ParseCertificate(data); err == nil {
		return []*x509.Certificate{c}, nil
	}
	certs, err := parsePKCS7Certs(data)
	if err != nil {
		return nil, fmt.Errorf("neither a DER certificate nor a certs-only PKCS#7: %w", err)
	}
	return certs, nil
}

// parsePKCS7Certs returns the certificates of a DER PKCS#7 SignedData.
func parsePKCS7Certs(der []byte) (certs []*x509.Certificate, err error) {
	p7, err := parsePKCS7(der)
	if err != nil {
		return nil, err
	}
	if len(p7.Certificates) == 0 {
		return nil, errors.New("no certificates in PKCS#7")
	}
	return p7.Certificates, nil
}

// errParserPanic marks an error made from a panic of the PKCS#7 parser, so
// the fuzz test can still report it.
var errParserPanic = errors.New("PKCS#7 parser panicked")

// parsePKCS7 calls pkcs7.Parse, turning a panic of the parser on hostile
// input into an error.
func parsePKCS7(der []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		if x := recover(); x != nil {
			p7, err = nil, fmt.Errorf("malformed PKCS#7: %w: %v", errParserPanic, x)
		}
	}()
	return pkcs7.Parse(der)
}

// verifyPKCS7 calls Verify, turning a panic into an error.
func verifyPKCS7(p7 *pkcs7.PKCS7) (err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("malformed signature: %w: %v", errParserPanic, x)
		}
	}()
	return p7.Verify()
}
