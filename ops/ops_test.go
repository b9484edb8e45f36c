package ops

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/policy"
	"github.com/hisp-project/hisp/store"
)

// newOps is the operations of actor "tester" on a new store with the
// local domain a.example.
func newOps(t *testing.T) *Ops {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	o := New(st, "tester")
	if _, err := o.AddDomain(ctx, "A.example"); err != nil {
		t.Fatal(err)
	}
	return o
}

// lastAudit checks the newest audit record: the actor, the action and
// words of its subject and reason.
func lastAudit(t *testing.T, o *Ops, action, subject, reason string) {
	t.Helper()
	evs, err := o.AuditLog(context.Background(), 1)
	if err != nil || len(evs) != 1 {
		t.Fatalf("audit log: %v %v", evs, err)
	}
	e := evs[0]
	if e.Actor != "tester" || e.Action != action || !strings.Contains(e.Subject, subject) || !strings.Contains(e.Reason, reason) || e.Verdict != "ok" {
		t.Fatalf("last audit record %+v, want %s %s %q", e, action, subject, reason)
	}
}

func wantKind(t *testing.T, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want %v", err, kind)
	}
}

func TestDomains(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	lastAudit(t, o, "domain.add", "a.example", "")
	_, err := o.AddDomain(ctx, "a.example")
	wantKind(t, err, store.ErrExists)
	_, err = o.AddDomain(ctx, "not a domain")
	wantKind(t, err, ErrInvalid)
	ds, err := o.Domains(ctx)
	if err != nil || len(ds) != 1 || ds[0].Name != "a.example" {
		t.Fatalf("domains %+v %v", ds, err)
	}
	_, err = o.RemoveDomain(ctx, "b.example")
	wantKind(t, err, store.ErrNotFound)
	if !strings.Contains(err.Error(), "hisp domain add b.example") {
		t.Fatalf("no hint: %v", err)
	}
	if _, err := o.RemoveDomain(ctx, "a.example"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "domain.remove", "a.example", "0 addresses")
}

func TestAddresses(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	_, err := o.AddAddress(ctx, "bob@a.example", "short")
	wantKind(t, err, ErrRefused)
	_, err = o.AddAddress(ctx, "bob@b.example", "long enough password")
	wantKind(t, err, store.ErrNotFound)
	if _, err := o.AddAddress(ctx, "Bob@A.example", "long enough password"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "address.add", "bob@a.example", "")
	_, err = o.AddAddress(ctx, "bob@a.example", "long enough password")
	wantKind(t, err, store.ErrExists)
	if err := o.SetPassword(ctx, "bob@a.example", "another long password"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "address.passwd", "bob@a.example", "")
	q, err := o.SetQuota(ctx, "bob@a.example", 1<<20, "1MB")
	if err != nil || q.Bytes != 1<<20 || q.Default {
		t.Fatalf("quota %+v %v", q, err)
	}
	lastAudit(t, o, "address.quota", "bob@a.example", "1MB")
	list, err := o.Addresses(ctx, "a.example")
	if err != nil || len(list) != 1 || !list[0].Login {
		t.Fatalf("addresses %+v %v", list, err)
	}
	if _, err := o.RemoveAddress(ctx, "bob@a.example"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "address.remove", "bob@a.example", "")
}

