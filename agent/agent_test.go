package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testnet"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// pki is the certificates of every test, made once: key generation is the
// slow part.
type pki struct {
	caA, caB, caR, caX *testpki.Identity // local a.example, local b.example, remote r.example, untrusted

	alice    *testpki.Identity // alice@a.example, dual use
	bob      *testpki.Identity // bob@b.example, dual use
	bOrg     *testpki.Identity // b.example, organization-bound
	multi1   *testpki.Identity // multi@b.example, two certificates
	multi2   *testpki.Identity
	cathy    *testpki.Identity // cathy@c.example (c.example does not trust r.example)
	carol    *testpki.Identity // carol@r.example, remote, published
	ralph    *testpki.Identity // ralph@r.example, remote sender
	expired  *testpki.Identity // expired@r.example, published, expired
	other    *testpki.Identity // other@r.example, published, from caX
	ralphX   *testpki.Identity // ralph@r.example from the untrusted caX
	ralphOld *testpki.Identity // ralph@r.example, expired
	mallory  *testpki.Identity // mallory@r.example, trusted, bound to another address
	signOnly *testpki.Identity // sid@a.example, digitalSignature only
	encOnly  *testpki.Identity // sid@a.example, keyEncipherment only
}

var (
	pkiOnce sync.Once
	thePKI  *pki
)

func testPKI(t testing.TB) *pki {
	pkiOnce.Do(func() {
		p := &pki{
			caA: testpki.NewCA(t, "a.example CA"),
			caB: testpki.NewCA(t, "b.example CA"),
			caR: testpki.NewCA(t, "r.example CA"),
			caX: testpki.NewCA(t, "untrusted CA"),
		}
		past := time.Now().Add(-48 * time.Hour)
		p.alice = testpki.Issue(t, p.caA, testpki.Options{Email: []string{"alice@a.example"}})
		p.bob = testpki.Issue(t, p.caB, testpki.Options{Email: []string{"bob@b.example"}})
		p.bOrg = testpki.Issue(t, p.caB, testpki.Options{DNS: []string{"b.example"}})
		p.multi1 = testpki.Issue(t, p.caB, testpki.Options{Email: []string{"multi@b.example"}})
		p.multi2 = testpki.Issue(t, p.caB, testpki.Options{Email: []string{"multi@b.example"}})
		p.cathy = testpki.Issue(t, p.caB, testpki.Options{Email: []string{"cathy@c.example"}})
		p.carol = testpki.Issue(t, p.caR, testpki.Options{Email: []string{"carol@r.example"}})
		p.ralph = testpki.Issue(t, p.caR, testpki.Options{Email: []string{"ralph@r.example"}})
		p.expired = testpki.Issue(t, p.caR, testpki.Options{Email: []string{"expired@r.example"},
			NotBefore: past.Add(-24 * time.Hour), NotAfter: past})
		p.other = testpki.Issue(t, p.caX, testpki.Options{Email: []string{"other@r.example"}})
		p.ralphX = testpki.Issue(t, p.caX, testpki.Options{Email: []string{"ralph@r.example"}})
		p.ralphOld = testpki.Issue(t, p.caR, testpki.Options{Email: []string{"ralph@r.example"},
			NotBefore: past.Add(-24 * time.Hour), NotAfter: past})
		p.mallory = testpki.Issue(t, p.caR, testpki.Options{Email: []string{"mallory@r.example"}})
		p.signOnly = testpki.Issue(t, p.caA, testpki.Options{Email: []string{"sid@a.example"}, KeyUsage: x509.KeyUsageDigitalSignature})
		p.encOnly = testpki.Issue(t, p.caA, testpki.Options{Email: []string{"sid@a.example"}, KeyUsage: x509.KeyUsageKeyEncipherment})
		thePKI = p
	})
	if thePKI == nil {
		t.Fatal("test PKI was not made")
	}
	return thePKI
}

