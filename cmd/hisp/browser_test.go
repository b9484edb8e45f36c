package main

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/smallstep/pkcs7"

	"github.com/hisp-project/hisp/internal/testpki"
)

// browser starts headless Chromium (Debian's chromium, scripts/test-deps.sh)
// and returns a chromedp context. Where it cannot start, the test skips
// with the reason; in CI (CI=true) that is a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
	unavailable := func(format string, a ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format, a...)
		}
		t.Skipf(format+" (make test-deps installs chromium)", a...)
	}
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		unavailable("no Chromium found on PATH")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// The first call starts the browser, which lives as long as ctx: no
	// timeout on this one.
	if err := chromedp.Do(ctx); err != nil {
		unavailable("headless Chromium (%s) does not start: %v", path, err)
	}
	// A bound on the session, so a hung browser fails the test instead of
	// reaching the suite's deadline.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestBrowserManagesTrust: in a real browser, an admin signs in to the
// admin page of a running hisp, uploads a PEM file as an inbound anchor
// and adds a trust bundle URL with a refresh interval through the forms;
// hisp anchor list then shows the anchor and the bundle's anchors, and
// the page shows them with subject, fingerprint, expiry and source.
func TestBrowserManagesTrust(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	pw := adminWriteFile(t, dir, "admin.pw", []byte("admin password 1\n"))
	for _, args := range [][]string{{"domain", "add", "clinic.example"}, {"admin", "add", "ops", "--password-file", pw}} {
		if code, _, stderr := runCLI(t, nil, append(args, data)...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	partner := testpki.NewCA(t, "Browser Partner CA")
	anchorFile := adminWriteFile(t, dir, "partner.pem", partner.CertPEM())
	b1, b2 := testpki.NewCA(t, "Browser Bundle CA 1"), testpki.NewCA(t, "Browser Bundle CA 2")
	p7, err := pkcs7.DegenerateCertificate(append(append([]byte{}, b1.Cert.Raw...), b2.Cert.Raw...))
	if err != nil {
		t.Fatal(err)
	}
	// Plain http on loopback: nobody else is on the path (DT-01).
	bundles := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(p7) }))
	defer bundles.Close()
	bundleURL := bundles.URL + "/directtrust.p7b"

	_, adminAddr := startServe(t, dir)
	base := "http://" + adminAddr + "/"
	ctx := browser(t)

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:admin password 1"))
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("browser: text of %s: %v", sel, err)
		}
		return s
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
	step("sign in", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS(`#add-anchor`)))
	step("add an anchor",
		chromedp.SetValue(chromedp.CSS(`#add-anchor select[name=direction]`), "in"),
		chromedp.SetUploadFiles(chromedp.CSS(`#add-anchor input[name=file]`), []string{anchorFile}),
		chromedp.Click(chromedp.CSS(`#add-anchor button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.notice`)))
	notice1 := text(`p.notice`)
	step("add a bundle",
		chromedp.SendKeys(chromedp.CSS(`#add-bundle input[name=url]`), bundleURL),
		chromedp.SetValue(chromedp.CSS(`#add-bundle input[name=refresh]`), "6h"),
		chromedp.Click(chromedp.CSS(`#add-bundle button[type=submit]`)),
		chromedp.WaitVisible(chromedp.Search(`//p[@class="notice" and contains(., "bundle")]`)))
	notice2, anchors, bundlesTable := text(`p.notice`), text(`#anchors`), text(`#bundles`)
	page, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS(`html`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notice1, "added 1 anchor") || !strings.Contains(notice2, "added bundle 1 with 2 anchor") {
		t.Fatalf("notices %q, %q", notice1, notice2)
	}
	for _, want := range []string{"Browser Partner CA", "added by hand", "Browser Bundle CA 1", "Browser Bundle CA 2", bundleURL,
		"\tin\t", partner.Cert.NotAfter.UTC().Format("2006-01-02")} {
		if !strings.Contains(anchors, want) {
			t.Errorf("the anchors table lacks %q:\n%s", want, anchors)
		}
	}
	if !strings.Contains(bundlesTable, "6h0m0s") || !strings.Contains(bundlesTable, bundleURL) {
		t.Errorf("the bundles table:\n%s", bundlesTable)
	}
	if strings.Contains(page, "PRIVATE KEY") {
		t.Fatal("the page shows key material")
	}

	// The CLI sees what the browser did.
	code, out, stderr := runCLI(t, nil, "anchor", "list", "clinic.example", data)
	if code != 0 {
		t.Fatal(stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("anchor list:\n%s", out)
	}
	for _, want := range []string{"in  +manual .*Browser Partner CA", "both +bundle 1 .*Browser Bundle CA 1", "both +bundle 1 .*Browser Bundle CA 2"} {
		if !matchLine(lines, want) {
			t.Errorf("anchor list has no line like %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, nil, "bundle", "list", "clinic.example", data)
	if code != 0 || !strings.Contains(out, "6h0m0s") || !strings.Contains(out, bundleURL) {
		t.Fatalf("bundle list:\n%s", out)
	}
	code, out, _ = runCLI(t, nil, "bundle", "show", "clinic.example", "1", data)
	if code != 0 || !strings.Contains(out, "Browser Bundle CA 2") {
		t.Fatalf("bundle show:\n%s", out)
	}
	// The audit log names the admin who used the page.
	st := openTestStore(t, dir)
	evs, err := st.AuditEvents(context.Background(), 2)
	if err != nil || len(evs) != 2 || evs[0].Action != "bundle.add" || evs[1].Action != "anchor.add" || !strings.HasPrefix(evs[0].Actor, "ops (") {
		t.Fatalf("audit %+v %v", evs, err)
	}
}

// matchLine reports whether a line matches the regular expression re.
func matchLine(lines []string, re string) bool {
	r := regexp.MustCompile(re)
	for _, l := range lines {
		if r.MatchString(l) {
			return true
		}
	}
	return false
}
