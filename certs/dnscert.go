package certs

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// certIPKIX is CERT type 4, IPKIX in RFC 4398 (IPIX in package dns): the URL
// of an X.509 certificate.
const certIPKIX = dns.CertIPIX

// maxDNSTTL caps how long a DNS answer is cached whatever its TTL.
const maxDNSTTL = 24 * time.Hour

// maxCertsPerStep bounds the certificates one step accepts, so a hostile
// zone or directory cannot make us validate thousands.
const maxCertsPerStep = 64

// maxFetchBytes bounds the body of an IPKIX URL.
const maxFetchBytes = 1 << 20

// dnsAnswer is the part of a DNS response discovery uses.
type dnsAnswer struct {
	rcode  int
	answer []dns.RR // records of the asked type at the name or its CNAME targets
	extra  []dns.RR // additional section
}

// certLookup is the cached outcome of a DNS CERT look-up at one name.
type certLookup struct {
	found   []foundCert
	records int // CERT records present, usable or not
	note    string
}

// dnsAddressStep looks up address-bound CERT records (CD-02).
func (d *Discoverer) dnsAddressStep(ctx context.Context, a directAddress) stepOutcome {
	names, err := addressNames(a.local, a.domain)
	if err != nil {
		return stepOutcome{name: a.address(), note: err.Error(), expires: d.negativeExpiry()}
	}
	return d.dnsCertStep(ctx, names)
}

// dnsCertStep looks up CERT records at each name in turn until one has any.
func (d *Discoverer) dnsCertStep(ctx context.Context, names []string) stepOutcome {
	var out stepOutcome
	out.cached = true
	var queried []string
	for _, name := range names {
		queried = append(queried, name)
		cl, exp, cached, err := d.certsAt(ctx, name)
		out.cached = out.cached && cached
		if err != nil {
			out.err = err
			out.expires = time.Time{}
			out.cached = false
			break
		}
		if len(queried) == 1 {
			out.expires = exp
		} else if out.expires.IsZero() || exp.IsZero() {
			out.expires = time.Time{}
		} else {
			out.expires = earliest(out.expires, exp)
		}
		out.found = cl.found
		out.note = cl.note
		if cl.records > 0 {
			break
		}
	}
	out.name = strings.Join(queried, ", ")
	if len(out.found) == 0 && out.note == "" && out.err == nil {
		out.note = "no CERT records"
	}
	return out
}

// certsAt returns the certificates of the CERT records at name, from the
// cache when fresh, with the time the answer expires (zero: do not cache).
func (d *Discoverer) certsAt(ctx context.Context, name string) (*certLookup, time.Time, bool, error) {
	now := d.now()
	key := strings.ToLower(name)
	if cl, exp, ok := d.certCache.get(key, now); ok {
		return cl, exp, true, nil
	}
	ans, exp, _, err := d.query(ctx, name, dns.TypeCERT)
	if err != nil {
		return nil, time.Time{}, false, err
	}
	cl := &certLookup{}
	var notes, fetchErrs []string
	seen := map[string]bool{}
	for _, rr := range ans.answer {
		c, ok := rr.(*dns.CERT)
		if !ok {
			continue
		}
		cl.records++
		cert, u, err := parseCERT(c)
		if err != nil {
			notes = append(notes, err.Error())
			continue
		}
		var found []foundCert
		if cert != nil {
			found = []foundCert{{cert, "CERT PKIX at " + c.Hdr.Name}}
		} else {
			// CD-03: IPKIX, fetch the certificate from the URL.
			certs, err := d.fetchIPKIX(ctx, u)
			if err != nil {
				fetchErrs = append(fetchErrs, err.Error())
				continue
			}
			for _, c2 := range certs {
				found = append(found, foundCert{c2, "CERT IPKIX at " + c.Hdr.Name + " " + u})
			}
		}
		for _, f := range found {
			if seen[string(f.cert.Raw)] || len(cl.found) >= maxCertsPerStep {
				continue
			}
			seen[string(f.cert.Raw)] = true
			cl.found = append(cl.found, f)
		}
	}
	cl.note = strings.Join(notes, "; ")
	if len(fetchErrs) > 0 {
		// A failed fetch may be temporary: report it, do not cache.
		err := errors.New(strings.Join(fetchErrs, "; "))
		if len(cl.found) == 0 {
			return nil, time.Time{}, false, err
		}
		if cl.note != "" {
			cl.note += "; "
		}
		cl.note += err.Error()
		return cl, time.Time{}, false, nil
	}
	// exp is the records' TTL, or NegativeTTL for an empty answer.
	d.certCache.put(key, cl, exp, now)
	return cl, exp, false, nil
}

// parseCERT decodes one CERT record (CD-03): a certificate for type PKIX, or
// the URL to fetch for type IPKIX. Key tag and algorithm are ignored. Other
// types give an error saying they were skipped.
func parseCERT(rr *dns.CERT) (*x509.Certificate, string, error) {
	switch rr.Type {
	case dns.CertPKIX, certIPKIX:
	default:
		name, ok := dns.CertTypeToString[rr.Type]
		if !ok {
			name = fmt.Sprint(rr.Type)
		}
		return nil, "", fmt.Errorf("skipped CERT type %s at %s", name, rr.Hdr.Name)
	}
	data, err := base64.StdEncoding.DecodeString(rr.Certificate)
	if err != nil {
		return nil, "", fmt.Errorf("CERT at %s: %w", rr.Hdr.Name, err)
	}
	if rr.Type == certIPKIX {
		u, err := parseIPKIXURL(data)
		if err != nil {
			return nil, "", fmt.Errorf("CERT IPKIX at %s: %w", rr.Hdr.Name, err)
		}
		return nil, u, nil
	}
	cert, err := x509.ParseCertificate(data)
	if err != nil {
		return nil, "", fmt.Errorf("CERT PKIX at %s: %w", rr.Hdr.Name, err)
	}
	return cert, "", nil
}

