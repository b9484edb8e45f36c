package trust

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// Trust bundles (TBIG; DT-01).
//
// A bundle is a certs-only PKCS#7 SignedData (a degenerate SignedData with
// no signers: a .p7b file), or a CMS SignedData whose signed content is such
// a .p7b. The signed form must be checked against a signer certificate
// configured for the bundle ("pinned"), not against the certificates the
// bundle carries.

// maxBundleSize bounds the size of a fetched bundle.
const maxBundleSize = 32 << 20

// PEM labels a bundle may carry.
var bundlePEMTypes = []string{"PKCS7", "CMS", "PKCS #7 SIGNED DATA"}

// ParseBundle reads a trust bundle: a certs-only PKCS#7/CMS SignedData
// (.p7b) in DER or PEM ("-----BEGIN PKCS7-----" or "CMS"), or a CMS
// SignedData whose signed content is itself a .p7b, verified against signer.
//
// Signer is the pinned bundle-signing certificate. It is required for a
// signed bundle; a bundle signed by any other key is refused. When signer is
// set, an unsigned bundle is refused too, so that a signature cannot be
// stripped. The signer certificate's own validity is not checked (only that
// a signing time, if present, falls within it), since it is configured
// rather than discovered.
//
// It returns the anchors, without duplicates. A bundle without certificates
// is an error.
func ParseBundle(data []byte, signer *x509.Certificate) ([]*x509.Certificate, error) {
	der, err := bundleDER(data)
	if err != nil {
		return nil, err
	}
	p7, err := parsePKCS7(der)
	if err != nil {
		return nil, fmt.Errorf("parse bundle: %w", err)
	}
	if len(p7.Signers) == 0 {
		if signer != nil {
			return nil, fmt.Errorf("bundle is not signed, but a signer (%s) is configured for it", certName(signer))
		}
		return bundleCerts(p7.Certificates)
	}

	// A signed bundle (DT-01).
	if signer == nil {
		return nil, errors.New("bundle is signed, but no signer certificate is configured to check it against")
	}
	for _, si := range p7.Signers {
		ias := si.IssuerAndSerialNumber
		if ias.SerialNumber == nil || !bytes.Equal(ias.IssuerName.FullBytes, signer.RawIssuer) || ias.SerialNumber.Cmp(signer.SerialNumber) != 0 {
			return nil, fmt.Errorf("bundle is signed by someone other than the configured signer %s", certName(signer))
		}
		// The profile's Digests: SHA-1, MD5 and SHA-224 are refused (DT-04).
		if d, ok := directprofile.DigestByOID(si.DigestAlgorithm.Algorithm); ok && d.Verdict == directprofile.Refuse {
			return nil, fmt.Errorf("bundle signature uses digest %s (%s), which is not allowed (%s, DT-04)", d.Name, d.OID, d.Rule)
		}
	}
	// Verify with the pinned certificate only, whatever the bundle carries.
	p7.Certificates = []*x509.Certificate{signer}
	if err := verifyPKCS7(p7); err != nil {
		return nil, fmt.Errorf("bundle signature does not verify with the configured signer %s: %w", certName(signer), err)
	}
	if len(p7.Content) == 0 {
		return nil, errors.New("signed bundle has no content")
	}
	inner, err := bundleDER(p7.Content)
	if err != nil {
		return nil, fmt.Errorf("content of signed bundle: %w", err)
	}
	ip7, err := parsePKCS7(inner)
	if err != nil {
		return nil, fmt.Errorf("parse content of signed bundle: %w", err)
	}
	if len(ip7.Signers) > 0 {
		return nil, errors.New("content of signed bundle is signed again; want a certs-only .p7b")
	}
	return bundleCerts(ip7.Certificates)
}

// bundleDER returns the DER of a bundle in DER or PEM form. PEM may be
// preceded by text, as openssl writes it.
func bundleDER(data []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, errors.New("empty bundle")
	case trimmed[0] == 0x30: // DER or BER SEQUENCE
		return data, nil
	case !bytes.Contains(trimmed, []byte("-----BEGIN ")):
		return nil, errors.New("bundle is neither DER nor PEM")
	}
	for rest := trimmed; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PKCS7 or CMS block in PEM bundle")
		}
		for _, t := range bundlePEMTypes {
			if block.Type == t {
				return block.Bytes, nil
			}
		}
	}
}

