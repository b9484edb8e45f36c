package gateway

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/store"
)

// sampleLine is a sample of the text format: name, optional labels, value.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? ` +
	`(NaN|[+-]Inf|[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$`)

// scrape is a parsed /metrics page: sample values by "name{labels}".
type scrape map[string]float64

// parseMetrics checks that every line of a page is a HELP or TYPE comment
// or a sample, that each family's HELP and TYPE come before its samples,
// once, and that no series appears twice.
func parseMetrics(t *testing.T, page string) scrape {
	t.Helper()
	out := scrape{}
	typed := map[string]bool{}
	helped := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ := strings.Cut(rest, " ")
			if helped[name] {
				t.Errorf("HELP of %s twice", name)
			}
			helped[name] = true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			if typed[name] || !helped[name] {
				t.Errorf("TYPE of %s twice or before its HELP", name)
			}
			if typ != "counter" && typ != "gauge" && typ != "untyped" {
				t.Errorf("TYPE of %s: %q", name, typ)
			}
			typed[name] = true
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line does not parse: %q", line)
			continue
		}
		if !typed[m[1]] {
			t.Errorf("sample of %s before its TYPE", m[1])
		}
		key := m[1] + m[2]
		if _, dup := out[key]; dup {
			t.Errorf("series %s twice", key)
		}
		v, err := strconv.ParseFloat(strings.TrimPrefix(m[3], "+"), 64)
		if err != nil {
			t.Errorf("value of %q: %v", line, err)
		}
		out[key] = v
	}
	return out
}

