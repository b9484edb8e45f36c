package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/miekg/dns"
	"github.com/smallstep/pkcs7"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ldapCertAttrs are the attributes that may hold a certificate, in the order
// they are asked for (CD-07). userSMIMECertificate
// (2.16.840.1.113730.3.1.40) may hold a PKCS#7 certs-only SignedData.
var ldapCertAttrs = []string{"userSMIMECertificate", "userCertificate;binary", "userCertificate"}

// ldapSizeLimit bounds the entries one search returns.
const ldapSizeLimit = 100

// ldapLookup is the cached outcome of an LDAP search for one mail value.
type ldapLookup struct {
	name  string
	found []foundCert
	note  string
}

// ldapStep searches the domain's LDAP servers for entries whose mail is mail:
// the address (address-bound) or the domain (domain-bound), as DCDT does
// (CD-07).
func (d *Discoverer) ldapStep(ctx context.Context, ls *ldapSession, mail string) stepOutcome {
	filter := "(&(mail=" + ldap.EscapeFilter(mail) + ")(|(userSMIMECertificate=*)(userCertificate;binary=*)(userCertificate=*)))"
	key := ls.domain + "\x00" + strings.ToLower(mail)
	now := d.now()
	if l, exp, ok := d.ldapCache.get(key, now); ok {
		return stepOutcome{name: l.name, found: l.found, note: l.note, expires: exp, cached: true}
	}
	srvName := "_ldap._tcp." + ls.domain + "."
	targets, srvExp, err := ls.targets(ctx)
	if err != nil {
		return stepOutcome{name: srvName + " SRV", err: err}
	}
	if len(targets) == 0 {
		return stepOutcome{name: srvName + " SRV", note: "no LDAP server: no SRV records at " + srvName, expires: srvExp, cached: ls.srvCached}
	}
	if err := ls.open(ctx); err != nil {
		return stepOutcome{name: srvName + " SRV", err: err}
	}
	out := stepOutcome{name: ls.url + " " + filter}
	found, notes, err := ls.search(ctx, filter)
	if err != nil {
		out.err = err
		return out
	}
	out.found = found
	out.note = strings.Join(notes, "; ")
	if len(found) == 0 && out.note == "" {
		out.note = "no entry with a certificate"
	}
	if ls.note != "" {
		out.note = strings.TrimPrefix(out.note+"; "+ls.note, "; ")
	}
	var exp time.Time
	if len(found) > 0 {
		if d.ldapTTL > 0 {
			exp = now.Add(d.ldapTTL)
		}
	} else {
		exp = d.negativeExpiry()
	}
	if !exp.IsZero() && !srvExp.IsZero() {
		exp = earliest(exp, srvExp)
	} else {
		exp = time.Time{}
	}
	out.expires = exp
	d.ldapCache.put(key, &ldapLookup{name: out.name, found: found, note: out.note}, exp, now)
	return out
}

// ldapSession is the LDAP side of one discovery: the SRV targets of the
// domain and, once needed, a connection to the first that works. The
// address-bound and domain-bound steps share it.
type ldapSession struct {
	d      *Discoverer
	domain string

	haveTargets bool
	srv         []*dns.SRV
	extra       []dns.RR
	srvExp      time.Time
	srvCached   bool
	srvErr      error

	opened bool
	conn   *ldap.Conn
	stop   func() bool
	url    string
	bases  []string
	note   string
	err    error
}

// targets returns the domain's LDAP servers in the order to try (CD-06).
func (s *ldapSession) targets(ctx context.Context) ([]*dns.SRV, time.Time, error) {
	if !s.haveTargets {
		s.haveTargets = true
		a, exp, cached, err := s.d.query(ctx, "_ldap._tcp."+s.domain+".", dns.TypeSRV)
		if err != nil {
			s.srvErr = err
		} else {
			for _, rr := range a.answer {
				if srv, ok := rr.(*dns.SRV); ok && srv.Target != "." {
					s.srv = append(s.srv, srv)
				}
			}
			s.srv = orderSRV(s.srv)
			s.extra = a.extra
			s.srvExp = exp
			s.srvCached = cached
		}
	}
	return s.srv, s.srvExp, s.srvErr
}

// orderSRV sorts SRV records into the order to try them (CD-06): lowest
// priority first; within one priority, highest weight first. DCDT and the
// DirectTrust tool test this fixed order rather than the weighted random
// choice of RFC 2782. Ties are broken by target name and port, so the order
// is deterministic.
func orderSRV(srvs []*dns.SRV) []*dns.SRV {
	slices.SortStableFunc(srvs, func(a, b *dns.SRV) int {
		switch {
		case a.Priority != b.Priority:
			return int(a.Priority) - int(b.Priority)
		case a.Weight != b.Weight:
			return int(b.Weight) - int(a.Weight)
		case !strings.EqualFold(a.Target, b.Target):
			return strings.Compare(strings.ToLower(a.Target), strings.ToLower(b.Target))
		}
		return int(a.Port) - int(b.Port)
	})
	return srvs
}