func TestCertificates(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	ca := testpki.NewCA(t, "Test CA")
	bob := testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@a.example"}})
	org := testpki.Issue(t, ca, testpki.Options{DNS: []string{"a.example"}})
	weak := testpki.Issue(t, ca, testpki.Options{Email: []string{"weak@a.example"}, KeyBits: 1024})
	wild := testpki.Issue(t, ca, testpki.Options{DNS: []string{"*.a.example"}})

	// The binding rule is validation's (trust.Bind): SAN only, no
	// wildcard, an address needs its rfc822Name.
	for _, c := range []struct {
		owner string
		id    *testpki.Identity
		want  string
	}{
		{"alice@a.example", bob, "does not bind to alice@a.example"},
		{"bob@a.example", org, "does not bind to bob@a.example"},
		{"a.example", bob, "does not bind to a.example"},
		{"a.example", wild, "wildcard"},
		{"weak@a.example", weak, "at least 2048 bits"},
	} {
		_, err := o.ImportCert(ctx, c.owner, &certfile.Identity{Cert: c.id.Cert, Key: c.id.Key})
		wantKind(t, err, ErrRefused)
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("import %s for %s: %v, want %q", c.id.Cert.Subject, c.owner, err, c.want)
		}
	}
	res, err := o.ImportCert(ctx, "bob@a.example", &certfile.Identity{Cert: bob.Cert, Key: bob.Key})
	if err != nil || res.Role != "dual" || res.Key != "RSA 2048" {
		t.Fatalf("import %+v %v", res, err)
	}
	lastAudit(t, o, "cert.import", "bob@a.example", res.Cert.Fingerprint)
	_, err = o.ImportCert(ctx, "bob@a.example", &certfile.Identity{Cert: bob.Cert, Key: bob.Key})
	wantKind(t, err, store.ErrExists)

	iss, err := o.IssueCert(ctx, "carol@a.example", "http://127.0.0.1:9999")
	if err != nil || !iss.CACreated || iss.CRL != "http://127.0.0.1:9999/crl/a.example.crl" {
		t.Fatalf("issue %+v %v", iss, err)
	}
	lastAudit(t, o, "cert.issue", "carol@a.example", "serial "+iss.Serial.String())
	list, err := o.Certs(ctx, "a.example")
	if err != nil || len(list) != 2 {
		t.Fatalf("certs %+v %v", list, err)
	}
	if soon := o.Expiring(list, 20*365*24*time.Hour); len(soon) != 2 || soon[0].NotAfter.After(soon[1].NotAfter) {
		t.Fatalf("expiring %+v", soon)
	}
	if none := o.Expiring(list, time.Hour); len(none) != 0 {
		t.Fatalf("expiring within an hour: %+v", none)
	}
	rm, err := o.RemoveCert(ctx, iss.Cert.ID)
	if err != nil || rm.Revoked == nil || rm.Revoked.Cmp(iss.Serial) != 0 {
		t.Fatalf("remove %+v %v", rm, err)
	}
	lastAudit(t, o, "cert.revoke", "carol@a.example", "serial "+iss.Serial.String())
	if _, err := o.RemoveCert(ctx, res.Cert.ID); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "cert.remove", "bob@a.example", res.Cert.Fingerprint)
	_, err = o.RemoveCert(ctx, res.Cert.ID)
	wantKind(t, err, store.ErrNotFound)
}

func TestAnchors(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	ca := testpki.NewCA(t, "Partner CA")
	leaf := testpki.Issue(t, ca, testpki.Options{Email: []string{"x@b.example"}})
	_, err := o.AddAnchorsPEM(ctx, "a.example", []byte("not a certificate"), store.DirectionIn)
	wantKind(t, err, ErrInvalid)
	_, err = o.AddAnchorsPEM(ctx, "b.example", ca.CertPEM(), store.DirectionIn)
	wantKind(t, err, store.ErrNotFound)
	added, err := o.AddAnchorsPEM(ctx, "a.example", append(ca.CertPEM(), leaf.CertPEM()...), store.DirectionIn)
	if err != nil || len(added) != 2 || added[0].Existing || len(added[0].Warnings) != 0 || len(added[1].Warnings) != 1 {
		t.Fatalf("added %+v %v", added, err)
	}
	if !strings.Contains(added[1].Warnings[0], "not a CA") {
		t.Fatalf("warning %q", added[1].Warnings[0])
	}
	lastAudit(t, o, "anchor.add", "a.example", added[1].Anchor.Fingerprint)
	again, err := o.AddAnchorsPEM(ctx, "a.example", ca.CertPEM(), store.DirectionOut)
	if err != nil || !again[0].Existing || again[0].Anchor.Direction != "in" {
		t.Fatalf("again %+v %v", again, err)
	}
	list, err := o.Anchors(ctx, "")
	if err != nil || len(list) != 2 || list[0].Source != "manual" || list[0].Subject == "" || list[0].Fingerprint == "" {
		t.Fatalf("anchors %+v %v", list, err)
	}
	_, err = o.RemoveAnchor(ctx, "a.example", 999)
	wantKind(t, err, store.ErrNotFound)
	if _, err := o.RemoveAnchor(ctx, "a.example", added[0].Anchor.ID); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "anchor.remove", "a.example", added[0].Anchor.Fingerprint)
}

