package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/store"
)

// TestAdminPage: the admin web page wants an admin login (not a mail
// login), shows the gateway without key material, and retries and drops
// queue entries for same-origin requests only; refused logins and actions
// are audited.
func TestAdminPage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	const adminPassword = "admin password 1"
	must(t, func() error { _, err := a.st.AddAdmin(ctx, "ops", adminPassword); return err })
	dns := publishBoth(t, a, b)
	// The clinic's route answers 421: the message stays queued.
	a.start(t, dns, map[string]string{"clinic.example": unavailableSMTP(t)}, nil)
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
		requestMessage(a.user, b.user, "queued-1@hospital.example", "")); r != "" {
		t.Fatalf("submission refused: %s", r)
	}
	base := "http://" + a.addrs["admin"]

	get := func(user, password string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/", nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, bad := range [][2]string{{"", ""}, {"ops", "wrong password"}, {a.user, a.password}} {
		if code, _ := get(bad[0], bad[1]); code != http.StatusUnauthorized {
			t.Errorf("login %q: %d, want 401", bad[0], code)
		}
	}
	code, page := get("ops", adminPassword)
	if code != http.StatusOK {
		t.Fatalf("admin page: %d\n%s", code, page)
	}
	for _, want := range []string{"hospital.example", "alice@hospital.example", "CA of clinic.example", "&lt;queued-1@hospital.example&gt;", "bob@clinic.example"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(page, "PRIVATE KEY") {
		t.Fatal("the page shows key material")
	}

	q := a.queued(t)
	if len(q) != 1 {
		t.Fatalf("queue %+v", q)
	}
	action := func(what string, header map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/admin/queue/%d/%s", base, q[0].ID, what), nil)
		req.SetBasicAuth("ops", adminPassword)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := action("drop", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Fatalf("cross-site drop: %d, want 403", code)
	}
	if code := action("retry", nil); code != http.StatusSeeOther {
		t.Fatalf("retry: %d, want 303", code)
	}
	// curl, an independent client, drops it as a form would.
	out, err := exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u", "ops:"+adminPassword,
		"-X", "POST", fmt.Sprintf("%s/admin/queue/%d/drop", base, q[0].ID)).CombinedOutput()
	if err != nil || string(out) != "303" {
		t.Fatalf("curl drop: %s %v", out, err)
	}
	if q := a.queued(t); len(q) != 0 {
		t.Fatalf("queue after drop %+v", q)
	}
	a.audited(t, "refused admin login", func(e store.Event) bool { return e.Action == "admin.login" && e.Verdict == "refused" })
	a.audited(t, "queue drop by the admin", func(e store.Event) bool { return e.Action == "queue.drop" && strings.HasPrefix(e.Actor, "ops ") })
}

// TestAdminHTTPS: [listen] admin_https serves the admin listener's pages
// over TLS, for API clients and admins across a network.
func TestAdminHTTPS(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	a.start(t, "", nil, func(c *config.Config) { c.Listen.AdminHTTPS = "127.0.0.1:0" })
	addr := a.addrs["admin_https"]
	if addr == "" {
		t.Fatalf("no admin_https listener in %v", a.addrs)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" || resp.TLS == nil {
		t.Fatalf("GET /healthz over TLS: %d %q", resp.StatusCode, body)
	}
	// Plain HTTP on the TLS port gets nowhere.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		t.Fatal("plain HTTP answered on the TLS listener")
	}
}
