package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/track"
)

// startSandbox runs hisp sandbox in-process until both sites are ready
// and returns its output and a function that stops it.
func startSandbox(t *testing.T, args ...string) (out *testbuf.Buffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &testbuf.Buffer{}
	var errb testbuf.Buffer
	env := &cliEnv{ctx: ctx, stdout: out, stderr: &errb, getenv: func(string) string { return "" }, prog: "./hisp"}
	done := make(chan int, 1)
	go func() { done <- run(env, append([]string{"sandbox"}, args...)) }()
	for deadline := time.Now().Add(90 * time.Second); strings.Count(out.String(), "hisp ready") < 2; time.Sleep(20 * time.Millisecond) {
		select {
		case code := <-done:
			cancel()
			t.Fatalf("sandbox exited %d:\n%s\n%s", code, out.String(), errb.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("sandbox did not start:\n%s\n%s", out.String(), errb.String())
		}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("sandbox exit %d: %s", code, errb.String())
			}
		})
	}
	t.Cleanup(stop)
	return out, stop
}

// hookSink collects the webhook events of one endpoint.
type hookSink struct {
	mu     sync.Mutex
	events []track.Event
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var e track.Event
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &e); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *hookSink) kinds() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ks []string
	for _, e := range h.events {
		ks = append(ks, e.Kind)
	}
	return ks
}

// TestSandboxPorts is the newcomer's path of issue 12: a first run on a
// busy port stops before it makes or prints anything; a directory
// remembers its port base, reuses it without --port-base and refuses
// another one with how to start over (also a directory set up before the
// base was remembered); a second sandbox on the directory or on its ports
// stops before printing passwords. A message then takes the whole path,
// and its tracking shows relayed at the partner's 250, before processed,
// at the sender's webhook too.
func TestSandboxPorts(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "sandbox")
	base1 := freePortBase(t)
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base1+7)) // the clinic's IMAP
	if err != nil {
		t.Fatal(err)
	}
	base2 := freePortBase(t) // not base1: its port is taken
	code, out, stderr := runCLI(t, nil, "sandbox", "--data", dir, "--port-base", fmt.Sprint(base1))
	busy.Close()
	if code != 2 || out != "" || !strings.Contains(stderr, fmt.Sprintf("127.0.0.1:%d (clinic.localhost IMAP) is in use", base1+7)) ||
		!strings.Contains(stderr, "--port-base N") {
		t.Fatalf("busy port: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a run stopped by a busy port left %s: %v", dir, err)
	}

	// Set up on base2, then a different base is refused, saying how to
	// start over, before anything is printed.
	_, stop := startSandbox(t, "--data", dir, "--port-base", fmt.Sprint(base2))
	stop()
	refused := func(what string) {
		t.Helper()
		code, out, stderr := runCLI(t, nil, "sandbox", "--data", dir, "--port-base", fmt.Sprint(base1))
		if code != 2 || out != "" || !strings.Contains(stderr, fmt.Sprintf("%s was set up with --port-base %d", dir, base2)) ||
			!strings.Contains(stderr, "hisp sandbox --data "+dir+" to use them again") || !strings.Contains(stderr, "rm -rf "+dir) {
			t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, code, out, stderr)
		}
	}
	refused("another --port-base")
	if err := os.Remove(filepath.Join(dir, sandboxBaseFile)); err != nil {
		t.Fatal(err)
	}
	refused("another --port-base on a directory set up before the base was remembered")

	// The hospital's webhook, then a start without --port-base: base2.
	sink := &hookSink{}
	hook := httptest.NewServer(sink)
	defer hook.Close()
	secret := filepath.Join(tmp, "secret")
	if err := os.WriteFile(secret, []byte("a webhook secret of some length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hospital := filepath.Join(dir, "hospital")
	if code, _, stderr := runCLI(t, nil, "webhook", "add", "hospital.localhost", hook.URL, "--secret-file", secret, "--data", hospital); code != 0 {
		t.Fatal(stderr)
	}
	banner, _ := startSandbox(t, "--data", dir)
	for _, want := range []string{fmt.Sprintf("submission 127.0.0.1:%d", base2+1), "./hisp discover bob@clinic.localhost --data " + hospital,
		"./hisp queue list --data " + hospital} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner.String())
		}
	}
	// A second sandbox on the same directory, or on its ports, stops
	// before the banner with the passwords.
	code, out, stderr = runCLI(t, nil, "sandbox", "--data", dir)
	if code != 2 || out != "" || !strings.Contains(stderr, dir+" is in use by another hisp") {
		t.Errorf("second sandbox on the directory: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	other := filepath.Join(tmp, "other")
	code, out, stderr = runCLI(t, nil, "sandbox", "--data", other, "--port-base", fmt.Sprint(base2))
	if code != 2 || out != "" || !strings.Contains(stderr, "is in use") || strings.Contains(stderr, "context canceled") {
		t.Errorf("second sandbox on the ports: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused sandbox left %s: %v", other, err)
	}

	// A message from alice to bob; its tracking in order, at the webhook too.
	alicePW := readLine(t, filepath.Join(hospital, "password.txt"))
	script := fmt.Sprintf(`
import smtplib, ssl
c = ssl._create_unverified_context()
s = smtplib.SMTP("127.0.0.1", %d, timeout=60)
s.starttls(context=c)
s.login("alice@hospital.localhost", %q)
s.sendmail("alice@hospital.localhost", ["bob@clinic.localhost"], b"From: alice@hospital.localhost\r\nTo: bob@clinic.localhost\r\nSubject: ports\r\nMessage-ID: <ports-1@hospital.localhost>\r\n\r\nhello bob\r\n")
s.quit()
`, base2+1, alicePW)
	if b, err := exec.Command("python3", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("submit: %v\n%s", err, b)
	}
	var v track.MessageView
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, out, _ := runCLI(t, nil, "track", "ports-1@hospital.localhost", "--json", "--data", hospital)
		if code == 0 && json.Unmarshal([]byte(out), &v) == nil && len(v.Recipients) == 1 && v.Recipients[0].State == "processed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no processed MDN recorded:\n%s", out)
		}
	}
	var kinds []string
	for _, e := range v.Recipients[0].Events {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, " "); got != "queued relayed processed" {
		t.Errorf("tracking events %q, want \"queued relayed processed\"", got)
	}
	for deadline := time.Now().Add(30 * time.Second); len(sink.kinds()) < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	if got := strings.Join(sink.kinds(), " "); got != "queued relayed processed" {
		t.Errorf("webhook events %q, want \"queued relayed processed\"", got)
	}
}
