package smtp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
)

// clientCertificate issues a TLS client certificate from ca.
func clientCertificate(t *testing.T, ca *testpki.Identity, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "key")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	tcheck(t, err, "issue client certificate")
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestSubmissionRelay: a relay account logs in by name, sends as any
// address of its domains and as nothing else, only from its networks and
// only with a client certificate of its CA when it has one; each refused
// login leaves an audit record that says why.
func TestSubmissionRelay(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	_, err := st.AddDomain(ctx, "lab.example")
	tcheck(t, err, "add domain")
	ca := testpki.NewCA(t, "EHR client CA")
	other := testpki.NewCA(t, "another CA")
	for _, r := range []store.Relay{
		{Name: "ehr", Domains: []string{"a.example", "lab.example"}},
		{Name: "ehr-far", Domains: []string{"a.example"}, Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{Name: "ehr-cert", Domains: []string{"a.example"}, Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			ClientCAs: []*x509.Certificate{ca.Cert}},
	} {
		_, err := st.AddRelay(ctx, r, "relay password")
		tcheck(t, err, "add relay "+r.Name)
	}
	tlsConfig, pool := testTLS(t)
	tlsConfig.ClientAuth = tls.RequestClientCert
	s, rec := newSubmission(t, SubmissionConfig{Config: Config{TLSConfig: tlsConfig}}, st)
	addr := serve(t, s)
	dial := func(certs ...tls.Certificate) *gosmtp.Client {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		tcheck(t, err, "dial")
		c, err := gosmtp.NewClientStartTLS(conn, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: certs})
		tcheck(t, err, "starttls")
		t.Cleanup(func() { c.Close() })
		return c
	}

	c := dial()
	tcheck(t, c.Auth(sasl.NewPlainClient("", "EHR", "relay password")), "relay login")
	wantSMTPError(t, c.Mail("someone@elsewhere.example", nil), 550, "5.7.1", "not in a domain of relay ehr")
	for _, from := range []string{"dr.who@lab.example", "alice@a.example"} {
		tcheck(t, c.Mail(from, nil), "mail "+from)
		tcheck(t, c.Rcpt("carol@b.example", nil), "rcpt")
		w, err := c.Data()
		tcheck(t, err, "data")
		w.Write([]byte("From: " + from + "\r\nTo: carol@b.example\r\nSubject: s\r\n\r\nhello\r\n"))
		tcheck(t, w.Close(), "end data")
	}
	got := rec.all()
	if len(got) != 2 || got[0].env.User != "ehr" || strings.Join(got[0].env.RelayDomains, ",") != "a.example,lab.example" {
		t.Fatalf("relayed %+v", got)
	}
	// A relay password is no address login, nor an address's a relay's.
	wantSMTPError(t, dial().Auth(sasl.NewPlainClient("", "ehr@a.example", "relay password")), 535, "5.7.8", "")
	wantSMTPError(t, dial().Auth(sasl.NewPlainClient("", "alice", "alice-password")), 535, "5.7.8", "")

	wantSMTPError(t, dial().Auth(sasl.NewPlainClient("", "ehr-far", "relay password")), 535, "5.7.8", "")
	wantSMTPError(t, dial().Auth(sasl.NewPlainClient("", "ehr-cert", "relay password")), 535, "5.7.8", "")
	wantSMTPError(t, dial(clientCertificate(t, other, "intruder")).Auth(sasl.NewPlainClient("", "ehr-cert", "relay password")), 535, "5.7.8", "")
	tcheck(t, dial(clientCertificate(t, ca, "ehr node 1")).Auth(sasl.NewPlainClient("", "ehr-cert", "relay password")), "login with a client certificate")

	evs, err := st.AuditEvents(ctx, 100)
	tcheck(t, err, "audit")
	var reasons []string
	for _, e := range evs {
		if e.Action == "smtp.submission.auth" {
			reasons = append(reasons, e.Subject+": "+e.Reason)
		}
	}
	all := strings.Join(reasons, "\n")
	for _, want := range []string{"ehr-far: 535 5.7.8 Authentication credentials invalid (invalid address or password: relay ehr-far: client address 127.0.0.1 is not in its networks)",
		"ehr-cert: 535 5.7.8 Authentication credentials invalid (invalid address or password: relay ehr-cert: no TLS client certificate",
		"relay ehr-cert: TLS client certificate \"CN=intruder\""} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q:\n%s", want, all)
		}
	}
}

// TestRelayClientCertificateSkipsSharedGates: guesses at a relay's name
// from other IPs make its logins take turns, except those with a client
// certificate of the relay's own CA.
func TestRelayClientCertificateSkipsSharedGates(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	ca := testpki.NewCA(t, "EHR client CA")
	_, err := st.AddRelay(ctx, store.Relay{Name: "ehr-cert", Domains: []string{"a.example"}, ClientCAs: []*x509.Certificate{ca.Cert}}, "relay password")
	tcheck(t, err, "add relay")
	tlsConfig, pool := testTLS(t)
	tlsConfig.ClientAuth = tls.RequestClientCert
	logins := loginlimit.New(func() time.Time { return time.Unix(1e9, 0) }) // exact turns
	var mu sync.Mutex
	var sleeps []time.Duration
	s, _ := newSubmission(t, SubmissionConfig{Config: Config{TLSConfig: tlsConfig}, Logins: logins,
		LoginSleep: func(_ context.Context, d time.Duration) { mu.Lock(); sleeps = append(sleeps, d); mu.Unlock() }}, st)
	addr := serve(t, s)
	for i := range 3 {
		logins.Fail("ehr-cert", fmt.Sprintf("203.0.113.%d", i))
	}
	login := func(cert bool) ([]time.Duration, error) {
		t.Helper()
		mu.Lock()
		sleeps = nil
		mu.Unlock()
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if cert {
			cfg.Certificates = []tls.Certificate{clientCertificate(t, ca, "ehr node 1")}
		}
		conn, err := net.Dial("tcp", addr)
		tcheck(t, err, "dial")
		c, err := gosmtp.NewClientStartTLS(conn, cfg)
		tcheck(t, err, "starttls")
		defer c.Close()
		err = c.Auth(sasl.NewPlainClient("", "ehr-cert", "relay password"))
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sleeps), err
	}
	// Without its certificate (refused for want of one, after its turn)
	// the attempt waits at the name's gate: three failures, two seconds.
	got, err := login(false)
	wantSMTPError(t, err, 535, "5.7.8", "")
	if len(got) == 0 || got[0] != 4*loginlimit.DelayBase {
		t.Fatalf("without a certificate: waits %v, want the name's turn first (%v)", got, 4*loginlimit.DelayBase)
	}
	// With it, only the turn of its own pair (the one failure from this
	// IP), not the name's (four failures now: eight seconds).
	got, err = login(true)
	tcheck(t, err, "relay login with its certificate")
	if !slices.Equal(got, []time.Duration{loginlimit.DelayBase}) {
		t.Fatalf("with its client certificate the relay waited %v, want %v", got, loginlimit.DelayBase)
	}
}
