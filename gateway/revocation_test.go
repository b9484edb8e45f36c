package gateway

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
)

// crlServer serves an empty CRL of each CA given, at /NAME.crl, and
// answers 503 while down.
type crlServer struct {
	addr string
	down atomic.Bool
	hits atomic.Int64
}

func startCRLServer(t *testing.T, cas map[string]*testpki.Identity) *crlServer {
	t.Helper()
	s := &crlServer{}
	crls := map[string][]byte{}
	for name, ca := range cas {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
			ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour)}, ca.Cert, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		crls["/"+name+".crl"] = der
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		der, ok := crls[r.URL.Path]
		switch {
		case s.down.Load():
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
		case !ok:
			http.NotFound(w, r)
		default:
			w.Write(der)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	s.addr = "http://" + l.Addr().String()
	return s
}

// addUserCert adds an address whose certificate names a CRL distribution
// point.
func (in *instance) addUserCert(t *testing.T, local string, crl string) string {
	t.Helper()
	ctx := context.Background()
	addr := local + "@" + in.domain
	id := testpki.Issue(t, in.ca, testpki.Options{Email: []string{addr}, CRL: []string{crl}})
	must(t, func() error { _, err := in.st.AddAddress(ctx, addr); return err })
	must(t, func() error { return in.st.SetPassword(ctx, addr, in.password) })
	must(t, func() error { _, err := in.st.AddCertificate(ctx, addr, id.Cert, nil, id.Key); return err })
	return addr
}

// revocationTweak sets [trust] and a quick retry schedule.
func revocationTweak(mode string, grace time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		c.Trust.Revocation = mode
		c.Trust.RevocationGrace = config.Duration{Duration: grace}
		c.Trust.RefetchAfter = config.Duration{Duration: 10 * time.Millisecond}
		c.Outbound.RetryFirst = config.Duration{Duration: 200 * time.Millisecond}
		c.Outbound.RetryMax = config.Duration{Duration: 500 * time.Millisecond}
		c.Outbound.RetryAttempts = 1000
	}
}

// revocationPair is a hospital and a clinic trusting each other, both with
// the [trust] mode, a user at each end whose certificate names a CRL of the
// server, and the server, up.
type revocationPair struct {
	a, b         *instance
	crl          *crlServer
	alice2, bob2 string // certificates with a CRL distribution point
}

func newRevocationPair(t *testing.T, mode string, grace time.Duration) *revocationPair {
	t.Helper()
	p := &revocationPair{a: newInstance(t, "hospital.example", "alice"), b: newInstance(t, "clinic.example", "bob")}
	p.a.trust(t, p.b)
	p.b.trust(t, p.a)
	p.crl = startCRLServer(t, map[string]*testpki.Identity{"hospital": p.a.ca, "clinic": p.b.ca})
	p.alice2 = p.a.addUserCert(t, "alice2", p.crl.addr+"/hospital.crl")
	p.bob2 = p.b.addUserCert(t, "bob2", p.crl.addr+"/clinic.crl")
	dns := publishBoth(t, p.a, p.b)
	p.b.start(t, dns, nil, revocationTweak(mode, grace))
	p.a.start(t, dns, map[string]string{"clinic.example": p.b.addrs["smtp"]}, revocationTweak(mode, grace))
	return p
}

// deferred returns the hospital's recipients waiting to be sealed to.
func (p *revocationPair) deferred(t *testing.T) []store.QueuedRecipient {
	t.Helper()
	var out []store.QueuedRecipient
	for _, q := range p.a.queued(t) {
		for _, r := range q.Recipients {
			if r.State == store.StateDeferred || r.State == store.StateSealing {
				out = append(out, r)
			}
		}
	}
	return out
}