// staticCerts publishes fixed certificates for one remote zone.
type staticCerts struct {
	zone  string
	names map[string][][]byte
}

func (s staticCerts) Domains(context.Context) ([]string, error) { return []string{s.zone}, nil }
func (s staticCerts) Certificates(_ context.Context, name string) ([][]byte, error) {
	return s.names[name], nil
}

// startDNS serves src on a loopback port with hisp's own publisher and
// returns its address.
func startDNS(t testing.TB, src certs.CertSource) string {
	t.Helper()
	pc, l := testnet.ListenDNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		certs.NewPublisher(src, certs.PublisherOptions{}).Serve(ctx, pc, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String()
}

// fixture is a data directory with three local domains and a DNS server for
// the remote one:
//
//   - a.example: alice (sender), dave (no certificate), sid (single-use
//     certificates); anchors caA, caB, caR both ways.
//   - b.example: bob, multi (two certificates), carl (no certificate of his
//     own: the organization-bound one serves); anchors caA, caB, caR.
//   - c.example: cathy; anchors caA and caB only.
//   - r.example (remote, DNS): carol, expired, other.
type fixture struct {
	t        testing.TB
	p        *pki
	st       *store.Store
	agent    *Agent
	resolver string
	logs     *bytes.Buffer
	agents   []*Agent
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	p := testPKI(t)
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		must(st.AddDomain(ctx, d))
	}
	for _, a := range []string{"alice@a.example", "dave@a.example", "sid@a.example", "bob@b.example",
		"multi@b.example", "carl@b.example", "cathy@c.example"} {
		must(st.AddAddress(ctx, a))
	}
	for owner, ids := range map[string][]*testpki.Identity{
		"alice@a.example": {p.alice},
		"sid@a.example":   {p.signOnly, p.encOnly},
		"bob@b.example":   {p.bob},
		"b.example":       {p.bOrg},
		"multi@b.example": {p.multi1, p.multi2},
		"cathy@c.example": {p.cathy},
	} {
		for _, id := range ids {
			must(st.AddCertificate(ctx, owner, id.Cert, nil, id.Key))
		}
	}
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		for _, ca := range []*testpki.Identity{p.caA, p.caB} {
			must(st.AddAnchor(ctx, d, ca.Cert, store.DirectionBoth))
		}
	}
	for _, d := range []string{"a.example", "b.example"} {
		must(st.AddAnchor(ctx, d, p.caR.Cert, store.DirectionBoth))
	}
	resolver := startDNS(t, staticCerts{zone: "r.example", names: map[string][][]byte{
		"carol.r.example":   {p.carol.Cert.Raw},
		"expired.r.example": {p.expired.Cert.Raw},
		"other.r.example":   {p.other.Cert.Raw},
	}})
	f := &fixture{t: t, p: p, st: st, resolver: resolver, logs: &bytes.Buffer{}}
	f.agent = f.newAgent(certs.DiscoveryOptions{Resolver: resolver})
	return f
}

// newAgent returns an agent on the fixture's store that checks the store
// for changes on every message.
func (f *fixture) newAgent(do certs.DiscoveryOptions) *Agent {
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := New(Options{
		Store:          f.st,
		Discoverer:     certs.NewDiscoverer(do),
		Validator:      trust.NewValidator(trust.Options{Logger: logger}),
		Hostname:       "hisp.test",
		Logger:         logger,
		ReloadInterval: -1,
	})
	f.t.Cleanup(func() { a.Close() })
	f.agents = append(f.agents, a)
	return a
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// message returns a plain message; extra header lines (CRLF-terminated)
// go after the standard ones.
func message(from string, to, cc []string, extra string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Test Sender <%s>\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(to, ", "))
	if len(cc) > 0 {
		fmt.Fprintf(&b, "Cc: %s\r\n", strings.Join(cc, ", "))
	}
	b.WriteString("Subject: discharge summary\r\n")
	b.WriteString("Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n")
	fmt.Fprintf(&b, "Message-ID: <%d@test>\r\n", time.Now().UnixNano())
	b.WriteString(extra)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nPatient was discharged in good health.\r\n")
	return []byte(b.String())
}