// parseIPKIXURL checks the URL of an IPKIX record: an absolute http or https
// URL of printable ASCII.
func parseIPKIXURL(data []byte) (string, error) {
	if len(data) == 0 || len(data) > 2048 {
		return "", fmt.Errorf("bad URL length %d", len(data))
	}
	for _, c := range data {
		if c <= ' ' || c >= 0x7f {
			return "", fmt.Errorf("URL with a control, space or non-ASCII byte: %q", data)
		}
	}
	u, err := url.Parse(string(data))
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("URL %q: only http and https URLs with a host", data)
	}
	return string(data), nil
}

// fetchIPKIX fetches the certificate an IPKIX record points at: DER, PEM or
// PKCS#7 certs-only.
func (d *Discoverer) fetchIPKIX(ctx context.Context, u string) ([]*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	if len(body) > maxFetchBytes {
		return nil, fmt.Errorf("fetch %s: body over %d bytes", u, maxFetchBytes)
	}
	certs, err := parseCertBlob(body)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	return certs, nil
}

// addressNames returns the DNS owner names where the address-bound CERT
// records of local@domain may be, in the order to try (CD-02).
//
// The first is the address with "@" replaced by ".", each dot of the local part
// starting a new label: what DCDT and the reference implementation publish and
// query. When the local part has dots, the second is the RFC 1034 section 3.3
// mailbox form RFC 4398 section 3 refers to ("the standard translation of the
// email address into a domain name"), where the local part is one label with
// its dots escaped. Characters special in DNS presentation format are escaped
// in both.
func addressNames(local, domain string) ([]string, error) {
	var names []string
	ok := true
	labels := strings.Split(local, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			ok = false
		}
	}
	if ok {
		var b strings.Builder
		for _, l := range labels {
			b.WriteString(escapeLabel(l))
			b.WriteByte('.')
		}
		b.WriteString(domain)
		b.WriteByte('.')
		if _, ok := dns.IsDomainName(b.String()); ok {
			names = append(names, b.String())
		}
	}
	if len(labels) > 1 && len(local) <= 63 {
		n := escapeLabel(local) + "." + domain + "."
		if _, ok := dns.IsDomainName(n); ok {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("local part %q does not fit a DNS name", local)
	}
	return names, nil
}

// escapeLabel writes one label in DNS presentation format, escaped the way
// package dns prints names: bytes special in that format get a backslash,
// unprintable ones are written \DDD.
func escapeLabel(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		case strings.IndexByte(`. '@;()"\`, c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// negativeExpiry is when a "nothing found" answer got now expires; zero when
// negative caching is off.
func (d *Discoverer) negativeExpiry() time.Time {
	if d.negTTL < 0 {
		return time.Time{}
	}
	return d.now().Add(d.negTTL)
}

// query asks the resolver for the records of type qtype at name, from the
// cache when fresh. It returns the answer and when it expires (zero: not
// cacheable). NXDOMAIN and empty answers are answers, not errors; SERVFAIL,
// REFUSED and the like are errors.
func (d *Discoverer) query(ctx context.Context, name string, qtype uint16) (*dnsAnswer, time.Time, bool, error) {
	key := dns.TypeToString[qtype] + " " + strings.ToLower(name)
	now := d.now()
	if a, exp, ok := d.dnsCache.get(key, now); ok {
		return a, exp, true, nil
	}
	// CD-04: EDNS0, and TCP when the UDP answer is truncated.
	r, _, err := d.dnsc.Query(ctx, name, qtype)
	if err != nil {
		return nil, time.Time{}, false, err
	}
	a := &dnsAnswer{rcode: r.Rcode, extra: r.Extra}
	// Follow the CNAME chain inside the answer, as a recursive resolver
	// gives it.
	owners := map[string]bool{strings.ToLower(name): true}
	for range 8 {
		grew := false
		for _, rr := range r.Answer {
			if c, ok := rr.(*dns.CNAME); ok && owners[strings.ToLower(c.Hdr.Name)] && !owners[strings.ToLower(c.Target)] {
				owners[strings.ToLower(c.Target)] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var minTTL uint32 = 1<<32 - 1
	for _, rr := range r.Answer {
		h := rr.Header()
		if !owners[strings.ToLower(h.Name)] || h.Class != dns.ClassINET {
			continue
		}
		if h.Rrtype == qtype || h.Rrtype == dns.TypeCNAME {
			minTTL = min(minTTL, h.Ttl)
		}
		if h.Rrtype == qtype {
			a.answer = append(a.answer, rr)
		}
	}
	var exp time.Time
	if len(a.answer) == 0 {
		exp = d.negativeExpiry()
	} else if minTTL > 0 {
		exp = now.Add(min(time.Duration(minTTL)*time.Second, maxDNSTTL))
	}
	d.dnsCache.put(key, a, exp, now)
	return a, exp, false, nil
}