// TestRevocationDeferEndToEnd: [trust] revocation = "defer" over two
// instances. Outbound: while the CRL of the recipient's certificate is down
// the submission is accepted and the recipient kept (4.7.5), not bounced;
// when the CRL is back the message is sealed, sent and filed. Inbound: while
// the CRL of the signer's certificate is down the receiving HISP answers
// 451 4.7.5 and the sender's queue retries; when it is back, the message is
// filed.
func TestRevocationDeferEndToEnd(t *testing.T) {
	p := newRevocationPair(t, "defer", 24*time.Hour)
	a, b := p.a, p.b

	// Outbound: the recipient's CRL is down.
	p.crl.down.Store(true)
	msg := plainMessage(a.user, p.bob2, "rev-out@hospital.example", "outbound during a CRL outage")
	if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{p.bob2}, msg); refused != "" {
		t.Fatalf("submission refused during a CRL outage: %s", refused)
	}
	waitFor(t, "the recipient kept for the outage", func() bool {
		d := p.deferred(t)
		return len(d) == 1 && d[0].LastCode == 451 && d[0].LastEnhanced == "4.7.5" && strings.Contains(d[0].LastError, "503")
	})
	before := p.crl.hits.Load()
	waitFor(t, "the deferred recipient retried", func() bool { return p.crl.hits.Load() > before+1 })
	if got := b.mailbox(t, p.bob2, "INBOX"); len(got) != 0 {
		t.Fatal("delivered while the recipient's revocation status was unknown")
	}
	if inbox := a.mailbox(t, a.user, "INBOX"); len(inbox) != 0 {
		t.Fatalf("the sender was sent a notice during the outage:\n%.600s", inbox[0])
	}
	p.crl.down.Store(false)
	got := b.waitMailbox(t, p.bob2, "INBOX", 1)[0]
	if !strings.Contains(string(got), "outbound during a CRL outage") {
		t.Fatalf("filed:\n%.600s", got)
	}
	waitFor(t, "the deferred submission done", func() bool { return len(p.deferred(t)) == 0 })

	// Inbound: the signer's CRL is down at the receiving HISP.
	p.crl.down.Store(true)
	msg = plainMessage(p.alice2, b.user, "rev-in@hospital.example", "inbound during a CRL outage")
	if refused := submitPython(t, a.addrs["submission"], p.alice2, a.password, p.alice2, []string{b.user}, msg); refused != "" {
		t.Fatalf("submission refused: %s", refused)
	}
	waitFor(t, "451 4.7.5 from the receiving HISP", func() bool {
		for _, q := range a.queued(t) {
			if q.MessageID == "<rev-in@hospital.example>" && len(q.Recipients) == 1 {
				r := q.Recipients[0]
				return r.LastCode == 451 && r.LastEnhanced == "4.7.5" && r.State == store.StateQueued
			}
		}
		return false
	})
	if got := b.mailbox(t, b.user, "INBOX"); len(got) != 0 {
		t.Fatal("filed while the signer's revocation status was unknown")
	}
	p.crl.down.Store(false)
	got = b.waitMailbox(t, b.user, "INBOX", 1)[0]
	if !strings.Contains(string(got), "inbound during a CRL outage") {
		t.Fatalf("filed:\n%.900s", got)
	}
}

// TestRevocationModes: with the CRL down for good, "defer" fails the
// recipient after the grace with a DSN that says why, "refuse" at once, and
// "allow" delivers.
func TestRevocationModes(t *testing.T) {
	t.Run("defer past the grace", func(t *testing.T) {
		p := newRevocationPair(t, "defer", time.Second)
		p.crl.down.Store(true)
		a := p.a
		msg := plainMessage(a.user, p.bob2, "grace@hospital.example", "never delivered")
		if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{p.bob2}, msg); refused != "" {
			t.Fatalf("submission refused: %s", refused)
		}
		ds := dsns(t, a.waitMailbox(t, a.user, "INBOX", 1))
		r := ds[0].Recipients
		if len(r) != 1 || r[0].Status != "5.7.5" || !strings.Contains(r[0].Diagnostic, "revocation_grace") {
			t.Fatalf("DSN recipients %+v", r)
		}
		// The deliverer records the sealer's verdict once the DSN is filed.
		waitFor(t, "no recipient deferred after the grace", func() bool { return len(p.deferred(t)) == 0 })
	})
	t.Run("refuse", func(t *testing.T) {
		p := newRevocationPair(t, "refuse", time.Hour)
		p.crl.down.Store(true)
		a := p.a
		msg := plainMessage(a.user, p.bob2, "refuse@hospital.example", "refused")
		refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{p.bob2}, msg)
		if !strings.Contains(refused, "5.7.1") || !strings.Contains(refused, "revocation policy: refuse") {
			t.Fatalf("submission: %q, want 5.7.1 naming the policy", refused)
		}
	})
	t.Run("allow", func(t *testing.T) {
		p := newRevocationPair(t, "allow", time.Hour)
		p.crl.down.Store(true)
		a := p.a
		msg := plainMessage(p.alice2, p.bob2, "allow@hospital.example", "allowed")
		if refused := submitPython(t, a.addrs["submission"], p.alice2, a.password, p.alice2, []string{p.bob2}, msg); refused != "" {
			t.Fatalf("submission refused: %s", refused)
		}
		got := p.b.waitMailbox(t, p.bob2, "INBOX", 1)[0]
		if !strings.Contains(string(got), "allowed") {
			t.Fatalf("filed:\n%.600s", got)
		}
	})
}
