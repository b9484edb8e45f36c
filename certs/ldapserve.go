package certs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/hashicorp/go-hclog"
	"github.com/jimlambrt/gldap"

	"github.com/hisp-project/hisp/internal/lograte"
)

// LDAPServer publishes the local certificates over LDAP, the second way of
// the Certificate Discovery for Direct (CD-05..CD-07), read by what hisp's own
// discovery and the Direct Project's reference implementation do: an
// anonymous bind, the RootDSE's namingContexts (one per local domain,
// "dc=b,dc=example"), and a subtree search under it with a filter on mail.
// An entry is "mail=ADDRESS,dc=..." for an address with certificates
// (address-bound) and "mail=DOMAIN,dc=..." for the domain's own
// (organization-bound), with the attributes mail, objectClass and
// userCertificate;binary (one value per DER certificate). The same
// certificates as in DNS, from the same CertSource.
//
// The directory is not listed: a search finds entries only for the mail
// values its filter asks for by equality, so that nobody can enumerate
// the addresses of a domain. Binds other than anonymous are refused, and
// nothing can be written.
type LDAPServer struct {
	src CertSource
	log *slog.Logger
	mux *gldap.Mux
	// dialErrors limits the lines of connections that could not be
	// relayed to the library's listener.
	dialErrors *lograte.Limiter
}

// ldapConnLife bounds an LDAP connection's life; ldapStopWait how long a
// stop waits for open connections to end; ldapInnerTries how many loopback
// ports the library is given to listen on before serving fails.
const (
	ldapConnLife   = time.Minute
	ldapStopWait   = 5 * time.Second
	ldapInnerTries = 3
)

// NewLDAPServer returns an LDAP server for the certificates src names; a
// nil logger discards.
func NewLDAPServer(src CertSource, logger *slog.Logger) (*LDAPServer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &LDAPServer{src: src, log: logger, dialErrors: &lograte.Limiter{Every: time.Minute, Burst: 5}}
	mux, err := gldap.NewMux()
	if err != nil {
		return nil, fmt.Errorf("ldap server: %w", err)
	}
	for _, err := range []error{mux.Bind(s.bind), mux.Search(s.search), mux.DefaultRoute(s.refuse)} {
		if err != nil {
			return nil, fmt.Errorf("ldap server: %w", err)
		}
	}
	s.mux = mux
	return s, nil
}

// newLibraryServer returns a server of the LDAP library routing to s (a
// server runs once: Serve makes one per try of a port).
func (s *LDAPServer) newLibraryServer() (*gldap.Server, error) {
	// The library sets each connection's deadlines once, when it is
	// accepted: a connection lives ldapConnLife at most, plenty for a
	// discovery (bind, RootDSE, one search per address).
	srv, err := gldap.NewServer(gldap.WithLogger(hclog.NewNullLogger()),
		gldap.WithReadTimeout(ldapConnLife), gldap.WithWriteTimeout(ldapConnLife))
	if err != nil {
		return nil, fmt.Errorf("ldap server: %w", err)
	}
	if err := srv.Router(s.mux); err != nil {
		return nil, fmt.Errorf("ldap server: %w", err)
	}
	return srv, nil
}

// Serve serves LDAP on the connections l accepts until ctx ends, then
// closes l and every connection, stops and returns nil; or returns why it
// could not serve. l may be one under limits (internal/connlimit): a
// connection holds its place until the client or the server ends it.
//
// The LDAP library listens itself and takes no listener: it listens on a
// loopback port of its own, never announced, and each connection l
// accepts is relayed to it, byte for byte, within the connection's life
// (ldapConnLife).
func (s *LDAPServer) Serve(ctx context.Context, l net.Listener) error {
	defer l.Close()
	srv, inner, runErr, err := s.runLibrary()
	if err != nil {
		return fmt.Errorf("ldap server %s: %w", l.Addr(), err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The library ending by itself ends the serving; ctx ending closes l.
	var libErr error
	libDone := make(chan struct{})
	go func() {
		libErr = <-runErr
		close(libDone)
		cancel()
	}()
	stopAccept := context.AfterFunc(ctx, func() { l.Close() })
	defer stopAccept()

	var wg sync.WaitGroup
	var serveErr error
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil {
				serveErr = fmt.Errorf("ldap server %s: %w", l.Addr(), err)
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.relay(ctx, c, inner)
		}()
	}
	cancel()
	wg.Wait() // every relay closed both its connections on ctx's end
	select {
	case <-libDone:
		// The library ended by itself: it stops only when told, below.
		if serveErr == nil {
			if libErr == nil {
				libErr = errors.New("stopped")
			}
			serveErr = fmt.Errorf("ldap server %s: %w", l.Addr(), libErr)
		}
		return serveErr
	default:
	}
	// The library's connections end as the relays closed theirs; its
	// stop waits for them, not longer than ldapStopWait.
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop() }()
	select {
	case err := <-stopped:
		if err != nil && serveErr == nil {
			serveErr = fmt.Errorf("ldap server %s: stop: %w", l.Addr(), err)
		}
		<-libDone
	case <-time.After(ldapStopWait):
		s.log.Warn("ldap server: stopped with connections still open", slog.String("addr", l.Addr().String()))
	}
	return serveErr
}

