package trust

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hisp-project/hisp/smime/directprofile"
	"golang.org/x/crypto/ocsp"
)

// Revocation checking (TV-04).
//
// Each certificate of a chain but the anchor is checked against the CRL of
// its first usable http(s) CRL distribution point and against the OCSP
// responders of its AIA extension. A certificate is revoked when any source
// says so. It is not revoked when at least one source answers and none says
// revoked, or when it names no source at all. When sources are named but
// none answers usefully (unreachable, wrong signature, out of date), the
// status is unavailable and Options.Revocation decides.
//
// CRLs are cached until their nextUpdate (at most maxCRLAge), OCSP responses
// until theirs (at most maxCRLAge, maxOCSPAge without one), failures for
// failureTTL.

const (
	maxCRLSize  = 64 << 20
	maxOCSPSize = 1 << 20
	// maxCRLAge bounds how long a CRL or OCSP response is cached even when
	// its nextUpdate is later, so a revocation published early is seen
	// within a day.
	maxCRLAge = 24 * time.Hour
	// noNextUpdateAge is how long a CRL without nextUpdate is cached.
	noNextUpdateAge = time.Hour
	// maxOCSPAge is how long an OCSP response without nextUpdate is cached.
	maxOCSPAge = 15 * time.Minute
	// clockSkew is tolerated on thisUpdate of CRLs and OCSP responses.
	clockSkew = 5 * time.Minute
)

type crlKey struct {
	url    string
	issuer [32]byte // SHA-256 of the issuer certificate the CRL verified with
}

type crlEntry struct {
	revoked map[string]x509.RevocationListEntry // by serial number in hex
	expires time.Time
}

type ocspKey struct {
	url    string
	issuer [32]byte
	serial string
}

type ocspEntry struct {
	resp    *ocsp.Response
	expires time.Time
}

// revocation is the outcome of checking one certificate; at most one field
// is set. With none set the certificate named no revocation source.
type revocation struct {
	revoked     string // why the certificate is revoked
	unavailable string // why its status could not be established
	checked     string // which sources say it is not revoked
}

// revocationStatus checks cert, issued by issuer, against its CRL
// distribution points and OCSP responders.
func (v *Validator) revocationStatus(ctx context.Context, cert, issuer *x509.Certificate, now time.Time) revocation {
	if len(cert.CRLDistributionPoints) == 0 && len(cert.OCSPServer) == 0 {
		return revocation{}
	}
	var good, problems []string
	for _, u := range cert.CRLDistributionPoints {
		e, err := v.crl(ctx, u, cert, issuer, now)
		if err != nil {
			problems = append(problems, fmt.Sprintf("CRL %s: %v", u, err))
			continue
		}
		if r, ok := e.revoked[cert.SerialNumber.Text(16)]; ok && r.ReasonCode != reasonRemoveFromCRL {
			return revocation{revoked: fmt.Sprintf("certificate %s revoked by CRL %s on %s%s", certName(cert), u, formatTime(r.RevocationTime), reasonSuffix(r.ReasonCode))}
		}
		good = append(good, "CRL "+u)
		break
	}
	for _, u := range cert.OCSPServer {
		resp, err := v.ocspResponse(ctx, u, cert, issuer, now)
		if err != nil {
			problems = append(problems, fmt.Sprintf("OCSP %s: %v", u, err))
			continue
		}
		if resp.Status == ocsp.Revoked {
			return revocation{revoked: fmt.Sprintf("certificate %s revoked by OCSP %s on %s%s", certName(cert), u, formatTime(resp.RevokedAt), reasonSuffix(resp.RevocationReason))}
		}
		good = append(good, "OCSP "+u)
		break
	}
	if len(good) > 0 {
		if len(problems) > 0 {
			v.log.Debug("revocation source failed, another answered", "subject", cert.Subject.String(), "problems", strings.Join(problems, "; "))
		}
		return revocation{checked: fmt.Sprintf("%s not revoked (%s)", certName(cert), strings.Join(good, ", "))}
	}
	return revocation{unavailable: fmt.Sprintf("revocation status of %s unavailable: %s", certName(cert), strings.Join(problems, "; "))}
}