// open connects to the first SRV target that accepts a connection, an
// anonymous bind and a RootDSE read; on failure it tries the next (CD-06).
func (s *ldapSession) open(ctx context.Context) error {
	if s.opened {
		return s.err
	}
	s.opened = true
	var errs []error
	for _, t := range s.srv {
		url := "ldap://" + net.JoinHostPort(strings.TrimSuffix(t.Target, "."), strconv.Itoa(int(t.Port)))
		conn, bases, note, err := s.connect(ctx, t)
		if err != nil {
			s.d.log.Debug("ldap server failed", slog.String("url", url), slog.Any("err", err))
			errs = append(errs, fmt.Errorf("%s: %w", url, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		s.conn, s.url, s.bases, s.note = conn, url, bases, note
		s.stop = context.AfterFunc(ctx, func() { conn.Close() })
		return nil
	}
	s.err = fmt.Errorf("no LDAP server of %s could be used: %w", s.domain, errors.Join(errs...))
	return s.err
}

// connect dials one SRV target, binds anonymously and reads the base DNs
// from the RootDSE namingContexts (CD-07).
func (s *ldapSession) connect(ctx context.Context, t *dns.SRV) (*ldap.Conn, []string, string, error) {
	addrs, err := s.d.hostAddrs(ctx, t.Target, s.extra)
	if err != nil {
		return nil, nil, "", err
	}
	var errs []error
	for _, ip := range addrs {
		conn, bases, note, err := s.connectAddr(ctx, net.JoinHostPort(ip, strconv.Itoa(int(t.Port))))
		if err == nil {
			return conn, bases, note, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, "", errors.Join(errs...)
}

func (s *ldapSession) connectAddr(ctx context.Context, hostport string) (*ldap.Conn, []string, string, error) {
	dctx, cancel := context.WithTimeout(ctx, s.d.ldapTimeout)
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", hostport)
	cancel()
	if err != nil {
		return nil, nil, "", err
	}
	conn := ldap.NewConn(nc, false)
	conn.Start()
	conn.SetTimeout(s.d.ldapTimeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := conn.UnauthenticatedBind(""); err != nil {
		conn.Close()
		return nil, nil, "", fmt.Errorf("anonymous bind: %w", err)
	}
	req := ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, s.timeLimit(), false,
		"(objectClass=*)", []string{"namingContexts"}, nil)
	res, err := conn.Search(req)
	if err != nil {
		conn.Close()
		return nil, nil, "", fmt.Errorf("read RootDSE: %w", err)
	}
	var bases []string
	for _, e := range res.Entries {
		bases = append(bases, e.GetEqualFoldAttributeValues("namingContexts")...)
	}
	var note string
	if len(bases) == 0 {
		// Not in the guide: a server that hides its RootDSE still gets
		// searched under the DN made of the domain's labels.
		dn := "dc=" + strings.Join(strings.Split(s.domain, "."), ",dc=")
		bases = []string{dn}
		note = "RootDSE lists no namingContexts, searched " + dn
	}
	return conn, bases, note, nil
}

func (s *ldapSession) timeLimit() int {
	return max(1, int(s.d.ldapTimeout/time.Second))
}

// search runs filter under every base DN and collects the certificates of the
// entries found. A base DN that does not exist is skipped; other search
// failures are notes, and an error when every base DN failed.
func (s *ldapSession) search(ctx context.Context, filter string) ([]foundCert, []string, error) {
	var (
		found  []foundCert
		notes  []string
		failed int
		seen   = map[string]bool{}
	)
	for _, base := range s.bases {
		req := ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, ldapSizeLimit, s.timeLimit(), false,
			filter, ldapCertAttrs, nil)
		res, err := s.conn.Search(req)
		if cerr := ctx.Err(); cerr != nil {
			return nil, nil, cerr
		}
		if err != nil {
			switch {
			case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
				continue
			case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) && res != nil:
				notes = append(notes, fmt.Sprintf("base %s: more than %d entries, first ones used", base, ldapSizeLimit))
			default:
				failed++
				notes = append(notes, fmt.Sprintf("search base %s: %v", base, err))
				continue
			}
		}
		for _, e := range res.Entries {
			for _, a := range e.Attributes {
				attr, _, _ := strings.Cut(a.Name, ";")
				if !strings.EqualFold(attr, "userSMIMECertificate") && !strings.EqualFold(attr, "userCertificate") {
					continue
				}
				for _, v := range a.ByteValues {
					certs, err := parseCertBlob(v)
					if err != nil {
						notes = append(notes, fmt.Sprintf("%s %s: %v", e.DN, a.Name, err))
						continue
					}
					for _, c := range certs {
						if seen[string(c.Raw)] || len(found) >= maxCertsPerStep {
							continue
						}
						seen[string(c.Raw)] = true
						found = append(found, foundCert{c, s.url + " " + e.DN + " " + a.Name})
					}
				}
			}
		}
	}
	if failed > 0 && failed == len(s.bases) {
		return nil, nil, fmt.Errorf("%s: %s", s.url, strings.Join(notes, "; "))
	}
	return found, notes, nil
}

func (s *ldapSession) close() {
	if s.conn != nil {
		s.stop()
		s.conn.Close()
		s.conn = nil
	}
}

// hostAddrs returns the IP addresses of an SRV target: the target itself when
// it is an address literal, else the A and AAAA records from the SRV
// answer's additional section, else from the resolver.
func (d *Discoverer) hostAddrs(ctx context.Context, host string, extra []dns.RR) ([]string, error) {
	if ip := net.ParseIP(strings.TrimSuffix(host, ".")); ip != nil {
		return []string{ip.String()}, nil
	}
	var addrs []string
	for _, rr := range extra {
		if !strings.EqualFold(rr.Header().Name, host) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.A:
			addrs = append(addrs, rr.A.String())
		case *dns.AAAA:
			addrs = append(addrs, rr.AAAA.String())
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		a, _, _, err := d.query(ctx, host, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range a.answer {
			switch rr := rr.(type) {
			case *dns.A:
				addrs = append(addrs, rr.A.String())
			case *dns.AAAA:
				addrs = append(addrs, rr.AAAA.String())
			}
		}
	}
	if len(addrs) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, fmt.Errorf("no address for %s", host)
	}
	return addrs, nil
}

// parseCertBlob reads the certificates of an LDAP attribute value or of a
// fetched IPKIX body: one DER certificate, a DER PKCS#7 certs-only SignedData
// (as userSMIMECertificate may hold), or PEM blocks of either.
func parseCertBlob(b []byte) ([]*x509.Certificate, error) {
	if len(b) == 0 {
		return nil, errors.New("empty value")
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		return parsePEMCerts(t)
	}
	cert, err := x509.ParseCertificate(b)
	if err == nil {
		return []*x509.Certificate{cert}, nil
	}
	certs, perr := parsePKCS7Certs(b)
	if perr == nil {
		return certs, nil
	}
	if certs, berr := parseBERPKCS7Certs(b); berr == nil {
		return certs, nil
	}
	return nil, fmt.Errorf("neither a certificate (%v) nor PKCS#7 certificates (%v)", err, perr)
}

// parseBERPKCS7Certs reads the certificates of a PKCS#7 SignedData in BER
// (indefinite lengths, as some Windows and Java tools write .p7b files),
// which the DER reader above refuses. The PKCS#7 parser converts BER to DER
// first; a panic of it on hostile input is an error.
func parseBERPKCS7Certs(b []byte) (certs []*x509.Certificate, err error) {
	defer func() {
		if x := recover(); x != nil {
			certs, err = nil, fmt.Errorf("malformed PKCS#7: %v", x)
		}
	}()
	p7, err := pkcs7.Parse(b)
	if err != nil {
		return nil, err
	}
	if len(p7.Certificates) == 0 {
		return nil, errors.New("no certificates in PKCS#7")
	}
	return p7.Certificates[:min(len(p7.Certificates), maxCertsPerStep)], nil
}

func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for len(certs) < maxCertsPerStep {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM certificate: %w", err)
			}
			certs = append(certs, c)
		case "PKCS7", "CMS":
			cs, err := parsePKCS7Certs(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM %s: %w", blk.Type, err)
			}
			certs = append(certs, cs...)
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return certs[:min(len(certs), maxCertsPerStep)], nil
}

var oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}

// parsePKCS7Certs reads the certificates field of a DER CMS SignedData
// (RFC 5652 section 5.1), typically a "certs-only" one with no content and
// no signers. Certificate choices other than X.509 certificates are skipped.
func parsePKCS7Certs(b []byte) ([]*x509.Certificate, error) {
	in := cryptobyte.String(b)
	var ci, content, sd, certSet cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("not a DER SEQUENCE")
	}
	if !ci.ReadASN1ObjectIdentifier(&oid) {
		return nil, errors.New("no content type")
	}
	if !oid.Equal(oidSignedData) {
		return nil, fmt.Errorf("content type %v is not signedData", oid)
	}
	var hasCerts bool
	if !ci.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!content.ReadASN1(&sd, cbasn1.SEQUENCE) ||
		!sd.SkipASN1(cbasn1.INTEGER) || // version
		!sd.SkipASN1(cbasn1.SET) || // digestAlgorithms
		!sd.SkipASN1(cbasn1.SEQUENCE) || // encapContentInfo
		!sd.ReadOptionalASN1(&certSet, &hasCerts, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, errors.New("malformed SignedData")
	}
	var certs []*x509.Certificate
	for !certSet.Empty() && len(certs) < maxCertsPerStep {
		var el cryptobyte.String
		var tag cbasn1.Tag
		if !certSet.ReadAnyASN1Element(&el, &tag) {
			return nil, errors.New("malformed certificates field")
		}
		if tag != cbasn1.SEQUENCE {
			continue
		}
		c, err := x509.ParseCertificate(el)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("SignedData holds no certificate")
	}
	return certs, nil
}