// bundleServer serves a PKCS#7 bundle of certs over HTTPS and returns its
// URL; o fetches with the server's client.
func bundleServer(t *testing.T, o *Ops, certs ...*testpki.Identity) (string, *[]byte) {
	t.Helper()
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Cert.Raw...)
	}
	der, err := pkcs7.DegenerateCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	body := &der
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *body == nil {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		w.Write(*body)
	}))
	t.Cleanup(srv.Close)
	o.HTTPClient = srv.Client()
	return srv.URL + "/trust.p7b", body
}

func TestBundles(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	ca1, ca2 := testpki.NewCA(t, "Bundle CA 1"), testpki.NewCA(t, "Bundle CA 2")
	url, body := bundleServer(t, o, ca1, ca2)

	// DT-01: an unsigned bundle over plain http is refused before anything.
	_, err := o.AddBundle(ctx, BundleRequest{Domain: "a.example", Location: "http://bundles.example/x.p7b"})
	wantKind(t, err, ErrInvalid)
	if !strings.Contains(err.Error(), "plain http") {
		t.Fatal(err)
	}
	_, err = o.AddBundle(ctx, BundleRequest{Domain: "a.example", Location: url, Refresh: time.Second})
	wantKind(t, err, ErrInvalid)
	if _, err := BundleLocation("/etc/passwd", false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a file from the web: %v", err)
	}
	if d, err := ParseRefresh("2d"); err != nil || d != 48*time.Hour {
		t.Fatalf("refresh 2d: %v %v", d, err)
	}

	res, err := o.AddBundle(ctx, BundleRequest{Domain: "a.example", Location: url, Direction: store.DirectionOut})
	if err != nil || !res.Fetched || res.Bundle.Anchors != 2 || res.Bundle.Refresh != "24h0m0s" {
		t.Fatalf("add %+v %v", res, err)
	}
	lastAudit(t, o, "bundle.add", "a.example", url)
	_, err = o.AddBundle(ctx, BundleRequest{Domain: "a.example", Location: url})
	wantKind(t, err, store.ErrExists)
	bc, err := o.Bundle(ctx, "a.example", res.Bundle.ID)
	if err != nil || len(bc.Anchors) != 2 || bc.Anchors[0].Source != "bundle" || bc.Anchors[0].NotAfter.IsZero() {
		t.Fatalf("contents %+v %v", bc, err)
	}
	// An anchor of a bundle goes with its bundle only.
	_, err = o.RemoveAnchor(ctx, "a.example", bc.Anchors[0].ID)
	wantKind(t, err, ErrRefused)

	// Refresh now: a success replaces the anchors, a failure keeps them.
	one, _ := pkcs7.DegenerateCertificate(ca1.Cert.Raw)
	*body = one
	b, err := o.RefreshBundle(ctx, "a.example", res.Bundle.ID)
	if err != nil || b.Anchors != 1 {
		t.Fatalf("refresh %+v %v", b, err)
	}
	lastAudit(t, o, "bundle.refresh", "a.example", "1 anchors")
	*body = nil
	_, err = o.RefreshBundle(ctx, "a.example", res.Bundle.ID)
	wantKind(t, err, ErrRefused)
	bs, _ := o.Bundles(ctx, "a.example")
	if len(bs) != 1 || bs[0].Anchors != 1 || bs[0].LastError == "" {
		t.Fatalf("after a failed refresh %+v", bs)
	}
	evs, _ := o.AuditLog(ctx, 1)
	if evs[0].Action != "bundle.refresh" || evs[0].Verdict != "failed" {
		t.Fatalf("failed refresh audited as %+v", evs[0])
	}
	_, err = o.RefreshBundle(ctx, "a.example", 999)
	wantKind(t, err, store.ErrNotFound)

	if _, err := o.RemoveBundle(ctx, "a.example", res.Bundle.ID); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "bundle.remove", "a.example", url)
	if as, _ := o.Anchors(ctx, "a.example"); len(as) != 0 {
		t.Fatalf("anchors left %+v", as)
	}
}

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	_, _, err := o.AddRelay(ctx, RelayRequest{Name: "ehr", Password: "long enough password", Domains: []string{"b.example"}})
	wantKind(t, err, store.ErrNotFound)
	r, _, err := o.AddRelay(ctx, RelayRequest{Name: "EHR", Password: "long enough password", Domains: []string{"a.example"}})
	if err != nil || r.Name != "ehr" {
		t.Fatalf("relay %+v %v", r, err)
	}
	lastAudit(t, o, "relay.add", "ehr", "sends for a.example")
	if _, err := o.RemoveRelay(ctx, "ehr"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "relay.remove", "ehr", "")

	if _, err := o.AddAdmin(ctx, "ops", "admin password 1"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "admin.add", "ops", "")
	if err := o.RemoveAdmin(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "admin.remove", "ops", "")

	_, _, err = o.AddToken(ctx, "both", true, []string{"a.example"})
	wantKind(t, err, ErrInvalid)
	tok, secret, err := o.AddToken(ctx, "deploy", true, nil)
	if err != nil || !tok.Admin || !strings.HasPrefix(secret, "hisp_") {
		t.Fatalf("token %+v %v", tok, err)
	}
	lastAudit(t, o, "token.add", "deploy", "admin")
	if ts, _ := o.Tokens(ctx); len(ts) != 1 || !ts[0].Admin {
		t.Fatalf("tokens %+v", ts)
	}
	if err := o.RemoveToken(ctx, "deploy"); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "token.remove", "deploy", "")

	_, err = o.AddWebhook(ctx, "a.example", "https://ehr.example/hook", []byte("short"))
	wantKind(t, err, ErrRefused)
	w, err := o.AddWebhook(ctx, "a.example", "https://ehr.example/hook", []byte("a secret of 16 bytes or more"))
	if err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "webhook.add", "https://ehr.example/hook", "")
	if err := o.RemoveWebhook(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "webhook.remove", "", "")
}