// open decrypts and verifies a sealed message with one identity's key.
func open(t testing.TB, sealed []byte, id *testpki.Identity) (*smime.Opened, error) {
	t.Helper()
	return smime.Open(bytes.Clone(sealed), []cms.KeyPair{{Cert: id.Cert, Key: id.Key}})
}

// seal makes a Direct message as a remote HISP would.
func seal(t testing.TB, msg []byte, signer *testpki.Identity, to ...*testpki.Identity) []byte {
	t.Helper()
	out, err := sealErr(msg, signer, to...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sealErr(msg []byte, signer *testpki.Identity, to ...*testpki.Identity) ([]byte, error) {
	var rs []cms.Recipient
	for _, id := range to {
		rs = append(rs, cms.Recipient{Cert: id.Cert})
	}
	return smime.Seal(msg, smime.Signer{Cert: signer.Cert, Key: signer.Key}, rs, smime.SealOptions{})
}

// wantError checks that err is an *Error with the given code and enhanced
// code, whose reason contains each of words.
func wantError(t testing.TB, err error, code int, enhanced string, words ...string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *Error %d %s", err, err, code, enhanced)
	}
	if e.Status.Code != code || e.Status.Enhanced != enhanced {
		t.Fatalf("status %v, want %d %s", e.Status, code, enhanced)
	}
	for _, w := range words {
		if !strings.Contains(e.Status.Reason, w) {
			t.Errorf("reason %q lacks %q", e.Status.Reason, w)
		}
	}
	return e
}

// audited returns the audit events of an action whose subject contains
// subject.
func (f *fixture) audited(action, subject string) []store.Event {
	f.t.Helper()
	for _, a := range f.agents {
		a.flushAudit()
	}
	evs, err := f.st.AuditEvents(context.Background(), 0)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []store.Event
	for _, e := range evs {
		if e.Action == action && strings.Contains(e.Subject, subject) {
			out = append(out, e)
		}
	}
	return out
}

func certsEqual(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestStatusAndError(t *testing.T) {
	e := &Error{Status: NewStatus(RefusedUnprotected, "no"), Err: smime.ErrNotSigned}
	if got := e.Error(); got != "550 5.7.1 no: message is not signed" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(e, smime.ErrNotSigned) {
		t.Error("Unwrap does not reach the cause")
	}
	if !NewStatus(TemporaryDiscovery, "").Temporary() || NewStatus(RefusedUntrusted, "").Temporary() || !NewStatus(Accepted, "").OK() {
		t.Error("Temporary/OK wrong")
	}
}

// TestOutcomeReplies: every outcome has its reply in the one table, the
// temporary ones a 4xx, the refusals a 5xx, and a name.
func TestOutcomeReplies(t *testing.T) {
	for o := Accepted; o <= TemporaryRevocation; o++ {
		r, ok := OutcomeReplies[o]
		if !ok {
			t.Errorf("%s: no reply", o)
			continue
		}
		name := o.String()
		var want int
		switch {
		case o == Accepted:
			want = 2
		case strings.HasPrefix(name, "temporary-"):
			want = 4
		case strings.HasPrefix(name, "refused-"):
			want = 5
		default:
			t.Errorf("outcome %d has no name", o)
		}
		if r.Code/100 != want || r.Enhanced[0] != byte('0'+want) {
			t.Errorf("%s: %d %s", name, r.Code, r.Enhanced)
		}
		if st := NewStatus(o, "why"); st.Code != r.Code || st.Enhanced != r.Enhanced || st.Outcome != o {
			t.Errorf("%s: status %+v", name, st)
		}
	}
	if len(OutcomeReplies) != int(TemporaryRevocation) {
		t.Errorf("%d replies for %d outcomes", len(OutcomeReplies), TemporaryRevocation)
	}
}