// runLibrary runs a server of the LDAP library on a free loopback port
// and returns it once it listens, with its address and the channel its
// Run returns on. The library takes no listener, and no port 0: a port
// is found free and handed to it, again when taken in between.
func (s *LDAPServer) runLibrary() (*gldap.Server, string, <-chan error, error) {
	var errs []error
	for range ldapInnerTries {
		srv, err := s.newLibraryServer()
		if err != nil {
			return nil, "", nil, err
		}
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, "", nil, err
		}
		runErr := make(chan error, 1)
		go func() { runErr <- srv.Run(addr) }()
		if err := awaitListening(srv, addr, runErr); err != nil {
			errs = append(errs, err)
			continue
		}
		return srv, addr, runErr, nil
	}
	return nil, "", nil, fmt.Errorf("internal listener: %w", errors.Join(errs...))
}

// freeLoopbackAddr is a loopback address with a port free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("internal listener: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// awaitListening waits until srv, running on addr, listens (nil) or
// could not (its Run's error).
func awaitListening(srv *gldap.Server, addr string, runErr <-chan error) error {
	// Ready reports that Run tried to listen, successfully or not; a
	// connection tells which.
	for !srv.Ready() {
		select {
		case err := <-runErr:
			return err
		case <-time.After(time.Millisecond):
		}
	}
	c, err := net.DialTimeout("tcp", addr, ldapStopWait)
	if err == nil {
		c.Close()
		return nil
	}
	select {
	case err := <-runErr:
		return err
	case <-time.After(ldapStopWait):
		srv.Stop()
		return fmt.Errorf("%s: %w", addr, err)
	}
}

// relay carries c's bytes to the library's listener at inner and its
// answers back until either side ends (c's half-close is passed on; the
// library's end closes both), c's life (ldapConnLife) is over, or ctx
// ends; then both are closed, freeing c's place under its listener's
// limits.
func (s *LDAPServer) relay(ctx context.Context, c net.Conn, inner string) {
	defer c.Close()
	deadline := time.Now().Add(ldapConnLife)
	c.SetDeadline(deadline)
	d := net.Dialer{Deadline: deadline, Timeout: ldapStopWait}
	ic, err := d.DialContext(ctx, "tcp", inner)
	if err != nil {
		if ctx.Err() == nil {
			// Out of descriptors under a flood, every connection fails
			// alike: a few lines a minute say so.
			if ok, left := s.dialErrors.Allow(time.Now()); ok {
				s.log.Error("ldap server: internal listener", slog.Any("err", err), slog.Int("left_out", left))
			}
		}
		return
	}
	defer ic.Close()
	ic.SetDeadline(deadline)
	closeBoth := func() {
		c.Close()
		ic.Close()
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	requests := make(chan struct{})
	go func() {
		defer close(requests)
		if _, err := io.Copy(ic, c); err != nil {
			closeBoth()
			return
		}
		// The client has said all: the library reads the end and closes.
		if tc, ok := ic.(*net.TCPConn); ok {
			tc.CloseWrite()
		} else {
			closeBoth()
		}
	}()
	io.Copy(c, ic)
	closeBoth()
	<-requests
}

// LDAPNoticeOfDisconnection returns an LDAPv3 Notice of Disconnection
// (RFC 4511 section 4.4.1): the unsolicited ExtendedResponse, messageID
// 0, that tells a client the server ends the connection, with resultCode
// (51, busy, for a connection over the listener's limits) and a
// diagnostic message, BER-encoded.
func LDAPNoticeOfDisconnection(resultCode int, diagnostic string) []byte {
	msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, "messageID"))
	resp := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedResponse, nil, "ExtendedResponse")
	resp.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, resultCode, "resultCode"))
	resp.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "matchedDN"))
	resp.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, diagnostic, "diagnosticMessage"))
	resp.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 10, ldapNoticeOfDisconnection, "responseName"))
	msg.AppendChild(resp)
	return msg.Bytes()
}