// want checks a series' value.
func (s scrape) want(t *testing.T, series string, want float64) {
	t.Helper()
	got, ok := s[series]
	if !ok {
		t.Errorf("no series %s", series)
	} else if got != want {
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}

// TestMetrics: one message through submission to a partner that cannot be
// reached; /metrics, fetched by Go's HTTP client and by curl, counts the
// accepted submission and the deferred attempt, shows the recipient queued
// and tracked, the certificate expiry and the failing bundles, and nothing
// of addresses, messages or the bundle URL's password.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	must(t, func() error {
		_, err := a.st.AddBundle(ctx, store.Bundle{Domain: a.domain, Location: "/nonexistent/hisp-test/bundle.p7b",
			Direction: store.DirectionBoth, Refresh: time.Hour})
		return err
	})
	// A URL with a password and a token: neither may show.
	must(t, func() error {
		_, err := a.st.AddBundle(ctx, store.Bundle{Domain: a.domain, Location: "https://fetcher:s3cret@127.0.0.1:1/b.p7b?token=t0ken",
			Direction: store.DirectionIn, Refresh: time.Hour})
		return err
	})
	dns := publishBoth(t, a, b)
	// A node name of its own ([store] node) names the holder of its jobs.
	a.start(t, dns, map[string]string{"clinic.example": unavailableSMTP(t)}, // the recipient stays queued
		func(c *config.Config) { c.Store.Node = "hisp-metrics-node" })
	url := "http://" + a.addrs["admin"] + "/metrics"

	get := func() (string, string) {
		t.Helper()
		resp, err := http.Get(url) // no credentials: none needed
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
		}
		return string(body), resp.Header.Get("Content-Type")
	}
	page, ctype := get()
	if ctype != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ctype)
	}
	before := parseMetrics(t, page)
	before.want(t, `hisp_smtp_transactions_total{listener="submission",outcome="accepted"}`, 0)
	before.want(t, `hisp_queue_recipients{state="queued"}`, 0)

	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
		plainMessage(a.user, b.user, "metrics-1@hospital.example", "Patient summary, confidential")); r != "" {
		t.Fatalf("submission refused: %s", r)
	}
	var s scrape
	waitFor(t, "the deferred attempt and both bundle failures in /metrics", func() bool {
		page, _ = get()
		s = parseMetrics(t, page)
		// The attempt is counted before its outcome is written to the
		// queue: wait for both.
		return s[`hisp_queue_delivery_attempts_total{outcome="deferred"}`] == 1 && s[`hisp_queue_recipients{state="queued"}`] == 1 &&
			s[`hisp_trust_bundle_refresh_failed{bundle="1",domain="hospital.example",location="/nonexistent/hisp-test/bundle.p7b"}`] == 1 &&
			s[`hisp_trust_bundle_refresh_failed{bundle="2",domain="hospital.example",location="https://127.0.0.1:1/b.p7b"}`] == 1
	})
	s.want(t, `hisp_smtp_transactions_total{listener="submission",outcome="accepted"}`, 1)
	s.want(t, `hisp_smtp_transactions_total{listener="submission",outcome="refused"}`, 0)
	s.want(t, `hisp_smtp_transactions_total{listener="backbone",outcome="accepted"}`, 0)
	s.want(t, `hisp_smtp_refusals_total{listener="submission",command="auth"}`, 0)
	s.want(t, `hisp_queue_delivery_attempts_total{outcome="delivered"}`, 0)
	s.want(t, `hisp_queue_delivery_attempts_total{outcome="bounced"}`, 0)
	// The attempt is over: the recipient waits for its retry.
	s.want(t, `hisp_queue_recipients{state="queued"}`, 1)
	s.want(t, `hisp_queue_recipients{state="delivering"}`, 0)
	s.want(t, `hisp_queue_recipients{state="delivered"}`, 0)
	if age := s["hisp_queue_oldest_age_seconds"]; age <= 0 || age > 120 {
		t.Errorf("oldest queued age %v", age)
	}
	s.want(t, `hisp_tracked_recipients_24h{state="queued"}`, 1)
	s.want(t, `hisp_tracked_recipients_24h{state="failed"}`, 0)
	s.want(t, "hisp_deferred_submissions", 0)
	s.want(t, "hisp_store_up", 1)
	s.want(t, "hisp_store_postgres", 0)
	// The one node runs every job that one node at a time runs.
	for _, job := range []string{"tracking", "bundles", "queue-notices"} {
		s.want(t, `hisp_job_lease_held{job="`+job+`",holder="hisp-metrics-node"}`, 1)
	}
	// The test certificates are valid for a year or more.
	s.want(t, "hisp_certificates_expiring_30d", 0)
	certs, err := a.st.Certificates(ctx, store.CertFilter{})
	if err != nil || len(certs) == 0 {
		t.Fatalf("certificates: %v", err)
	}
	earliest := certs[0].NotAfter
	for _, c := range certs {
		if c.NotAfter.Before(earliest) {
			earliest = c.NotAfter
		}
	}
	s.want(t, "hisp_certificates_earliest_expiry_timestamp_seconds", float64(earliest.Unix()))
	if age := s[`hisp_trust_bundle_success_age_seconds{bundle="1",domain="hospital.example",location="/nonexistent/hisp-test/bundle.p7b"}`]; age < 0 || age > 120 {
		t.Errorf("bundle without success: age %v", age)
	}
	if s["go_goroutines"] < 10 || s["go_memstats_heap_inuse_bytes"] < 1<<20 {
		t.Errorf("process gauges: %v goroutines, %v heap bytes", s["go_goroutines"], s["go_memstats_heap_inuse_bytes"])
	}
	if st := s["process_start_time_seconds"]; st < float64(time.Now().Add(-5*time.Minute).Unix()) || st > float64(time.Now().Unix()+1) {
		t.Errorf("process start %v", st)
	}
	for _, secret := range []string{"@", "alice", "bob", "metrics-1", "Patient", "s3cret", "fetcher", "t0ken", "PRIVATE"} {
		if strings.Contains(page, secret) {
			t.Errorf("/metrics shows %q:\n%s", secret, page)
		}
	}

	// curl, an independent client, gets the same page.
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not installed")
	}
	out, err := exec.Command("curl", "-sS", "--fail", "--max-time", "30", "-w", `\n%{content_type}`, url).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	body, ct, _ := strings.Cut(string(out), "\n"+"text/plain")
	if ct != "; version=0.0.4; charset=utf-8" {
		t.Errorf("curl: Content-Type text/plain%s", ct)
	}
	c := parseMetrics(t, body)
	c.want(t, `hisp_smtp_transactions_total{listener="submission",outcome="accepted"}`, 1)
	c.want(t, `hisp_queue_recipients{state="queued"}`, 1)
	c.want(t, `hisp_queue_delivery_attempts_total{outcome="deferred"}`, 1)
}

// TestMetricsAuth: /metrics answers loopback clients, and others only with
// an API token not limited to some domains (an EHR's scoped token is not
// enough).
func TestMetricsAuth(t *testing.T) {
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	_, full, err := a.st.CreateAPIToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	_, scoped, err := a.st.CreateAPIToken(ctx, "ehr", "hospital.example")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{st: a.st, log: slog.New(slog.DiscardHandler)}
	h := s.metricsAuth(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	for _, tc := range []struct {
		remote, token string
		want          int
	}{
		{"127.0.0.1:5000", "", http.StatusOK},
		{"[::1]:5000", "", http.StatusOK},
		{"192.0.2.7:5000", "", http.StatusUnauthorized},
		{"192.0.2.7:5000", scoped, http.StatusUnauthorized},
		{"192.0.2.7:5000", full + "x", http.StatusUnauthorized},
		{"192.0.2.7:5000", full, http.StatusOK},
	} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = tc.remote
		if tc.token != "" {
			r.Header.Set("Authorization", "Bearer "+tc.token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s with token %.12q: %d, want %d", tc.remote, tc.token, w.Code, tc.want)
		}
	}
}
