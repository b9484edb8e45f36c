package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

// site is a store with the local domains a.example and b.example behind
// web's handlers, and tokens: admin, a plain one (tracking of every
// domain) and one limited to b.example.
type site struct {
	t                    *testing.T
	st                   *store.Store
	url                  string
	admin, plain, scoped string
	bundleURL            string
	bundleCA1, bundleCA2 *testpki.Identity
}

func newSite(t *testing.T) *site {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &site{t: t, st: st}
	for _, d := range []string{"a.example", "b.example"} {
		if _, err := st.AddDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, s.admin, err = st.CreateAPITokenScope(ctx, "deploy", true, nil); err != nil {
		t.Fatal(err)
	}
	if _, s.plain, err = st.CreateAPIToken(ctx, "monitor"); err != nil {
		t.Fatal(err)
	}
	if _, s.scoped, err = st.CreateAPIToken(ctx, "ehr", "b.example"); err != nil {
		t.Fatal(err)
	}
	// A trust bundle over HTTPS.
	s.bundleCA1, s.bundleCA2 = testpki.NewCA(t, "Bundle CA 1"), testpki.NewCA(t, "Bundle CA 2")
	p7, err := pkcs7.DegenerateCertificate(append(append([]byte{}, s.bundleCA1.Cert.Raw...), s.bundleCA2.Cert.Raw...))
	if err != nil {
		t.Fatal(err)
	}
	bundles := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(p7) }))
	t.Cleanup(bundles.Close)
	s.bundleURL = bundles.URL + "/trust.p7b"

	mux := http.NewServeMux()
	Register(mux, Options{Store: st, Log: slog.New(slog.DiscardHandler), Hostname: "test", CRLBase: "http://127.0.0.1:1",
		HTTPClient: bundles.Client()})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// call makes an API request with token and returns the status and the
// decoded JSON body.
func (s *site) call(token, method, path string, body any) (int, any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		s.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, v
}

// want checks a call's status; for an error status, that the body is
// {"error": "...containing words"}.
func (s *site) want(token, method, path string, body any, code int, words string) any {
	s.t.Helper()
	got, v := s.call(token, method, path, body)
	if got != code {
		s.t.Fatalf("%s %s: %d %v, want %d", method, path, got, v, code)
	}
	if code >= 400 {
		m, ok := v.(map[string]any)
		msg, _ := m["error"].(string)
		if !ok || len(m) != 1 || !strings.Contains(msg, words) {
			s.t.Fatalf("%s %s: error body %v, want one error with %q", method, path, v, words)
		}
	}
	return v
}

func field(v any, name string) any {
	m, _ := v.(map[string]any)
	return m[name]
}

// TestAPIScopes: no token or a wrong one is 401; a token that is not an
// admin's is 403 on every admin endpoint; tracking takes any token.
func TestAPIScopes(t *testing.T) {
	s := newSite(t)
	endpoints := [][2]string{
		{"GET", "/api/v1/domains"}, {"POST", "/api/v1/domains"}, {"DELETE", "/api/v1/domains/a.example"},
		{"GET", "/api/v1/addresses"}, {"POST", "/api/v1/addresses"}, {"DELETE", "/api/v1/addresses/x@a.example"},
		{"GET", "/api/v1/certs"}, {"POST", "/api/v1/certs"}, {"DELETE", "/api/v1/certs/1"},
		{"GET", "/api/v1/anchors"}, {"POST", "/api/v1/anchors"}, {"DELETE", "/api/v1/anchors/a.example/1"},
		{"GET", "/api/v1/bundles"}, {"POST", "/api/v1/bundles"}, {"GET", "/api/v1/bundles/a.example/1"},
		{"POST", "/api/v1/bundles/a.example/1/refresh"}, {"DELETE", "/api/v1/bundles/a.example/1"},
		{"GET", "/api/v1/queue"}, {"POST", "/api/v1/queue/1/retry"}, {"DELETE", "/api/v1/queue/1"},
		{"GET", "/api/v1/audit"},
	}
	for _, e := range endpoints {
		s.want("", e[0], e[1], nil, http.StatusUnauthorized, "bearer token")
		s.want("hisp_wrong", e[0], e[1], nil, http.StatusUnauthorized, "bearer token")
		s.want(s.plain, e[0], e[1], nil, http.StatusForbidden, "admin token")
		s.want(s.scoped, e[0], e[1], nil, http.StatusForbidden, "admin token")
	}
	for _, tok := range []string{s.admin, s.plain, s.scoped} {
		s.want(tok, "GET", "/api/v1/messages", nil, http.StatusOK, "")
		s.want(tok, "GET", "/api/v1/messages/%3Cnone@a.example%3E", nil, http.StatusNotFound, "no tracked message <none@a.example>")
	}
	s.want("", "GET", "/api/v1/messages", nil, http.StatusUnauthorized, "bearer token")
	s.want(s.admin, "GET", "/api/v1/messages?state=lost", nil, http.StatusBadRequest, "state")
}