// ldapNoticeOfDisconnection is the responseName of a Notice of
// Disconnection.
const ldapNoticeOfDisconnection = "1.3.6.1.4.1.1466.20036"

// bind accepts the anonymous simple bind only (CD-06).
func (s *LDAPServer) bind(w *gldap.ResponseWriter, r *gldap.Request) {
	code, diag := gldap.ResultSuccess, ""
	m, err := r.GetSimpleBindMessage()
	switch {
	case err != nil:
		code, diag = gldap.ResultAuthMethodNotSupported, "only the anonymous simple bind is offered"
	case m.UserName != "" || m.Password != "":
		code, diag = gldap.ResultInvalidCredentials, "this directory has no accounts: bind anonymously"
	}
	w.Write(r.NewBindResponse(gldap.WithResponseCode(code), gldap.WithDiagnosticMessage(diag)))
}

// refuse answers any other operation: the directory is read-only.
func (s *LDAPServer) refuse(w *gldap.ResponseWriter, r *gldap.Request) {
	w.Write(r.NewResponse(gldap.WithResponseCode(gldap.ResultUnwillingToPerform),
		gldap.WithDiagnosticMessage("read-only directory of Direct certificates")))
}

// domainDN is the naming context of a domain: "dc=b,dc=example".
func domainDN(domain string) string {
	labels := strings.Split(strings.TrimSuffix(strings.ToLower(domain), "."), ".")
	for i, l := range labels {
		labels[i] = "dc=" + ldap.EscapeDN(l)
	}
	return strings.Join(labels, ",")
}

func (s *LDAPServer) search(w *gldap.ResponseWriter, r *gldap.Request) {
	done := r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultSuccess))
	defer func() { w.Write(done) }()
	m, err := r.GetSearchMessage()
	if err != nil {
		done.SetResultCode(gldap.ResultProtocolError)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	domains, err := s.src.Domains(ctx)
	if err != nil {
		s.log.Error("ldap server: domains", slog.Any("err", err))
		done.SetResultCode(gldap.ResultUnavailable)
		return
	}
	base := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(m.BaseDN), " ", ""))
	filter, err := ldap.CompileFilter(m.Filter)
	if err != nil {
		done.SetResultCode(gldap.ResultProtocolError)
		done.SetDiagnosticMessage("bad filter: " + err.Error())
		return
	}
	if base == "" && m.Scope == gldap.BaseObject {
		// The RootDSE (RFC 4512 section 5.1): where to search.
		var contexts []string
		for _, d := range domains {
			contexts = append(contexts, domainDN(d))
		}
		entry := map[string][]string{"objectClass": {"top"}, "namingContexts": contexts, "supportedLDAPVersion": {"3"}}
		if matches(filter, entry) {
			w.Write(r.NewSearchResponseEntry("", gldap.WithAttributes(selectAttributes(entry, m.Attributes))))
		}
		return
	}
	var domain string
	for _, d := range domains {
		if dn := domainDN(d); base == dn || strings.HasSuffix(base, ","+dn) {
			domain = strings.ToLower(strings.TrimSuffix(d, "."))
		}
	}
	if domain == "" {
		done.SetResultCode(gldap.ResultNoSuchObject)
		done.SetMatchedDN("")
		return
	}
	sent := 0
	for _, mail := range mailValues(filter) {
		owner := strings.ToLower(mail)
		local, d, isAddress := strings.Cut(owner, "@")
		if !isAddress {
			d = owner
		}
		if d != domain {
			continue
		}
		name := domain
		if isAddress {
			names, err := addressNames(local, domain)
			if err != nil || len(names) == 0 {
				continue
			}
			name = strings.TrimSuffix(names[0], ".")
		}
		ders, err := s.src.Certificates(ctx, name)
		if err != nil {
			s.log.Error("ldap server: certificates", slog.String("mail", mail), slog.Any("err", err))
			done.SetResultCode(gldap.ResultUnavailable)
			return
		}
		if len(ders) == 0 {
			continue
		}
		entry := map[string][]string{"objectClass": {"top", "inetOrgPerson"}, "mail": {owner}}
		for _, der := range ders {
			entry["userCertificate;binary"] = append(entry["userCertificate;binary"], string(der))
		}
		dn := "mail=" + ldap.EscapeDN(owner) + "," + domainDN(domain)
		if m.Scope == gldap.BaseObject && base != strings.ToLower(dn) || !matches(filter, entry) {
			continue
		}
		if m.SizeLimit > 0 && int64(sent) >= m.SizeLimit {
			done.SetResultCode(gldap.ResultSizeLimitExceeded)
			return
		}
		w.Write(r.NewSearchResponseEntry(dn, gldap.WithAttributes(selectAttributes(entry, m.Attributes))))
		sent++
	}
	s.log.Debug("ldap search", slog.String("base", m.BaseDN), slog.String("filter", m.Filter), slog.Int("entries", sent))
}