func bundleCerts(certs []*x509.Certificate) ([]*x509.Certificate, error) {
	var l []*x509.Certificate
	seen := map[string]bool{}
	for _, c := range certs {
		if c != nil && !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			l = append(l, c)
		}
	}
	if len(l) == 0 {
		return nil, errors.New("bundle holds no certificates")
	}
	return l, nil
}

// BundleSource is a configured trust bundle.
type BundleSource struct {
	ID       int64
	Domain   string // local domain whose anchors the bundle provides
	Location string // https URL, http URL, or file path (or file:// URL)
	// Signer is the pinned certificate a signed bundle must be signed with;
	// nil for an unsigned .p7b.
	Signer *x509.Certificate
	// Refresh is the interval between fetches; zero means DefaultRefresh.
	Refresh time.Duration
}

// NewBundleSource is the source of a bundle as it is stored: signerDER is
// the DER of its pinned signer, nil when the bundle is unsigned.
func NewBundleSource(id int64, domain, location string, signerDER []byte, refresh time.Duration) (BundleSource, error) {
	src := BundleSource{ID: id, Domain: domain, Location: location, Refresh: refresh}
	if signerDER != nil {
		var err error
		if src.Signer, err = x509.ParseCertificate(signerDER); err != nil {
			return BundleSource{}, fmt.Errorf("bundle %d signer: %w", id, err)
		}
	}
	return src, nil
}

// BundleState is what is known about a bundle after the last fetch.
type BundleState struct {
	Checksum    string // SHA-256 hex of the raw bytes of the last good bundle
	Anchors     []*x509.Certificate
	LastAttempt time.Time
	LastSuccess time.Time
	LastError   string // empty when the last attempt succeeded
}

// FetchBundle gets the bundle of src and returns the new state. If the
// checksum is unchanged it returns changed=false without reparsing. On any
// failure the returned state keeps prev's Anchors and Checksum, with
// LastError set, so callers keep the last good set (DT-01); err is then
// non-nil too.
//
// Client fetches http and https locations; nil means a client with a 10
// second timeout. HTTPS server certificates are validated as usual.
func FetchBundle(ctx context.Context, client *http.Client, src BundleSource, prev BundleState, now time.Time) (state BundleState, changed bool, err error) {
	state = prev
	state.LastAttempt = now
	fail := func(err error) (BundleState, bool, error) {
		err = fmt.Errorf("bundle %s: %w", src.Location, err)
		state.LastError = err.Error()
		return state, false, err
	}

	data, err := readBundle(ctx, client, src.Location)
	if err != nil {
		return fail(err)
	}
	sum := sha256.Sum256(data)
	checksum := hex.EncodeToString(sum[:])
	if checksum == prev.Checksum && len(prev.Anchors) > 0 {
		state.LastSuccess = now
		state.LastError = ""
		return state, false, nil
	}
	anchors, err := ParseBundle(data, src.Signer)
	if err != nil {
		return fail(err)
	}
	state.Checksum = checksum
	state.Anchors = anchors
	state.LastSuccess = now
	state.LastError = ""
	return state, true, nil
}

func readBundle(ctx context.Context, client *http.Client, location string) ([]byte, error) {
	if isHTTPURL(location) {
		if client == nil {
			client = &http.Client{Timeout: defaultTimeout}
		}
		data, err := httpGet(ctx, client, location, maxBundleSize)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		return data, nil
	}
	path := location
	if p, ok := strings.CutPrefix(location, "file://"); ok {
		path = p
	} else if strings.Contains(location, "://") {
		return nil, errors.New("unsupported location: want an http or https URL or a file path")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxBundleSize {
		return nil, fmt.Errorf("larger than %d bytes", maxBundleSize)
	}
	return data, nil
}
