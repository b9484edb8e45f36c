package smime

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"software.sslmate.com/src/go-pkcs12"
)

// gpgsmPassphrase protects the PKCS #12 files and, once imported, the keys
// in gpg-agent. It reaches gpgsm on stdin (--passphrase-fd 0) with the
// loopback pinentry, so no pinentry program ever runs.
const gpgsmPassphrase = "hisp gpgsm test"

// gpgsm is GnuPG's S/MIME tool working in a throwaway GNUPGHOME: keys
// imported from PKCS #12, the test CA trusted, CRL and policy checks off,
// and its gpg-agent killed when the test ends.
type gpgsm struct {
	t       testing.TB
	bin     string
	home    string // GNUPGHOME
	work    string // input and output files
	version string // "2.2.40"
}

// gpgsmResult is what one gpgsm run said.
type gpgsmResult struct {
	out    []byte   // what gpgsm wrote to --output
	status []string // status lines, "[GNUPG:] " removed
	log    string   // everything else on stderr: gpgsm's own words
	err    error
}

// newGpgsm sets up a GNUPGHOME for the test: the private keys of keys
// imported from PKCS #12, the certificates of certs imported, and ca
// trusted as a root ("S relax": no basicConstraints nitpicking). Without
// gpgsm the test is skipped, unless CI is "true": there interop is not
// optional.
func newGpgsm(t *testing.T, ca *testpki.Identity, keys, certs []*testpki.Identity) *gpgsm {
	t.Helper()
	bin, err := exec.LookPath("gpgsm")
	for _, tool := range []string{"gpgconf", "gpg-agent"} {
		if err == nil {
			_, err = exec.LookPath(tool)
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("gpgsm interop: %v (make test-deps installs the gpgsm and gpg-agent packages)", err)
		}
		t.Skipf("gpgsm interop skipped: %v (make test-deps installs the gpgsm and gpg-agent packages)", err)
	}
	dir := t.TempDir()
	g := &gpgsm{t: t, bin: bin, home: filepath.Join(dir, "h"), work: filepath.Join(dir, "w")}
	for _, d := range []string{g.home, g.work} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(g.killAgent)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("gpgsm --version: %v", err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	g.version = first[strings.LastIndex(first, " ")+1:]

	// s2k-count at its minimum: gpg-agent otherwise calibrates the key
	// protection to cost 100 ms of CPU, about a second a signature on a
	// busy machine.
	g.writeFile(filepath.Join(g.home, "gpg-agent.conf"), []byte("allow-loopback-pinentry\ns2k-count 65536\n"))
	g.writeFile(filepath.Join(g.home, "trustlist.txt"), []byte(sha1Hex(ca.Cert.Raw)+" S relax\n"))
	if r := g.run("ca.pem", ca.CertPEM(), "--import"); r.err != nil {
		t.Fatalf("gpgsm %s: import the CA: %v\n%s", g.version, r.err, r.log)
	}
	for _, id := range certs {
		if r := g.run("cert.pem", id.CertPEM(), "--import"); r.err != nil {
			t.Fatalf("gpgsm %s: import %s: %v\n%s", g.version, id.Cert.Subject, r.err, r.log)
		}
	}
	for _, id := range keys {
		if err := g.importKey(id); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// importKey imports id's key and certificate as PKCS #12. The file uses
// the legacy encryption (3DES, SHA-1 MAC): gpgsm 2.2 cannot read PBES2
// with HMAC-SHA-256, what openssl 3 and go-pkcs12's Modern encoder write
// ("encryptedData error at pkcs5PBES2-params").
func (g *gpgsm) importKey(id *testpki.Identity) error {
	p12, err := pkcs12.LegacyDES.Encode(id.Key, id.Cert, nil, gpgsmPassphrase)
	if err != nil {
		return fmt.Errorf("pkcs12 for %s: %w", id.Cert.Subject, err)
	}
	r := g.run("key.p12", p12, "--import")
	if r.err == nil && !r.hasStatus("IMPORT_OK") {
		r.err = fmt.Errorf("no IMPORT_OK status")
	}
	if r.err != nil {
		return fmt.Errorf("gpgsm %s: import the PKCS #12 of %s: %v\n%s", g.version, id.Cert.Subject, r.err, r.log)
	}
	return nil
}

// gpgsmCommonArgs go on every run: no terminal, the passphrase on stdin,
// no CRL or policy look-ups (the test CA publishes none), status lines on
// stderr.
var gpgsmCommonArgs = []string{"--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
	"--disable-crl-checks", "--disable-policy-checks", "--status-fd", "2"}

// run runs gpgsm with args on input, given as a file; what it writes with
// --output is the result's out. Each run has its own directory, so runs
// may go in parallel.
func (g *gpgsm) run(name string, input []byte, args ...string) gpgsmResult {
	g.t.Helper()
	dir := g.runDir()
	in := filepath.Join(dir, name)
	g.writeFile(in, input)
	outFile := filepath.Join(dir, "out")
	full := slices.Concat(gpgsmCommonArgs, args)
	if !slices.Contains(args, "--import") {
		full = append(full, "--output", outFile)
	}
	r := g.exec(append(full, in))
	if r.err == nil && !slices.Contains(args, "--import") {
		out, err := os.ReadFile(outFile)
		if err != nil {
			r.err = fmt.Errorf("gpgsm wrote no output: %w", err)
		}
		r.out = out
	}
	return r
}

// verify checks a detached signature over content.
func (g *gpgsm) verify(sig, content []byte) gpgsmResult {
	g.t.Helper()
	dir := g.runDir()
	sigFile, dataFile := filepath.Join(dir, "smime.p7s"), filepath.Join(dir, "content")
	g.writeFile(sigFile, sig)
	g.writeFile(dataFile, content)
	return g.exec(slices.Concat(gpgsmCommonArgs, []string{"--verify", sigFile, dataFile}))
}

func (g *gpgsm) runDir() string {
	g.t.Helper()
	dir, err := os.MkdirTemp(g.work, "run")
	if err != nil {
		g.t.Fatal(err)
	}
	return dir
}

// exec runs gpgsm in this GNUPGHOME and sorts its stderr into status
// lines and gpgsm's own messages.
func (g *gpgsm) exec(args []string) gpgsmResult {
	cmd := exec.Command(g.bin, args...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home, "LC_ALL=C")
	cmd.Dir = g.work
	cmd.Stdin = strings.NewReader(gpgsmPassphrase + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var r gpgsmResult
	if err := cmd.Run(); err != nil {
		op := "run"
		for _, a := range args[len(gpgsmCommonArgs):] {
			if strings.HasPrefix(a, "--") {
				op = a
				break
			}
		}
		r.err = fmt.Errorf("gpgsm %s: %w", op, err)
	}
	var log strings.Builder
	for _, line := range strings.Split(stderr.String(), "\n") {
		if s, ok := strings.CutPrefix(line, "[GNUPG:] "); ok {
			r.status = append(r.status, s)
		} else if strings.TrimSpace(line) != "" && !gpgsmNoise(line) {
			log.WriteString(line + "\n")
		}
	}
	r.log = log.String()
	return r
}

// gpgsmNoise are the lines gpgsm prints on every run with the options the
// tests use; the rest of its stderr is what a failure is reported with.
func gpgsmNoise(line string) bool {
	return strings.Contains(line, "not checked due to --disable-") || strings.Contains(line, "DBG: adding certificates")
}

// hasStatus reports whether a status line starts with keyword.
func (r gpgsmResult) hasStatus(keyword string) bool {
	return r.statusLine(keyword) != nil
}

// statusLine returns the fields of the first status line with keyword.
func (r gpgsmResult) statusLine(keyword string) []string {
	for _, s := range r.status {
		f := strings.Fields(s)
		if len(f) > 0 && f[0] == keyword {
			return f
		}
	}
	return nil
}

// reason is gpgsm's own account of a failure: its error lines and the
// failure status lines, on one line.
func (r gpgsmResult) reason() string {
	var parts []string
	for _, line := range strings.Split(strings.TrimSpace(r.log), "\n") {
		if line = strings.TrimSpace(strings.TrimPrefix(line, "gpgsm: ")); line != "" {
			parts = append(parts, line)
		}
	}
	for _, s := range r.status {
		if strings.Contains(s, "FAIL") || strings.HasPrefix(s, "ERROR") || strings.HasPrefix(s, "INV_") {
			parts = append(parts, "["+s+"]")
		}
	}
	if r.err != nil {
		parts = append(parts, "("+r.err.Error()+")")
	}
	return strings.Join(parts, "; ")
}

// killAgent stops the gpg-agent (and any dirmngr) of this GNUPGHOME.
func (g *gpgsm) killAgent() {
	cmd := exec.Command("gpgconf", "--kill", "all")
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home)
	if out, err := cmd.CombinedOutput(); err != nil {
		g.t.Logf("gpgconf --kill all: %v: %s", err, out)
	}
}

func (g *gpgsm) writeFile(name string, data []byte) {
	g.t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		g.t.Fatal(err)
	}
}

// gpgsmHashAlgo is the libgcrypt number gpgsm's VALIDSIG status gives for
// a digest.
func gpgsmHashAlgo(d Digest) string {
	switch d {
	case SHA384:
		return "9"
	case SHA512:
		return "10"
	}
	return "8"
}

// sha1Hex is a certificate's fingerprint as gpgsm writes it.
func sha1Hex(der []byte) string {
	sum := sha1.Sum(der)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}
