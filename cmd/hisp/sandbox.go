package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("sandbox", command{
		summary: "a complete two-domain Direct trial on loopback: CAs, users, DNS, trust; prints how to try it, then serves",
		run:     sandboxCmd,
	})
}

// sandboxSite is one of the sandbox's two HISPs.
type sandboxSite struct {
	domain, user string
	ports        [5]int // smtp, submission, imap, dns, admin
}

func (s sandboxSite) addr(i int) string { return fmt.Sprintf("127.0.0.1:%d", s.ports[i]) }

// sandboxSites returns the two sites; base 0 gives the default ports of
// design.md for the first and the next ones for the second.
func sandboxSites(base int) [2]sandboxSite {
	a := sandboxSite{domain: "hospital.localhost", user: "alice", ports: [5]int{2525, 5587, 1143, 8053, 8080}}
	b := sandboxSite{domain: "clinic.localhost", user: "bob", ports: [5]int{2526, 5588, 1144, 8054, 8081}}
	if base > 0 {
		for i := range a.ports {
			a.ports[i], b.ports[i] = base+i, base+5+i
		}
	}
	return [2]sandboxSite{a, b}
}

// sandboxCmd implements "hisp sandbox [--data DIR] [--port-base N]": two
// HISPs in one process, hospital.localhost and clinic.localhost, each with
// its own data directory (DIR/hospital, DIR/clinic), local CA, user and
// DNS server publishing its certificates; each trusts the other's CA and
// discovers the other's certificates through the other's DNS server. A
// message between the two users takes the whole Direct path: discovery,
// trust, seal, queue, SMTP, open, verify, mailbox.
func sandboxCmd(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("hisp sandbox", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	data := fs.String("data", "", "data `DIR` (default $HISP_DATA, else ./hisp-data); the two sites live in DIR/hospital and DIR/clinic")
	base := fs.Int("port-base", 0, "use ten consecutive ports from `N` instead of the defaults (2525, 5587, 1143, 8053, 8080 and the next ones)")
	if code, ok := parseFlags(env, "sandbox", fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "hisp sandbox: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "port-base" })
	if *base < 0 || *base > 65535-9 {
		return usageErr(env, "sandbox", fmt.Errorf("--port-base %d: want a port from 1 to %d (0: the default ports)", *base, 65535-9))
	}
	dir := dataDir(env, *data)
	p := env.progName()

	// Before anything is made or printed: one sandbox per directory, and
	// the ports its certificates name (CRL URLs) and its DNS publishes. A
	// run stopped here leaves no directory it made.
	_, statErr := os.Stat(dir)
	fresh := errors.Is(statErr, os.ErrNotExist)
	unlock, err := lockDataDir(dir)
	if err != nil {
		return usageErr(env, "sandbox", err)
	}
	defer unlock()
	saved, found, err := sandboxPortBase(dir)
	if err != nil {
		return fail(env, "sandbox", err)
	}
	if found && given && saved != *base {
		return usageErr(env, "sandbox", fmt.Errorf("%s was set up with %s: its certificates and DNS name those ports. "+
			"Run %s sandbox --data %s to use them again, or start over on other ports: rm -rf %s && %s sandbox --data %s --port-base %d",
			dir, portBaseText(saved), p, dir, dir, p, dir, *base))
	}
	if found {
		*base = saved
	}
	sites := sandboxSites(*base)
	if err := sandboxPortsFree(sites); err != nil {
		hint := fmt.Sprintf("stop it (another hisp sandbox or make run?), or start over on other ports: %s sandbox --data NEWDIR --port-base N", p)
		if !found {
			hint = fmt.Sprintf("stop it (another hisp sandbox or make run?), or use other ports: %s sandbox --data %s --port-base N", p, dir)
		}
		if fresh {
			os.RemoveAll(dir)
		}
		return usageErr(env, "sandbox", fmt.Errorf("%w: %s", err, hint))
	}
	if !found {
		if err := writeSandboxPortBase(dir, *base); err != nil {
			return fail(env, "sandbox", err)
		}
	}

	var cfgs [2]config.Config
	passwords, adminPasswords := [2]string{}, [2]string{}
	for i, s := range sites {
		siteDir := filepath.Join(dir, strings.TrimSuffix(s.domain, ".localhost"))
		pw, err := setupSandboxSite(env, siteDir, s, sites[1-i])
		if err != nil {
			return fail(env, "sandbox", err)
		}
		passwords[i] = pw
		if adminPasswords[i], err = sandboxAdmin(env, siteDir); err != nil {
			return fail(env, "sandbox", err)
		}
		cfg := config.Default()
		cfg.Data = siteDir
		cfg.Hostname = "hisp." + s.domain
		cfg.Listen = config.Listen{SMTP: s.addr(0), Submission: s.addr(1), IMAP: s.addr(2), DNS: s.addr(3), Admin: s.addr(4)}
		other := sites[1-i]
		cfg.DNS.Resolver = other.addr(3) // discover the other site's certificates in its DNS
		cfg.Outbound.Routes = config.Routes(map[string]string{other.domain: other.addr(0)})
		cfgs[i] = cfg
	}
	// The anchors of each site are in the other's data directory only
	// after both were set up: add them now.
	for i, s := range sites {
		siteDir := filepath.Join(dir, strings.TrimSuffix(s.domain, ".localhost"))
		otherDir := filepath.Join(dir, strings.TrimSuffix(sites[1-i].domain, ".localhost"))
		if err := sandboxTrust(env, siteDir, s.domain, otherDir, sites[1-i].domain); err != nil {
			return fail(env, "sandbox", err)
		}
	}
	printSandboxHelp(env.stdout, p, dir, sites, passwords, adminPasswords)

	softMemoryLimit(env)
	ctx := env.ctx
	if ctx == nil {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error // the failure that stopped the sandbox, not the other site's stop
	for i := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &prefixWriter{w: env.stdout, prefix: sites[i].domain + ": "}
			err := gateway.Run(ctx, cfgs[i], logger.With("site", sites[i].domain), out)
			mu.Lock()
			if err != nil && first == nil && ctx.Err() == nil {
				first = fmt.Errorf("%s: %w", sites[i].domain, err)
			}
			mu.Unlock()
			cancel() // one site down stops the sandbox
		}()
	}
	wg.Wait()
	if first != nil {
		return serveFailed(env, "sandbox", first)
	}
	return 0
}

// sandboxBaseFile in the sandbox's data directory remembers its port base:
// the certificates name the CRL URLs of those ports.
const sandboxBaseFile = "port-base"

// portBaseText describes a port base for messages.
func portBaseText(base int) string {
	if base == 0 {
		return "the default ports (no --port-base)"
	}
	return fmt.Sprintf("--port-base %d", base)
}

// sandboxPortBase returns the port base a sandbox directory was set up
// with; found is false for a directory not set up yet. A directory set up
// before the base was remembered tells it by the hospital certificate's
// CRL URL (the hospital's admin port is base+4, or 8080 without a base).
func sandboxPortBase(dir string) (base int, found bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, sandboxBaseFile))
	if err == nil {
		base, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, false, fmt.Errorf("%s: %w", filepath.Join(dir, sandboxBaseFile), err)
		}
		return base, true, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, false, err
	}
	hospital := filepath.Join(dir, "hospital")
	if _, err := os.Stat(filepath.Join(hospital, "password.txt")); err != nil {
		return 0, false, nil // not set up
	}
	ctx := context.Background()
	st, err := store.OpenExisting(ctx, hospital)
	if err != nil {
		return 0, false, err
	}
	defer st.Close()
	list, err := st.Certificates(ctx, store.CertFilter{Owner: "alice@hospital.localhost"})
	if err != nil {
		return 0, false, err
	}
	for _, c := range list {
		cert, err := c.Parse()
		if err != nil || len(cert.CRLDistributionPoints) == 0 {
			continue
		}
		u, err := url.Parse(cert.CRLDistributionPoints[0])
		if err != nil {
			continue
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil {
			continue
		}
		if port == 8080 {
			port = 4 // the defaults
		}
		return port - 4, true, writeSandboxPortBase(dir, port-4)
	}
	return 0, false, nil
}