func TestAPIDomains(t *testing.T) {
	s := newSite(t)
	v := s.want(s.admin, "POST", "/api/v1/domains", map[string]string{"domain": "C.example"}, http.StatusCreated, "")
	if field(v, "name") != "c.example" {
		t.Fatalf("added %v", v)
	}
	s.want(s.admin, "POST", "/api/v1/domains", map[string]string{"domain": "c.example"}, http.StatusConflict, "already exists")
	s.want(s.admin, "POST", "/api/v1/domains", map[string]string{"domain": "not a domain"}, http.StatusBadRequest, "")
	s.want(s.admin, "POST", "/api/v1/domains", map[string]string{"name": "d.example"}, http.StatusBadRequest, "unknown field")
	list := s.want(s.admin, "GET", "/api/v1/domains", nil, http.StatusOK, "").([]any)
	if len(list) != 3 {
		t.Fatalf("domains %v", list)
	}
	s.want(s.admin, "DELETE", "/api/v1/domains/c.example", nil, http.StatusOK, "")
	s.want(s.admin, "DELETE", "/api/v1/domains/c.example", nil, http.StatusNotFound, "domain c.example not found")
	assertAudit(t, s.st, "token deploy", "domain.remove", "c.example")
}

// assertAudit checks the newest audit record.
func assertAudit(t *testing.T, st *store.Store, actor, action, subject string) {
	t.Helper()
	evs, err := st.AuditEvents(context.Background(), 1)
	if err != nil || len(evs) != 1 || !strings.HasPrefix(evs[0].Actor, actor) || evs[0].Action != action || !strings.Contains(evs[0].Subject, subject) {
		t.Fatalf("last audit record %+v %v, want %s %s %s", evs, err, actor, action, subject)
	}
}

func TestAPIAddresses(t *testing.T) {
	s := newSite(t)
	s.want(s.admin, "POST", "/api/v1/addresses", map[string]string{"address": "bob@a.example", "password": "short"}, http.StatusUnprocessableEntity, "shorter")
	s.want(s.admin, "POST", "/api/v1/addresses", map[string]string{"address": "bob@z.example", "password": "long enough password"}, http.StatusNotFound, "z.example")
	v := s.want(s.admin, "POST", "/api/v1/addresses", map[string]string{"address": "bob@a.example", "password": "long enough password"}, http.StatusCreated, "")
	if field(v, "address") != "bob@a.example" || field(v, "login") != true {
		t.Fatalf("added %v", v)
	}
	if v, _ := json.Marshal(v); strings.Contains(string(v), "long enough") {
		t.Fatal("the password is echoed")
	}
	list := s.want(s.admin, "GET", "/api/v1/addresses?domain=a.example", nil, http.StatusOK, "").([]any)
	if len(list) != 1 {
		t.Fatalf("addresses %v", list)
	}
	s.want(s.admin, "DELETE", "/api/v1/addresses/bob@a.example", nil, http.StatusOK, "")
	assertAudit(t, s.st, "token deploy", "address.remove", "bob@a.example")
}

