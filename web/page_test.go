package web

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
)

// post sends a form as the admin ops; header adds request headers.
func (s *site) post(path, contentType string, body []byte, header map[string]string) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.SetBasicAuth("ops", "admin password 1")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location") + string(b)
}

// TestPageForms: the trust forms need an admin login, refuse cross-site
// requests, answer a refused operation with its reason and status, and
// redirect to the page with a notice the page words itself.
func TestPageForms(t *testing.T) {
	s := newSite(t)
	if _, err := s.st.AddAdmin(context.Background(), "ops", "admin password 1"); err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "Form CA")
	form := func(v url.Values) []byte { return []byte(v.Encode()) }
	const urlenc = "application/x-www-form-urlencoded"

	// No login: 401.
	req, _ := http.NewRequest("POST", s.url+"/admin/anchors", strings.NewReader("domain=a.example"))
	req.Header.Set("Content-Type", urlenc)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no login: %v %v", resp.Status, err)
	}
	// Cross-site: 403, nothing added.
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}} {
		code, _ := s.post("/admin/anchors", urlenc, form(url.Values{"domain": {"a.example"}, "pem": {string(ca.CertPEM())}}), h)
		if code != http.StatusForbidden {
			t.Fatalf("cross-site %v: %d", h, code)
		}
	}
	if as, _ := s.st.Anchors(context.Background(), ""); len(as) != 0 {
		t.Fatal("a cross-site form added an anchor")
	}
	// Refused: the reason, with the status of the error.
	code, body := s.post("/admin/anchors", urlenc, form(url.Values{"domain": {"a.example"}, "pem": {"junk"}}), nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "not a certificate") {
		t.Fatalf("junk anchor: %d %s", code, body)
	}
	code, body = s.post("/admin/bundles", urlenc, form(url.Values{"domain": {"a.example"}, "url": {"http://bundles.example/x.p7b"}}), nil)
	if code != http.StatusBadRequest || !strings.Contains(body, "plain http") {
		t.Fatalf("http bundle: %d %s", code, body)
	}
	code, body = s.post("/admin/bundles", urlenc, form(url.Values{"domain": {"a.example"}, "url": {"file:///etc/passwd"}}), nil)
	if code != http.StatusBadRequest {
		t.Fatalf("file bundle: %d %s", code, body)
	}
	// Pasted PEM, same-origin: added, redirected with a notice.
	code, body = s.post("/admin/anchors", urlenc, form(url.Values{"domain": {"a.example"}, "pem": {string(ca.CertPEM())}, "direction": {"out"}}),
		map[string]string{"Sec-Fetch-Site": "same-origin"})
	if code != http.StatusSeeOther || !strings.Contains(body, "done=anchor") {
		t.Fatalf("add anchor: %d %s", code, body)
	}
	assertAudit(t, s.st, "ops (", "anchor.add", "a.example")
	// Uploaded: multipart, the same certificate is already an anchor.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	w.WriteField("domain", "a.example")
	fw, _ := w.CreateFormFile("file", "ca.pem")
	fw.Write(ca.CertPEM())
	w.Close()
	code, body = s.post("/admin/anchors", w.FormDataContentType(), mp.Bytes(), nil)
	if code != http.StatusSeeOther || !strings.Contains(body, "n=0") {
		t.Fatalf("upload: %d %s", code, body)
	}
	// Bundle, refresh now, remove.
	code, body = s.post("/admin/bundles", urlenc, form(url.Values{"domain": {"b.example"}, "url": {s.bundleURL}, "refresh": {"12h"}}), nil)
	if code != http.StatusSeeOther || !strings.Contains(body, "done=bundle") {
		t.Fatalf("add bundle: %d %s", code, body)
	}
	code, body = s.post("/admin/bundles/b.example/1/refresh", urlenc, nil, nil)
	if code != http.StatusSeeOther || !strings.Contains(body, "done=bundle-refreshed") {
		t.Fatalf("refresh: %d %s", code, body)
	}
	code, body = s.post("/admin/bundles/a.example/1/remove", urlenc, nil, nil)
	if code != http.StatusNotFound {
		t.Fatalf("remove another domain's bundle: %d %s", code, body)
	}
	code, _ = s.post("/admin/bundles/b.example/1/remove", urlenc, nil, nil)
	if code != http.StatusSeeOther {
		t.Fatalf("remove bundle: %d", code)
	}
	assertAudit(t, s.st, "ops (", "bundle.remove", "b.example")

	// The page: anchors with subject, fingerprint, expiry and source; no keys.
	req, _ = http.NewRequest("GET", s.url+"/", nil)
	req.SetBasicAuth("ops", "admin password 1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"Form CA", "added by hand", ca.Cert.NotAfter.UTC().Format("2006-01-02"), "add-anchor", "add-bundle", "Audit log"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(string(page), "PRIVATE KEY") {
		t.Fatal("key material on the page")
	}
}

func TestNotice(t *testing.T) {
	for q, want := range map[string]string{
		"done=anchor&id=3&n=2":           "added 2 anchor(s), the first is 3",
		"done=bundle&id=1&n=5":           "added bundle 1 with 5 anchor(s)",
		"done=bundle-refreshed&id=1&n=x": "",
		"done=anything&id=1":             "",
		"done=drop&id=-1":                "",
	} {
		v, _ := url.ParseQuery(q)
		if got := notice(v); got != want {
			t.Errorf("%s: %q, want %q", q, got, want)
		}
	}
}
