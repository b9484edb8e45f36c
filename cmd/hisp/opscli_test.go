package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/hisp-project/hisp/internal/testpki"
)

// TestTokenAddAdmin: hisp token add --admin prints the token last, alone
// on its line (so $(hisp token add ...) is the token); an admin token
// cannot be limited to domains; token list says which tokens are admins'.
func TestTokenAddAdmin(t *testing.T) {
	dir := t.TempDir()
	adminOK(t, dir, "domain", "add", "a.example")
	code, out, stderr := adminRun(t, dir, "token", "add", "deploy", "--admin")
	if code != 0 || !strings.HasPrefix(out, "hisp_") || strings.Count(out, "\n") != 1 || !strings.Contains(stderr, "admin API token") {
		t.Fatalf("token add --admin: %d %q %q", code, out, stderr)
	}
	adminFails(t, dir, 2, "not both", "token", "add", "both", "--admin", "--domain", "a.example")
	adminOK(t, dir, "token", "add", "ehr", "--domain", "a.example")
	list := adminOK(t, dir, "token", "list")
	if !matchLine(strings.Split(list, "\n"), `^deploy +all \(admin\)`) || !matchLine(strings.Split(list, "\n"), `^ehr +a\.example`) {
		t.Fatalf("token list:\n%s", list)
	}
	if j := adminOK(t, dir, "token", "list", "--json"); !strings.Contains(j, `"admin": true`) {
		t.Fatalf("token list --json:\n%s", j)
	}
}

// TestBundleShowRefresh: hisp bundle show lists a bundle's anchors with
// their expiry; hisp bundle refresh fetches it now, and a failed fetch
// keeps the last good anchors and says why (exit 1).
func TestBundleShowRefresh(t *testing.T) {
	dir := t.TempDir()
	adminOK(t, dir, "domain", "add", "a.example")
	ca1, ca2 := testpki.NewCA(t, "Show CA 1"), testpki.NewCA(t, "Show CA 2")
	body, _ := pkcs7.DegenerateCertificate(ca1.Cert.Raw)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body == nil {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	adminOK(t, dir, "bundle", "add", "a.example", srv.URL+"/b.p7b", "--refresh", "2d")
	out := adminOK(t, dir, "bundle", "show", "a.example", "1")
	if !strings.Contains(out, "refresh 48h0m0s") || !strings.Contains(out, "Show CA 1") || !strings.Contains(out, ca1.Cert.NotAfter.UTC().Format("2006-01-02")) {
		t.Fatalf("bundle show:\n%s", out)
	}
	body, _ = pkcs7.DegenerateCertificate(append(append([]byte{}, ca1.Cert.Raw...), ca2.Cert.Raw...))
	if out := adminOK(t, dir, "bundle", "refresh", "a.example", "1"); !strings.Contains(out, "2 anchors") {
		t.Fatalf("bundle refresh: %s", out)
	}
	body = nil
	adminFails(t, dir, 1, "last good anchors stay", "bundle", "refresh", "a.example", "1")
	if out := adminOK(t, dir, "anchor", "list", "a.example"); !strings.Contains(out, "Show CA 2") {
		t.Fatalf("anchors after a failed refresh:\n%s", out)
	}
	adminFails(t, dir, 1, "no bundle 7", "bundle", "show", "a.example", "7")
	adminFails(t, dir, 2, "refresh interval", "bundle", "add", "a.example", srv.URL+"/c.p7b", "--refresh", "400d")
}
