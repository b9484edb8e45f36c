package main

// Tests of the traps issue 12 found for a newcomer: a mistyped data
// directory, help that differs by how it is asked for, exit codes.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/store"
)

// TestNoStoreRefused: every command but those that make a store refuses a
// data directory that holds none, missing or empty, with exit 2 and "no
// hisp data in DIR", and creates nothing there (no directory, no
// master.key). domain add makes the store, after which they work.
func TestNoStoreRefused(t *testing.T) {
	tmp := t.TempDir()
	pw := filepath.Join(tmp, "pw")
	if err := os.WriteFile(pw, []byte("a long password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	cmds := [][]string{
		{"domain", "list"}, {"domain", "remove", "a.example"},
		{"address", "list"}, {"address", "add", "a@a.example", "--password-file", pw}, {"address", "quota", "a@a.example"},
		{"cert", "list"}, {"cert", "issue", "a.example"}, {"cert", "ca", "a.example"}, {"cert", "remove", "1"},
		{"anchor", "list"}, {"anchor", "remove", "a.example", "1"}, {"bundle", "list"},
		{"queue", "list"}, {"queue", "retry", "1"}, {"queue", "drop", "1"},
		{"relay", "list"}, {"admin", "list"}, {"admin", "add", "ops", "--password-file", pw},
		{"token", "list"}, {"token", "add", "ehr"}, {"webhook", "list"},
		{"track"}, {"track", "x@y"}, {"discover", "bob@clinic.example"}, {"backup", filepath.Join(tmp, "backup")},
	}
	for _, dir := range []string{filepath.Join(tmp, "typo"), empty} {
		for _, args := range cmds {
			code, _, stderr := runCLI(t, nil, append(args, "--data", dir)...)
			if code != 2 || !strings.Contains(stderr, "no hisp data in "+dir) {
				t.Errorf("hisp %s on %s: exit %d, want 2 and \"no hisp data in %s\"\n%s", strings.Join(args, " "), dir, code, dir, stderr)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "typo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command made the data directory: %v", err)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("a refused command wrote into the empty directory: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(tmp, "backup")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused backup left its directory: %v", err)
	}

	// HISP_DATA and the default ./hisp-data are refused the same way.
	var out, errb bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(k string) string {
		if k == "HISP_DATA" {
			return filepath.Join(tmp, "env-typo")
		}
		return ""
	}, prog: "./hisp"}
	if code := run(env, []string{"queue", "list"}); code != 2 || !strings.Contains(errb.String(), "no hisp data in "+filepath.Join(tmp, "env-typo")) ||
		!strings.Contains(errb.String(), "./hisp domain add DOMAIN") {
		t.Errorf("HISP_DATA: exit %d %s", code, errb.String())
	}

	// domain add makes the store; then the others work on it.
	data := filepath.Join(tmp, "data")
	if code, _, stderr := runCLI(t, nil, "domain", "add", "a.example", "--data", data); code != 0 {
		t.Fatalf("domain add: %d %s", code, stderr)
	}
	for _, args := range [][]string{{"domain", "list"}, {"queue", "list"}, {"track"}, {"admin", "add", "ops", "--password-file", pw}} {
		if code, _, stderr := runCLI(t, nil, append(args, "--data", data)...); code != 0 {
			t.Errorf("hisp %s on a store: exit %d %s", strings.Join(args, " "), code, stderr)
		}
	}
}

// groups returns each command with subcommands and their names, as
// "hisp CMD --help" lists them.
func groupSubs(t *testing.T, name string) []string {
	t.Helper()
	code, out, _ := runCLI(t, nil, name, "--help")
	if code != 0 {
		return nil
	}
	if !strings.Contains(out, "subcommands:") {
		return nil
	}
	var subs []string
	re := regexp.MustCompile(`(?m)^  hisp ` + name + ` (\S+)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		subs = append(subs, m[1])
	}
	return subs
}

// TestHelp: for every command and subcommand, "hisp help CMD [SUB]" and
// "hisp CMD [SUB] --help" print the same usage on standard output with exit
// 0, with a description; a group's help lists every subcommand with one;
// a missing or unknown subcommand prints it on standard error with exit 2.
func TestHelp(t *testing.T) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	code, general, _ := runCLI(t, nil, "help")
	if code != 0 || !strings.Contains(general, "exit codes: 0 success, 1 the operation failed, 2 usage or setup error") {
		t.Fatalf("hisp help: %d\n%s", code, general)
	}
	if code, _, stderr := runCLI(t, nil); code != 2 || !strings.Contains(stderr, "usage: hisp COMMAND") {
		t.Errorf("hisp alone: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "help", "nosuch"); code != 2 || !strings.Contains(stderr, `unknown command "nosuch"`) {
		t.Errorf("hisp help nosuch: %d %s", code, stderr)
	}
	same := func(args ...string) string {
		t.Helper()
		c1, o1, e1 := runCLI(t, nil, append([]string{"help"}, args...)...)
		c2, o2, e2 := runCLI(t, nil, append(append([]string{}, args...), "--help")...)
		c3, o3, _ := runCLI(t, nil, append(append([]string{}, args...), "-h")...)
		if c1 != 0 || c2 != 0 || c3 != 0 || o1 != o2 || o1 != o3 || e1 != "" || e2 != "" {
			t.Errorf("help %s: exits %d %d %d, stdout equal %v %v, stderr %q %q\n--- help:\n%s--- --help:\n%s",
				strings.Join(args, " "), c1, c2, c3, o1 == o2, o1 == o3, e1, e2, o1, o2)
		}
		if !strings.HasPrefix(o1, "usage: hisp "+strings.Join(args, " ")) {
			t.Errorf("help %s does not start with its usage:\n%s", strings.Join(args, " "), o1)
		}
		return o1
	}
	for _, n := range names {
		if !strings.Contains(general, "\n  "+n+" ") {
			t.Errorf("hisp help lacks %s", n)
		}
		out := same(n)
		subs := groupSubs(t, n)
		if subs == nil {
			// A command of its own: a description and its flags.
			if docs[n].text == "" || !strings.Contains(out, strings.Fields(docs[n].text)[0]) || !strings.Contains(out, "flags:") {
				t.Errorf("hisp help %s has no description or flags:\n%s", n, out)
			}
			continue
		}
		if strings.Contains(out, "(no description)") {
			t.Errorf("hisp help %s: a subcommand has no description:\n%s", n, out)
		}
		code, _, stderr := runCLI(t, nil, n)
		if code != 2 || stderr != strings.Replace(out, "", "", 1) {
			t.Errorf("hisp %s alone: exit %d, want 2 and the same usage on stderr:\n%s", n, code, stderr)
		}
		if code, _, stderr := runCLI(t, nil, n, "nosuch"); code != 2 || !strings.Contains(stderr, `unknown subcommand "nosuch"`) {
			t.Errorf("hisp %s nosuch: %d %s", n, code, stderr)
		}
		for _, s := range subs {
			sub := same(n, s)
			d := docs[n+" "+s].text
			if d == "" || !strings.Contains(sub, d[:min(len(d), 16)]) || !strings.Contains(sub, "flags:") {
				t.Errorf("hisp help %s %s lacks its description or flags:\n%s", n, s, sub)
			}
		}
	}
	// Malformed flags are usage errors with the usage on stderr, for
	// commands with and without subcommands.
	for _, args := range [][]string{{"serve", "--nosuch"}, {"sandbox", "--port-base", "x"}, {"cert", "issue", "--nosuch"},
		{"queue", "list", "extra"}, {"message", "seal", "--nosuch"}} {
		code, _, stderr := runCLI(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "usage: hisp "+args[0]) {
			t.Errorf("hisp %s: exit %d, want 2 with the usage\n%s", strings.Join(args, " "), code, stderr)
		}
	}
}

// freePort returns a loopback TCP port free at the time of asking.
func freePort(t *testing.T) int {
	t.Helper()
	handedPorts.Lock()
	defer handedPorts.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may give a port just closed again: one config's
		// listeners once got the same port twice.
		if !handedPorts.m[port] {
			handedPorts.m[port] = true
			return port
		}
	}
	t.Fatal("no free loopback port not handed out already")
	return 0
}

// handedPorts are the ports freePort has handed out in this test binary.
var handedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// TestCertIssueCRLFromConfig: hisp cert issue takes the CRL distribution
// point from the config hisp serve runs with (HISP_CONFIG, or --config):
// the admin listener's address, or public_url. The CRL of a certificate so
// issued is served by that server; without a config the default admin
// listener is named; --crl-url still overrides; a bad config is exit 2.
func TestCertIssueCRLFromConfig(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	port := freePort(t)
	cfgFile := filepath.Join(tmp, "hisp.toml")
	cfgText := fmt.Sprintf("data = %q\n[listen]\nsmtp = \"\"\nsubmission = \"\"\nimap = \"\"\ndns = \"\"\nadmin = \"127.0.0.1:%d\"\n", data, port)
	if err := os.WriteFile(cfgFile, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	envWith := func(vars map[string]string) (*cliEnv, *testbuf.Buffer, *testbuf.Buffer) {
		var out, errb testbuf.Buffer
		return &cliEnv{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}, &out, &errb
	}
	cfgEnv := map[string]string{"HISP_CONFIG": cfgFile}
	if code, _, stderr := runCLI(t, nil, "domain", "add", "clinic.example", "--data", data); code != 0 {
		t.Fatal(stderr)
	}
	// HISP_CONFIG: the data directory and the admin listener of the config.
	env, out, errb := envWith(cfgEnv)
	if code := run(env, []string{"cert", "issue", "bob@clinic.example"}); code != 0 {
		t.Fatalf("cert issue: %d %s", code, errb.String())
	}
	crlURL := fmt.Sprintf("http://127.0.0.1:%d/crl/clinic.example.crl", port)
	if !strings.Contains(out.String(), "CRL "+crlURL) {
		t.Fatalf("cert issue with HISP_CONFIG names another CRL:\n%s", out.String())
	}

	// One issued for another server: serve warns about it at start.
	if code, _, stderr := runCLI(t, nil, "cert", "issue", "clinic.example", "--data", data, "--crl-url", "http://stale.example:8080"); code != 0 {
		t.Fatal(stderr)
	}

	// The server of that config serves the CRL at the certificate's URL.
	ctx, cancel := context.WithCancel(context.Background())
	senv, sout, serr := envWith(cfgEnv)
	senv.ctx = ctx
	done := make(chan int, 1)
	go func() { done <- run(senv, []string{"serve"}) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve: exit %d %s", code, serr.String())
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(sout.String(), "hisp ready"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s\n%s", sout.String(), serr.String())
		}
	}
	if warn := serr.String(); !strings.Contains(warn, "certificate names a CRL this server does not serve") ||
		!strings.Contains(warn, "http://stale.example:8080/crl/clinic.example.crl") || strings.Contains(warn, "owner=bob@clinic.example") {
		t.Errorf("serve's warning about the stale CRL URL:\n%s", warn)
	}
	st := openTestStore(t, data)
	list, err := st.Certificates(context.Background(), store.CertFilter{Owner: "bob@clinic.example"})
	if err != nil || len(list) != 1 {
		t.Fatalf("certificates: %v %v", list, err)
	}
	cert, err := list[0].Parse()
	if err != nil || len(cert.CRLDistributionPoints) != 1 || cert.CRLDistributionPoints[0] != crlURL {
		t.Fatalf("CRL distribution points %v (%v), want %s", cert.CRLDistributionPoints, err, crlURL)
	}
	resp, err := http.Get(crlURL)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", crlURL, resp.Status)
	}
	if _, err := x509.ParseRevocationList(der); err != nil {
		t.Fatalf("the served CRL: %v", err)
	}

	// --config with public_url; no config at all; --crl-url.
	pub := filepath.Join(tmp, "public.toml")
	if err := os.WriteFile(pub, []byte("public_url = \"http://hisp.clinic.example:8080/\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", pub}, "CRL http://hisp.clinic.example:8080/crl/clinic.example.crl"},
		{nil, "CRL http://127.0.0.1:8080/crl/clinic.example.crl"},
		{[]string{"--config", pub, "--crl-url", "http://other.example"}, "CRL http://other.example/crl/clinic.example.crl"},
	} {
		args := append([]string{"cert", "issue", "clinic.example", "--data", data}, c.args...)
		if code, out, stderr := runCLI(t, nil, args...); code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("hisp %s: exit %d, want %q\n%s%s", strings.Join(args, " "), code, c.want, out, stderr)
		}
	}
	bad := filepath.Join(tmp, "bad.toml")
	if err := os.WriteFile(bad, []byte("public_url = \"hisp.example\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, nil, "cert", "issue", "clinic.example", "--data", data, "--config", bad); code != 2 || !strings.Contains(stderr, "public_url") {
		t.Errorf("bad config: exit %d %s", code, stderr)
	}
}

// TestServeSecondInstance: a second hisp serve on a data directory in use
// stops at once with exit 2, before it prints or opens anything; one on
// ports in use stops with exit 2 naming the address, not a canceled
// context.
func TestServeSecondInstance(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	cfgFile := filepath.Join(tmp, "hisp.toml")
	cfg := fmt.Sprintf("[listen]\nsmtp = \"127.0.0.1:%d\"\nsubmission = \"\"\nimap = \"\"\ndns = \"\"\nadmin = \"127.0.0.1:%d\"\n", freePort(t), freePort(t))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb testbuf.Buffer
	env := &cliEnv{ctx: ctx, stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() { done <- run(env, []string{"serve", "--config", cfgFile, "--data", data}) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve: exit %d %s", code, errb.String())
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "hisp ready"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s\n%s", out.String(), errb.String())
		}
	}
	code, stdout, stderr := runCLI(t, nil, "serve", "--config", cfgFile, "--data", data)
	if code != 2 || stdout != "" || !strings.Contains(stderr, data+" is in use by another hisp (process ") {
		t.Errorf("second serve on the data directory: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, nil, "serve", "--config", cfgFile, "--data", filepath.Join(tmp, "other"))
	if code != 2 || !strings.Contains(stderr, "address already in use") || strings.Contains(stderr, "context canceled") {
		t.Errorf("second serve on the ports: exit %d\n%s", code, stderr)
	}
}

// TestReadmeCommands: the README states the prerequisites, and every
// command of its examples is written ./hisp (it works after make run) and
// names a command and subcommand that exist.
func TestReadmeCommands(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod names no Go version")
	}
	for _, want := range []string{"Go " + string(goVersion[1]), "C compiler", "cgo", "make install", "exit codes", "no hisp data in DIR"} {
		if !bytes.Contains(bytes.ToLower(readme), bytes.ToLower([]byte(want))) {
			t.Errorf("README lacks %q", want)
		}
	}
	inBlock, prod := false, false
	checked := 0
	for i, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "### ") {
			prod = strings.HasPrefix(line, "### Going to production") // hisp on PATH there
		}
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock || prod {
			continue
		}
		code, _, _ := strings.Cut(line, "#")
		for _, part := range regexp.MustCompile(`\||;|&&`).Split(code, -1) {
			words := strings.Fields(part)
			if len(words) == 0 {
				continue
			}
			if words[0] == "hisp" {
				t.Errorf("README line %d: %q: write ./hisp, which works after make run", i+1, line)
				continue
			}
			if words[0] != "./hisp" || len(words) < 2 {
				continue
			}
			args := []string{"help", words[1]}
			if len(words) > 2 && groupHas(t, words[1], words[2]) {
				args = append(args, words[2])
			}
			if code, _, stderr := runCLI(t, nil, args...); code != 0 {
				t.Errorf("README line %d: %q: no such command (%s)", i+1, line, stderr)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Errorf("only %d README commands checked", checked)
	}
	// The name printed in commands to copy.
	for arg0, want := range map[string]string{"hisp": "hisp", "./hisp": "./hisp", "/usr/local/bin/hisp": "/usr/local/bin/hisp",
		"/tmp/go-build123/b001/exe/hisp": "hisp", "": "hisp"} {
		if got := progNameOf(arg0); got != want {
			t.Errorf("progNameOf(%q) = %q, want %q", arg0, got, want)
		}
	}
}

// groupHas reports whether command group has subcommand sub.
func groupHas(t *testing.T, group, sub string) bool {
	for _, s := range groupSubs(t, group) {
		if s == sub {
			return true
		}
	}
	return false
}