// mailValues are the values the filter asks the mail attribute to equal,
// anywhere in it.
func mailValues(f *ber.Packet) []string {
	var out []string
	var walk func(p *ber.Packet)
	walk = func(p *ber.Packet) {
		if p.ClassType == ber.ClassContext && p.Tag == ldap.FilterEqualityMatch && len(p.Children) == 2 {
			if strings.EqualFold(attrBase(packetString(p.Children[0])), "mail") {
				out = append(out, packetString(p.Children[1]))
			}
			return
		}
		for _, c := range p.Children {
			walk(c)
		}
	}
	walk(f)
	return out
}

// matches evaluates an LDAP filter on an entry: and, or, not, equality
// (case-insensitive) and presence; other assertions do not match.
func matches(f *ber.Packet, entry map[string][]string) bool {
	values := func(attr string) []string {
		var out []string
		for k, v := range entry {
			if strings.EqualFold(attrBase(k), attrBase(attr)) {
				out = append(out, v...)
			}
		}
		return out
	}
	switch f.Tag {
	case ldap.FilterAnd:
		for _, c := range f.Children {
			if !matches(c, entry) {
				return false
			}
		}
		return true
	case ldap.FilterOr:
		for _, c := range f.Children {
			if matches(c, entry) {
				return true
			}
		}
		return false
	case ldap.FilterNot:
		return len(f.Children) == 1 && !matches(f.Children[0], entry)
	case ldap.FilterPresent:
		attr := packetString(f)
		return strings.EqualFold(attr, "objectClass") || len(values(attr)) > 0
	case ldap.FilterEqualityMatch:
		if len(f.Children) != 2 {
			return false
		}
		want := packetString(f.Children[1])
		for _, v := range values(packetString(f.Children[0])) {
			if strings.EqualFold(v, want) {
				return true
			}
		}
	}
	return false
}

// packetString is the string value of a filter component.
func packetString(p *ber.Packet) string {
	if s, ok := p.Value.(string); ok {
		return s
	}
	return p.Data.String()
}

// attrBase is an attribute description without its options
// ("userCertificate" of "userCertificate;binary").
func attrBase(a string) string {
	base, _, _ := strings.Cut(a, ";")
	return base
}

// selectAttributes keeps the attributes asked for: all of them for none or
// "*", else those whose base name was asked for (userCertificate asks for
// userCertificate;binary, the only form it is held in, RFC 4523 section 2).
func selectAttributes(entry map[string][]string, asked []string) map[string][]string {
	all := len(asked) == 0
	for _, a := range asked {
		all = all || a == "*"
	}
	if all {
		return entry
	}
	out := map[string][]string{}
	for k, v := range entry {
		for _, a := range asked {
			if strings.EqualFold(attrBase(a), attrBase(k)) {
				out[k] = v
			}
		}
	}
	return out
}

// LDAPTarget returns the SRV target and port that name an LDAP listener
// at addr: its IP when it listens on one address, else hostname (which
// must resolve to the machine).
func LDAPTarget(addr, hostname string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var p uint16
	if _, err := fmt.Sscan(port, &p); err != nil || p == 0 {
		return "", 0, fmt.Errorf("ldap address %q: want a port", addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = hostname
	}
	return host, p, nil
}