func TestPolicies(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	_, err := o.AddPolicies(ctx, "a.example", []policy.Rule{{Name: "bad", Expr: "no such field"}}, "")
	wantKind(t, err, ErrInvalid)
	rules, err := policy.Preset("directtrust")
	if err != nil {
		t.Fatal(err)
	}
	added, err := o.AddPolicies(ctx, "a.example", rules, store.DirectionIn)
	if err != nil || len(added) != len(rules) || added[0].Policy.Meaning == "" {
		t.Fatalf("added %+v %v", added, err)
	}
	lastAudit(t, o, "policy.add", "a.example", "(in)")
	list, err := o.Policies(ctx, "a.example")
	if err != nil || len(list) != len(rules) {
		t.Fatalf("policies %+v %v", list, err)
	}
	if _, err := o.RemovePolicy(ctx, "a.example", list[0].Name); err != nil {
		t.Fatal(err)
	}
	lastAudit(t, o, "policy.remove", "a.example", list[0].Name)
}

func TestQueueAndTracking(t *testing.T) {
	ctx := context.Background()
	o := newOps(t)
	_, err := o.RetryQueue(ctx, 42)
	wantKind(t, err, store.ErrNotFound)
	_, err = o.DropQueue(ctx, 42)
	wantKind(t, err, store.ErrNotFound)
	q, err := o.Queue(ctx, true)
	if err != nil || len(q) != 0 {
		t.Fatalf("queue %+v %v", q, err)
	}
	_, err = o.TrackedMessage(ctx, "<nothing@a.example>", Scope{})
	wantKind(t, err, store.ErrNotFound)
	_, err = o.TrackedMessages(ctx, store.TrackFilter{State: "lost"}, Scope{})
	wantKind(t, err, ErrInvalid)
}
