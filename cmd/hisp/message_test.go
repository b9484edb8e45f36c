package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
)

// runCLI runs hisp in-process with stdin and returns exit code and streams.
func runCLI(t *testing.T, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIWith(t, stdin, func(string) string { return "" }, args...)
}

// runCLIWith is runCLI with an environment (getenv).
func runCLIWith(t *testing.T, stdin []byte, getenv func(string) string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb, getenv: getenv}
	code = run(env, args)
	return code, out.String(), errb.String()
}

const plainMessage = "From: alice@hospital.example\r\nTo: bob@clinic.example\r\nSubject: Discharge summary\r\n" +
	"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@hospital.example>\r\n\r\nHello Bob.\r\n"

func TestMessageSealOpen(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "hisp test CA")
	other := testpki.NewCA(t, "another CA")
	caFile, _ := ca.WriteFiles(t, dir, "ca")
	otherFile, _ := other.WriteFiles(t, dir, "other")
	sc, sk := testpki.Issue(t, ca, testpki.Options{Email: []string{"alice@hospital.example"}}).WriteFiles(t, dir, "alice")
	r1c, r1k := testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@clinic.example"}}).WriteFiles(t, dir, "bob")
	r2c, _ := testpki.Issue(t, ca, testpki.Options{DNS: []string{"clinic.example"}}).WriteFiles(t, dir, "clinic")

	for _, opts := range [][]string{
		nil,
		{"--cipher", "aes256-gcm", "--oaep", "sha1", "--digest", "sha512"},
		{"--cipher", "aes128-gcm", "--oaep", "off", "--digest", "sha384", "--keyid"},
	} {
		args := append([]string{"message", "seal", "--sign-cert", sc, "--sign-key", sk, "--to", r1c, "--to", r2c}, opts...)
		code, sealed, stderr := runCLI(t, []byte(plainMessage), args...)
		if code != 0 {
			t.Fatalf("seal %v: exit %d: %s", opts, code, stderr)
		}
		code, inner, verdict := runCLI(t, []byte(sealed), "message", "open", "--cert", r1c, "--key", r1k, "--anchor", caFile)
		if code != 0 || inner != plainMessage {
			t.Fatalf("open %v: exit %d, stderr %s, message %q", opts, code, verdict, inner)
		}
		if !strings.Contains(verdict, "alice@hospital.example") || !strings.Contains(verdict, "chains to anchor") {
			t.Errorf("verdict %q", verdict)
		}
		if strings.Count(strings.TrimSpace(verdict), "\n") != 0 {
			t.Errorf("verdict is not one line: %q", verdict)
		}
		// An anchor the signer does not chain to: failure, nothing on stdout.
		code, inner, verdict = runCLI(t, []byte(sealed), "message", "open", "--cert", r1c, "--key", r1k, "--anchor", otherFile)
		if code != 1 || inner != "" || !strings.Contains(verdict, "anchor") {
			t.Errorf("untrusted signer: exit %d, stdout %q, stderr %q", code, inner, verdict)
		}
	}
}

func TestMessageOpenFailures(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "hisp test CA")
	sc, sk := testpki.Issue(t, ca, testpki.Options{Email: []string{"alice@hospital.example"}}).WriteFiles(t, dir, "alice")
	r1c, r1k := testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@clinic.example"}}).WriteFiles(t, dir, "bob")
	code, _, stderr := runCLI(t, []byte(plainMessage), "message", "open", "--cert", r1c, "--key", r1k)
	if code != 1 || !strings.Contains(stderr, "not encrypted") {
		t.Errorf("plain message: exit %d, %q", code, stderr)
	}
	// Sealed to alice, opened by bob.
	_, sealed, _ := runCLI(t, []byte(plainMessage), "message", "seal", "--sign-cert", sc, "--sign-key", sk, "--to", sc)
	code, out, stderr := runCLI(t, []byte(sealed), "message", "open", "--cert", r1c, "--key", r1k)
	if code != 1 || out != "" || !strings.Contains(stderr, "not encrypted to any of our certificates") {
		t.Errorf("wrong recipient: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	for _, args := range [][]string{
		{"message"},
		{"message", "seal", "--sign-cert", sc, "--sign-key", sk},
		{"message", "seal", "--sign-cert", sc, "--sign-key", sk, "--to", r1c, "--cipher", "des3"},
		{"message", "seal", "--sign-cert", sc, "--sign-key", sk, "--to", r1c, "--digest", "sha1"},
		{"message", "open", "--bogus"},
	} {
		if code, _, _ := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
}

// TestMessagePKCS12 seals and opens with PKCS#12 identities made by openssl.
func TestMessagePKCS12(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "hisp test CA")
	sc, sk := testpki.Issue(t, ca, testpki.Options{Email: []string{"alice@hospital.example"}}).WriteFiles(t, dir, "alice")
	r1c, r1k := testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@clinic.example"}}).WriteFiles(t, dir, "bob")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("pass phrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p12 := func(cert, key, name string) string {
		out := filepath.Join(dir, name+".p12")
		if b, err := exec.Command("openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-out", out, "-passout", "pass:pass phrase").CombinedOutput(); err != nil {
			t.Fatalf("openssl pkcs12: %v %s", err, b)
		}
		return out
	}
	code, sealed, stderr := runCLI(t, []byte(plainMessage), "message", "seal", "--pkcs12", p12(sc, sk, "alice"), "--password-file", pw, "--to", r1c)
	if code != 0 {
		t.Fatalf("seal: %s", stderr)
	}
	code, inner, stderr := runCLI(t, []byte(sealed), "message", "open", "--pkcs12", p12(r1c, r1k, "bob"), "--password-file", pw)
	if code != 0 || inner != plainMessage {
		t.Fatalf("open: exit %d %s", code, stderr)
	}
}

func TestGlobalDataFlagFirst(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI(t, nil, "--data", dir, "domain", "add", "first.example"); code != 0 {
		t.Fatalf("--data before the command: %s", stderr)
	}
	code, out, _ := runCLI(t, nil, "--data="+dir, "domain", "list")
	if code != 0 || !strings.Contains(out, "first.example") {
		t.Fatalf("exit %d: %s", code, out)
	}
}