// crl returns the verified, current CRL at url for certificates of issuer.
func (v *Validator) crl(ctx context.Context, url string, cert, issuer *x509.Certificate, now time.Time) (*crlEntry, error) {
	if !isHTTPURL(url) {
		return nil, errors.New("only http and https distribution points are supported")
	}
	key := crlKey{url, sha256.Sum256(issuer.Raw)}
	v.mu.Lock()
	e := v.crls[key]
	v.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		return e, nil
	}
	r, err := v.once(ctx, fmt.Sprintf("crl %s %x", url, key.issuer), now, func() (any, error) {
		data, err := httpGet(ctx, v.client, url, maxCRLSize)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		e, err := parseCRL(data, cert, issuer, now)
		if err != nil {
			return nil, err
		}
		v.mu.Lock()
		v.crls[key] = e
		sweep(v.crls, now, func(e *crlEntry) time.Time { return e.expires })
		v.mu.Unlock()
		v.log.Debug("fetched CRL", "url", url, "entries", len(e.revoked), "cached until", e.expires)
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return r.(*crlEntry), nil
}

// parseCRL parses a DER or PEM CRL and checks that issuer issued and signed
// it and that it is current.
func parseCRL(data []byte, cert, issuer *x509.Certificate, now time.Time) (*crlEntry, error) {
	if block, _ := pem.Decode(data); block != nil && block.Type == "X509 CRL" {
		data = block.Bytes
	}
	rl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if string(rl.RawIssuer) != string(cert.RawIssuer) {
		return nil, fmt.Errorf("issued by %q, not by the certificate's issuer %q (indirect CRLs are not supported)", rl.Issuer.String(), cert.Issuer.String())
	}
	if err := directprofile.CheckX509Signature(rl.SignatureAlgorithm); err != nil {
		return nil, fmt.Errorf("signed with %w", err)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("signature does not verify with issuer %s: %w", certName(issuer), err)
	}
	if rl.ThisUpdate.After(now.Add(clockSkew)) {
		return nil, fmt.Errorf("not valid before %s (thisUpdate)", formatTime(rl.ThisUpdate))
	}
	if !rl.NextUpdate.IsZero() && now.After(rl.NextUpdate) {
		return nil, fmt.Errorf("out of date since %s (nextUpdate)", formatTime(rl.NextUpdate))
	}
	e := &crlEntry{
		revoked: make(map[string]x509.RevocationListEntry, len(rl.RevokedCertificateEntries)),
		expires: now.Add(noNextUpdateAge),
	}
	if !rl.NextUpdate.IsZero() {
		e.expires = rl.NextUpdate
	}
	if e.expires.After(now.Add(maxCRLAge)) {
		e.expires = now.Add(maxCRLAge)
	}
	for _, r := range rl.RevokedCertificateEntries {
		if r.SerialNumber != nil {
			r.Raw = nil
			e.revoked[r.SerialNumber.Text(16)] = r
		}
	}
	return e, nil
}

// ocspResponse returns a verified, current OCSP response from url for cert.
func (v *Validator) ocspResponse(ctx context.Context, url string, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	if !isHTTPURL(url) {
		return nil, errors.New("only http and https responders are supported")
	}
	key := ocspKey{url, sha256.Sum256(issuer.Raw), cert.SerialNumber.Text(16)}
	v.mu.Lock()
	e := v.ocsps[key]
	v.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		return e.resp, nil
	}
	r, err := v.once(ctx, fmt.Sprintf("ocsp %s %x %s", url, key.issuer, key.serial), now, func() (any, error) {
		req, err := ocsp.CreateRequest(cert, issuer, nil)
		if err != nil {
			return nil, fmt.Errorf("create request: %w", err)
		}
		data, err := httpPost(ctx, v.client, url, "application/ocsp-request", req, maxOCSPSize)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		resp, err := checkOCSP(data, cert, issuer, now)
		if err != nil {
			return nil, err
		}
		exp := now.Add(maxOCSPAge)
		if !resp.NextUpdate.IsZero() {
			exp = resp.NextUpdate
			if exp.After(now.Add(maxCRLAge)) {
				exp = now.Add(maxCRLAge)
			}
		}
		v.mu.Lock()
		v.ocsps[key] = &ocspEntry{resp: resp, expires: exp}
		sweep(v.ocsps, now, func(e *ocspEntry) time.Time { return e.expires })
		v.mu.Unlock()
		return resp, nil
	})
	if err != nil {
		return nil, err
	}
	return r.(*ocsp.Response), nil
}

// checkOCSP parses an OCSP response for cert and checks that the issuer or a
// responder it delegated to signed it (RFC 6960 section 4.2.2.2), and that
// it is current and definite.
func checkOCSP(data []byte, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	// Signatures are checked below: ParseResponseForCert mishandles a
	// response that embeds the issuer certificate itself.
	resp, err := ocsp.ParseResponseForCert(data, cert, nil)
	if err != nil {
		return nil, fmt.Errorf("invalid response: %w", err)
	}
	if err := directprofile.CheckX509Signature(resp.SignatureAlgorithm); err != nil {
		return nil, fmt.Errorf("response signed with %w", err)
	}
	switch {
	case resp.Certificate == nil:
		if err := resp.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("response signature does not verify with issuer %s: %w", certName(issuer), err)
		}
	case resp.Certificate.Equal(issuer):
		// ParseResponseForCert checked the signature with it.
	default:
		rc := resp.Certificate
		if err := rc.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("responder certificate %s not issued by %s: %w", certName(rc), certName(issuer), err)
		}
		delegated := false
		for _, u := range rc.ExtKeyUsage {
			delegated = delegated || u == x509.ExtKeyUsageOCSPSigning
		}
		if !delegated {
			return nil, fmt.Errorf("responder certificate %s lacks the OCSPSigning extended key usage", certName(rc))
		}
		if reason := checkValidity(rc, now); reason != "" {
			return nil, errors.New(reason)
		}
	}
	if resp.ThisUpdate.After(now.Add(clockSkew)) {
		return nil, fmt.Errorf("response not valid before %s (thisUpdate)", formatTime(resp.ThisUpdate))
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate) {
		return nil, fmt.Errorf("response out of date since %s (nextUpdate)", formatTime(resp.NextUpdate))
	}
	if resp.Status != ocsp.Good && resp.Status != ocsp.Revoked {
		return nil, errors.New("responder does not know the certificate (status unknown)")
	}
	return resp, nil
}

// reasonRemoveFromCRL (RFC 5280 section 5.3.1) only occurs in delta CRLs and
// means the certificate is no longer revoked.
const reasonRemoveFromCRL = 8

func reasonSuffix(code int) string {
	names := map[int]string{
		1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged", 4: "superseded",
		5: "cessationOfOperation", 6: "certificateHold", 9: "privilegeWithdrawn", 10: "aACompromise",
	}
	if n, ok := names[code]; ok {
		return " (" + n + ")"
	}
	return ""
}