func writeSandboxPortBase(dir string, base int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, sandboxBaseFile), []byte(strconv.Itoa(base)+"\n"), 0o600)
}

// sandboxPortsFree checks that every port of both sites is free (TCP, and
// UDP for DNS), so that a busy port stops the sandbox before it sets up or
// prints anything.
func sandboxPortsFree(sites [2]sandboxSite) error {
	names := [5]string{"SMTP", "submission", "IMAP", "DNS", "admin"}
	for _, s := range sites {
		for i := range s.ports {
			l, err := net.Listen("tcp", s.addr(i))
			if err != nil {
				return fmt.Errorf("port %s (%s %s) is in use", s.addr(i), s.domain, names[i])
			}
			l.Close()
			if i == 3 {
				pc, err := net.ListenPacket("udp", s.addr(i))
				if err != nil {
					return fmt.Errorf("port %s/udp (%s DNS) is in use", s.addr(i), s.domain)
				}
				pc.Close()
			}
		}
	}
	return nil
}

// setupSandboxSite prepares a site's data directory on first use: domain,
// user with a generated password, local CA, certificate, own CA as anchor.
// It returns the user's password (kept in DIR/password.txt).
func setupSandboxSite(env *cliEnv, dir string, s, other sandboxSite) (pw string, err error) {
	pwFile := filepath.Join(dir, "password.txt")
	if b, err := os.ReadFile(pwFile); err == nil {
		return strings.TrimSpace(string(b)), nil // set up before
	}
	// A set-up that fails half-way leaves nothing behind: the next run
	// starts afresh instead of taking a broken site as set up.
	if _, statErr := os.Stat(dir); errors.Is(statErr, fs.ErrNotExist) {
		defer func() {
			if err != nil {
				os.RemoveAll(dir)
			}
		}()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	pw = randomPassword()
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		return "", err
	}
	user := s.user + "@" + s.domain
	data := "--data=" + dir
	caFile := filepath.Join(dir, s.domain+"-ca.pem")
	steps := [][]string{
		{"domain", "add", s.domain, data},
		{"address", "add", user, "--password-file", pwFile, data},
		{"cert", "issue", user, "--crl-url", "http://" + s.addr(4), data},
	}
	for _, args := range steps {
		if err := runQuiet(env, nil, args...); err != nil {
			return "", err
		}
	}
	var ca bytes.Buffer
	if err := runQuiet(env, &ca, "cert", "ca", s.domain, data); err != nil {
		return "", err
	}
	if err := os.WriteFile(caFile, ca.Bytes(), 0o644); err != nil {
		return "", err
	}
	// A domain sends to its own users through the same trust rules.
	if err := runQuiet(env, nil, "anchor", "add", s.domain, caFile, "--direction", "both", data); err != nil {
		return "", err
	}
	return pw, nil
}