func TestAPICerts(t *testing.T) {
	s := newSite(t)
	v := s.want(s.admin, "POST", "/api/v1/certs", map[string]string{"owner": "bob@a.example"}, http.StatusCreated, "")
	if field(v, "owner") != "bob@a.example" || field(v, "has_key") != true || field(v, "binding") != "address" {
		t.Fatalf("issued %v", v)
	}
	id := int(field(v, "id").(float64))
	list := s.want(s.admin, "GET", "/api/v1/certs?owner=a.example", nil, http.StatusOK, "").([]any)
	b, _ := json.Marshal(list)
	if len(list) != 1 || strings.Contains(string(b), "PRIVATE") {
		t.Fatalf("certs %s", b)
	}
	s.want(s.admin, "GET", "/api/v1/certs?owner=z.example", nil, http.StatusNotFound, "z.example")
	s.want(s.admin, "DELETE", "/api/v1/certs/x", nil, http.StatusBadRequest, "want a number")
	v = s.want(s.admin, "DELETE", "/api/v1/certs/"+itoa(id), nil, http.StatusOK, "")
	if field(v, "revoked_serial") == nil {
		t.Fatalf("removed %v", v)
	}
	s.want(s.admin, "DELETE", "/api/v1/certs/"+itoa(id), nil, http.StatusNotFound, "no certificate")
	assertAudit(t, s.st, "token deploy", "cert.revoke", "bob@a.example")
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestAPIAnchors(t *testing.T) {
	s := newSite(t)
	ca := testpki.NewCA(t, "Partner CA")
	body := map[string]string{"domain": "a.example", "pem": string(ca.CertPEM()), "direction": "in"}
	v := s.want(s.admin, "POST", "/api/v1/anchors", body, http.StatusCreated, "")
	if field(v, "domain") != "a.example" || field(v, "direction") != "in" || field(v, "source") != "manual" ||
		!strings.Contains(field(v, "subject").(string), "Partner CA") || field(v, "fingerprint_sha256") == "" || field(v, "not_after") == nil {
		t.Fatalf("anchor %v", v)
	}
	assertAudit(t, s.st, "token deploy", "anchor.add", "a.example")
	s.want(s.admin, "POST", "/api/v1/anchors", body, http.StatusOK, "") // already one
	s.want(s.admin, "POST", "/api/v1/anchors", map[string]string{"domain": "a.example", "pem": "junk", "direction": "in"}, http.StatusBadRequest, "not a certificate")
	s.want(s.admin, "POST", "/api/v1/anchors", map[string]string{"domain": "a.example", "pem": string(ca.CertPEM()), "direction": "sideways"}, http.StatusBadRequest, "direction")
	s.want(s.admin, "POST", "/api/v1/anchors", map[string]string{"domain": "z.example", "pem": string(ca.CertPEM())}, http.StatusNotFound, "z.example")
	s.want(s.admin, "POST", "/api/v1/anchors", map[string]string{"domain": "a.example"}, http.StatusBadRequest, "pem")
	list := s.want(s.admin, "GET", "/api/v1/anchors?domain=a.example", nil, http.StatusOK, "").([]any)
	if len(list) != 1 {
		t.Fatalf("anchors %v", list)
	}
	if l := s.want(s.admin, "GET", "/api/v1/anchors?domain=b.example", nil, http.StatusOK, "").([]any); len(l) != 0 {
		t.Fatalf("anchors of b %v", l)
	}
	id := int(field(v, "id").(float64))
	s.want(s.admin, "DELETE", "/api/v1/anchors/b.example/"+itoa(id), nil, http.StatusNotFound, "no anchor")
	s.want(s.admin, "DELETE", "/api/v1/anchors/a.example/"+itoa(id), nil, http.StatusOK, "")
	assertAudit(t, s.st, "token deploy", "anchor.remove", "a.example")
}

func TestAPIBundles(t *testing.T) {
	s := newSite(t)
	s.want(s.admin, "POST", "/api/v1/bundles", map[string]string{"domain": "a.example", "url": "http://bundles.example/x.p7b"}, http.StatusBadRequest, "plain http")
	s.want(s.admin, "POST", "/api/v1/bundles", map[string]string{"domain": "a.example", "url": "/etc/ssl/x.p7b"}, http.StatusBadRequest, "https URL")
	s.want(s.admin, "POST", "/api/v1/bundles", map[string]string{"domain": "a.example", "url": s.bundleURL, "refresh": "1s"}, http.StatusBadRequest, "refresh")
	s.want(s.admin, "POST", "/api/v1/bundles", map[string]string{"domain": "a.example", "url": s.bundleURL + "x"}, http.StatusCreated, "") // same server: any path answers
	v := s.want(s.admin, "POST", "/api/v1/bundles", map[string]string{"domain": "b.example", "url": s.bundleURL, "refresh": "6h", "direction": "out"}, http.StatusCreated, "")
	if field(v, "anchors") != 2.0 || field(v, "refresh") != "6h0m0s" || field(v, "direction") != "out" {
		t.Fatalf("bundle %v", v)
	}
	assertAudit(t, s.st, "token deploy", "bundle.add", "b.example")
	s.want(s.admin, "POST", "/api/v1/bundles", map[string]string{"domain": "b.example", "url": s.bundleURL}, http.StatusConflict, "already has a bundle")
	id := itoa(int(field(v, "id").(float64)))
	if l := s.want(s.admin, "GET", "/api/v1/bundles?domain=b.example", nil, http.StatusOK, "").([]any); len(l) != 1 {
		t.Fatalf("bundles %v", l)
	}
	c := s.want(s.admin, "GET", "/api/v1/bundles/b.example/"+id, nil, http.StatusOK, "")
	if as := field(c, "anchors").([]any); len(as) != 2 || field(as[0], "not_after") == nil {
		t.Fatalf("contents %v", c)
	}
	s.want(s.admin, "GET", "/api/v1/bundles/a.example/"+id, nil, http.StatusNotFound, "no bundle")
	if r := s.want(s.admin, "POST", "/api/v1/bundles/b.example/"+id+"/refresh", nil, http.StatusOK, ""); field(r, "anchors") != 2.0 {
		t.Fatalf("refreshed %v", r)
	}
	assertAudit(t, s.st, "token deploy", "bundle.refresh", "b.example")
	s.want(s.admin, "DELETE", "/api/v1/bundles/b.example/"+id, nil, http.StatusOK, "")
	assertAudit(t, s.st, "token deploy", "bundle.remove", "b.example")
}

func TestAPIQueueAndAudit(t *testing.T) {
	s := newSite(t)
	if l := s.want(s.admin, "GET", "/api/v1/queue?all=1", nil, http.StatusOK, "").([]any); len(l) != 0 {
		t.Fatalf("queue %v", l)
	}
	s.want(s.admin, "POST", "/api/v1/queue/7/retry", nil, http.StatusNotFound, "no queue entry 7")
	s.want(s.admin, "DELETE", "/api/v1/queue/7", nil, http.StatusNotFound, "no queue entry 7")
	s.want(s.admin, "GET", "/api/v1/audit?limit=0", nil, http.StatusBadRequest, "limit")
	if _, err := ops.New(s.st, "tester").AddDomain(context.Background(), "c.example"); err != nil {
		t.Fatal(err)
	}
	l := s.want(s.admin, "GET", "/api/v1/audit?limit=1", nil, http.StatusOK, "").([]any)
	if len(l) != 1 {
		t.Fatalf("audit %v", l)
	}
}