// sandboxAdmin makes the site's admin page account "admin" with a generated
// password (kept in DIR/admin-password.txt), once, and returns the
// password.
func sandboxAdmin(env *cliEnv, dir string) (string, error) {
	pwFile := filepath.Join(dir, "admin-password.txt")
	if b, err := os.ReadFile(pwFile); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	pw := randomPassword()
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := runQuiet(env, nil, "admin", "add", "admin", "--password-file", pwFile, "--data="+dir); err != nil {
		os.Remove(pwFile)
		return "", err
	}
	return pw, nil
}

// sandboxTrust makes a site trust the other site's CA, once.
func sandboxTrust(env *cliEnv, dir, domain, otherDir, otherDomain string) error {
	mark := filepath.Join(dir, "trusts-"+otherDomain)
	if _, err := os.Stat(mark); err == nil {
		return nil
	}
	if err := runQuiet(env, nil, "anchor", "add", domain, filepath.Join(otherDir, otherDomain+"-ca.pem"), "--direction", "both", "--data="+dir); err != nil {
		return err
	}
	return os.WriteFile(mark, nil, 0o600)
}

// runQuiet runs an admin command in-process; its output goes to out (or
// nowhere) and its error output into the returned error.
func runQuiet(env *cliEnv, out io.Writer, args ...string) error {
	var stderr bytes.Buffer
	if out == nil {
		out = io.Discard
	}
	sub := &cliEnv{stdin: bytes.NewReader(nil), stdout: out, stderr: &stderr, getenv: env.getenv}
	if code := run(sub, args); code != 0 {
		return fmt.Errorf("hisp %s: %s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
	}
	return nil
}

func randomPassword() string {
	const letters = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

func printSandboxHelp(w io.Writer, prog, dir string, sites [2]sandboxSite, pw, adminPw [2]string) {
	a, b := sites[0], sites[1]
	au, bu := a.user+"@"+a.domain, b.user+"@"+b.domain
	fmt.Fprintf(w, `hisp sandbox in %s: two HISPs, %s and %s, on loopback.

  %-22s password %-18s submission %s  IMAP %s
  %-22s password %-18s submission %s  IMAP %s

Send a Direct message from %s to %s (swaks):
  swaks --server %s --tls --auth PLAIN --auth-user %s --auth-password '%s' \
        --from %s --to %s --header 'Subject: hello' --body 'Discharge summary follows.'

or with Python:
  python3 -c 'import smtplib,ssl; c=ssl._create_unverified_context(); s=smtplib.SMTP("127.0.0.1",%d); s.starttls(context=c); s.login("%s","%s"); s.sendmail("%s",["%s"],b"From: %s\r\nTo: %s\r\nSubject: hello\r\n\r\nhello\r\n"); s.quit()'

Read it (any IMAP client; self-signed certificate):
  curl -k --ssl-reqd 'imap://127.0.0.1:%d/INBOX;UID=1' -u '%s:%s'

`, dir, a.domain, b.domain,
		au, pw[0], a.addr(1), a.addr(2), bu, pw[1], b.addr(1), b.addr(2),
		au, bu, a.addr(1), au, pw[0], au, bu,
		a.ports[1], au, pw[0], au, bu, au, bu,
		b.ports[2], bu, pw[1])
	hospital := filepath.Join(dir, "hospital")
	fmt.Fprintf(w, `Look around: %[1]s discover %[2]s --data %[3]s --resolver %[4]s
             %[1]s queue list --data %[3]s
             %[1]s track --data %[3]s
             %[1]s help
Admin pages: http://%[5]s/ and http://%[6]s/ (user admin, passwords %[7]s and %[8]s); metrics at /metrics

`, prog, bu, hospital, b.addr(3), a.addr(4), b.addr(4), adminPw[0], adminPw[1])
}

// prefixWriter prefixes each line written with a site name.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
