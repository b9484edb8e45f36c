package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

// adminRun runs hisp in-process with HISP_DATA set to dataDir and returns
// the exit code and output streams.
func adminRun(t *testing.T, dataDir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string {
		switch k {
		case "HISP_DATA":
			return dataDir
		case "USER":
			return "tester"
		}
		return ""
	}}
	code = run(env, args)
	return code, out.String(), errb.String()
}

// adminOK runs a command that must succeed and returns its stdout.
func adminOK(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	code, out, errs := adminRun(t, dataDir, args...)
	if code != 0 {
		t.Fatalf("hisp %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// adminFails runs a command that must exit with code and print want on
// stderr.
func adminFails(t *testing.T, dataDir string, code int, want string, args ...string) {
	t.Helper()
	got, out, errs := adminRun(t, dataDir, args...)
	if got != code {
		t.Errorf("hisp %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errs)
		return
	}
	if !strings.Contains(errs, want) {
		t.Errorf("hisp %s: stderr %q, want it to contain %q", strings.Join(args, " "), errs, want)
	}
}

func adminWriteFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func openTestStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestAdminSession(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")

	// Domains.
	adminOK(t, data, "domain", "add", "a.example")
	adminOK(t, data, "domain", "add", "B.Example")
	adminFails(t, data, 1, "domain a.example already exists", "domain", "add", "a.example")
	adminFails(t, data, 2, "invalid domain", "domain", "add", "not a domain")
	out := adminOK(t, data, "domain", "list")
	if !strings.Contains(out, "a.example") || !strings.Contains(out, "b.example") || !strings.HasPrefix(out, "DOMAIN") {
		t.Errorf("domain list:\n%s", out)
	}

	// Trial certificates from the local CA, address- and organization-bound.
	out = adminOK(t, data, "cert", "issue", "bob@a.example")
	if !strings.Contains(out, "made the local CA of a.example") || !strings.Contains(out, "http://127.0.0.1:8080/crl/a.example.crl") { // the default admin listener
		t.Errorf("cert issue:\n%s", out)
	}
	out = adminOK(t, data, "cert", "issue", "a.example", "--crl-url", "http://hisp.a.example:8080")
	if strings.Contains(out, "made the local CA") || !strings.Contains(out, "http://hisp.a.example:8080/crl/a.example.crl") {
		t.Errorf("second cert issue:\n%s", out)
	}
	adminFails(t, data, 1, "domain z.example not found: run hisp domain add z.example", "cert", "issue", "bob@z.example")

	// Listing shows metadata, never keys.
	out = adminOK(t, data, "cert", "list")
	for _, want := range []string{"bob@a.example", "email:bob@a.example", "dns:a.example", "dual", "CN=hisp trial CA for a.example", "FINGERPRINT"} {
		if !strings.Contains(out, want) {
			t.Errorf("cert list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PRIVATE") {
		t.Errorf("cert list shows key material:\n%s", out)
	}
	out = adminOK(t, data, "cert", "list", "bob@a.example", "--json")
	var certs []ops.CertInfo
	if err := json.Unmarshal([]byte(out), &certs); err != nil {
		t.Fatalf("cert list --json: %v\n%s", err, out)
	}
	if len(certs) != 1 || certs[0].Owner != "bob@a.example" || !certs[0].HasKey || certs[0].KeyUsage != "dual" || certs[0].Binding != "address" {
		t.Errorf("cert list --json: %+v", certs)
	}
	if strings.Contains(out, "PRIVATE") {
		t.Error("cert list --json shows key material")
	}

	// Import of a PEM pair with its chain.
	ca := testpki.NewCA(t, "Test Direct CA")
	carol := testpki.Issue(t, ca, testpki.Options{Email: []string{"Carol@A.example"}})
	carolCert, carolKey := carol.WriteFiles(t, tmp, "carol")
	chainFile := adminWriteFile(t, tmp, "carol-chain.pem", append(carol.CertPEM(), ca.CertPEM()...))
	out = adminOK(t, data, "cert", "import", "carol@a.example", "--cert", chainFile, "--key", carolKey)
	if !strings.Contains(out, "imported certificate") || !strings.Contains(out, "key usage dual") || !strings.Contains(out, "1 chain") {
		t.Errorf("cert import PEM:\n%s", out)
	}
	adminFails(t, data, 1, "already imported", "cert", "import", "carol@a.example", "--cert", carolCert, "--key", carolKey)

	// Organization-bound and ECDSA signing certificates.
	org := testpki.Issue(t, ca, testpki.Options{DNS: []string{"b.example"}})
	orgCert, orgKey := org.WriteFiles(t, tmp, "org")
	adminOK(t, data, "cert", "import", "--cert", orgCert, "b.example", "--key", orgKey) // flags around the positional
	ec := testpki.Issue(t, ca, testpki.Options{Email: []string{"eve@b.example"}, Curve: "P-256"})
	ecCert, ecKey := ec.WriteFiles(t, tmp, "eve")
	out = adminOK(t, data, "cert", "import", "eve@b.example", "--cert", ecCert, "--key", ecKey)
	if !strings.Contains(out, "key usage sign") || !strings.Contains(out, "ECDSA P-256") {
		t.Errorf("cert import ECDSA:\n%s", out)
	}

	// Import of a PKCS#12 made by openssl.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: skipping the PKCS#12 import")
	} else {
		alice := testpki.Issue(t, ca, testpki.Options{Email: []string{"alice@b.example"}})
		aliceCert, aliceKey := alice.WriteFiles(t, tmp, "alice")
		caFile := adminWriteFile(t, tmp, "ca.pem", ca.CertPEM())
		pw := adminWriteFile(t, tmp, "pw", []byte("s3cret pass\n"))
		p12 := filepath.Join(tmp, "alice.p12")
		cmd := exec.Command("openssl", "pkcs12", "-export", "-in", aliceCert, "-inkey", aliceKey, "-certfile", caFile,
			"-out", p12, "-passout", "file:"+pw)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl pkcs12 -export: %v\n%s", err, b)
		}
		wrong := adminWriteFile(t, tmp, "wrong", []byte("nope\n"))
		adminFails(t, data, 1, "PKCS#12", "cert", "import", "alice@b.example", "--pkcs12", p12, "--password-file", wrong)
		adminFails(t, data, 1, "does not bind to bob@b.example", "cert", "import", "bob@b.example", "--pkcs12", p12, "--password-file", pw)
		out = adminOK(t, data, "cert", "import", "alice@b.example", "--pkcs12", p12, "--password-file", pw)
		if !strings.Contains(out, "imported certificate") || !strings.Contains(out, "1 chain") {
			t.Errorf("cert import PKCS#12:\n%s", out)
		}
		st := openTestStore(t, data)
		list, err := st.Certificates(ctx, store.CertFilter{Owner: "alice@b.example"})
		if err != nil || len(list) != 1 || !list[0].HasKey {
			t.Fatalf("alice's certificate: %+v %v", list, err)
		}
		k, err := st.PrivateKey(ctx, list[0].ID)
		if err != nil || !alice.Key.(*rsa.PrivateKey).Equal(k) {
			t.Errorf("alice's key after import: %v", err)
		}
		st.Close()
	}

	// Import errors.
	adminFails(t, data, 1, "does not bind to dave@a.example", "cert", "import", "dave@a.example", "--cert", carolCert, "--key", carolKey)
	adminFails(t, data, 1, "does not bind to a.example", "cert", "import", "a.example", "--cert", carolCert, "--key", carolKey)
	adminFails(t, data, 1, "does not match", "cert", "import", "carol@a.example", "--cert", carolCert, "--key", orgKey)
	weak := testpki.Issue(t, ca, testpki.Options{Email: []string{"weak@a.example"}, KeyBits: 1024})
	weakCert, weakKey := weak.WriteFiles(t, tmp, "weak")
	adminFails(t, data, 1, "at least 2048 bits", "cert", "import", "weak@a.example", "--cert", weakCert, "--key", weakKey)
	zed := testpki.Issue(t, ca, testpki.Options{Email: []string{"zed@z.example"}})
	zedCert, zedKey := zed.WriteFiles(t, tmp, "zed")
	adminFails(t, data, 1, "domain z.example not found: run hisp domain add z.example", "cert", "import", "zed@z.example", "--cert", zedCert, "--key", zedKey)
	adminFails(t, data, 2, "either --pkcs12 or --cert", "cert", "import", "carol@a.example", "--pkcs12", "x.p12", "--cert", carolCert, "--key", carolKey)
	adminFails(t, data, 2, "give --pkcs12", "cert", "import", "carol@a.example", "--cert", carolCert)
	adminFails(t, data, 2, "want ADDRESS|DOMAIN", "cert", "import", "--cert", carolCert, "--key", carolKey)
	adminFails(t, data, 2, "flag provided but not defined", "cert", "import", "carol@a.example", "--bogus")
	adminFails(t, data, 2, "usage: hisp cert", "cert", "frobnicate")
	adminFails(t, data, 2, "unknown command", "frobnicate")
	adminFails(t, data, 2, "invalid address", "cert", "list", "bob@")
	if code, _, _ := adminRun(t, data, "cert", "list", "-h"); code != 0 {
		t.Errorf("cert list -h: exit %d, want 0", code)
	}

	// Anchors: a.example's trial CA as an inbound anchor of b.example, a PEM
	// with two certificates, a DER file.
	caPEM := adminOK(t, data, "cert", "ca", "a.example")
	localCAFile := adminWriteFile(t, tmp, "a-ca.pem", []byte(caPEM))
	out = adminOK(t, data, "anchor", "add", "b.example", localCAFile, "--direction", "in")
	if !strings.Contains(out, "added anchor") || !strings.Contains(out, "(in)") {
		t.Errorf("anchor add:\n%s", out)
	}
	out = adminOK(t, data, "anchor", "add", "b.example", localCAFile)
	if !strings.Contains(out, "already an anchor") {
		t.Errorf("anchor add twice:\n%s", out)
	}
	ca2 := testpki.NewCA(t, "Second CA")
	ca3 := testpki.NewCA(t, "Third CA")
	two := adminWriteFile(t, tmp, "two.pem", append(ca2.CertPEM(), ca3.CertPEM()...))
	out = adminOK(t, data, "anchor", "add", "--direction", "out", "b.example", two)
	if strings.Count(out, "added anchor") != 2 {
		t.Errorf("anchor add of two certificates:\n%s", out)
	}
	der := adminWriteFile(t, tmp, "ca.der", ca.Cert.Raw)
	adminOK(t, data, "anchor", "add", "a.example", der, "--direction=both")
	adminFails(t, data, 2, "invalid direction", "anchor", "add", "a.example", der, "--direction", "sideways")
	adminFails(t, data, 1, "domain c.example not found", "anchor", "add", "c.example", der)
	adminFails(t, data, 2, "want DOMAIN FILE", "anchor", "add", "a.example")

	out = adminOK(t, data, "anchor", "list", "b.example")
	if !strings.Contains(out, "DIRECTION") || !strings.Contains(out, " in ") || !strings.Contains(out, " out ") || !strings.Contains(out, "CN=Second CA") {
		t.Errorf("anchor list:\n%s", out)
	}
	var anchors []ops.AnchorInfo
	if err := json.Unmarshal([]byte(adminOK(t, data, "anchor", "list", "--json", "b.example")), &anchors); err != nil {
		t.Fatal(err)
	}
	dirs := map[string]int{}
	for _, a := range anchors {
		dirs[a.Direction]++
		if a.Source != "manual" {
			t.Errorf("anchor %+v: source %q", a, a.Source)
		}
	}
	if len(anchors) != 3 || dirs["in"] != 1 || dirs["out"] != 2 {
		t.Errorf("anchors of b.example: %+v", anchors)
	}
	// Remove by id, by fingerprint prefix, by file.
	adminOK(t, data, "anchor", "remove", "b.example", adminItoa(anchors[0].ID))
	adminOK(t, data, "anchor", "remove", "b.example", anchors[1].Fingerprint[:12])
	adminOK(t, data, "anchor", "remove", "b.example", adminWriteFile(t, tmp, "third.pem", ca3.CertPEM()))
	adminFails(t, data, 1, "no such anchor", "anchor", "remove", "b.example", adminItoa(anchors[0].ID))
	if out := adminOK(t, data, "anchor", "list", "b.example", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("anchors left:\n%s", out)
	}

	// Bundles: a .p7b file of two anchors (PEM), fetched at once.
	if _, err := exec.LookPath("openssl"); err == nil {
		p7b := filepath.Join(tmp, "bundle.p7b")
		if b, err := exec.Command("openssl", "crl2pkcs7", "-nocrl", "-certfile", two, "-out", p7b).CombinedOutput(); err != nil {
			t.Fatalf("openssl crl2pkcs7: %v\n%s", err, b)
		}
		out = adminOK(t, data, "bundle", "add", "b.example", p7b, "--refresh", "6h")
		if !strings.Contains(out, "2 anchors") {
			t.Errorf("bundle add:\n%s", out)
		}
		adminFails(t, data, 1, "already has a bundle", "bundle", "add", "b.example", p7b)
		out = adminOK(t, data, "anchor", "list", "b.example")
		if strings.Count(out, "bundle 1") != 2 {
			t.Errorf("anchor list after bundle add:\n%s", out)
		}
	}
	adminFails(t, data, 1, "nothing recorded", "bundle", "add", "b.example", carolKey)
	adminFails(t, data, 2, "invalid refresh", "bundle", "add", "b.example", "https://bundles.example/x.p7b", "--refresh", "often")
	// DT-01: an unsigned bundle over plain http only on an explicit opt-in.
	adminFails(t, data, 2, "plain http", "bundle", "add", "b.example", "http://bundles.example/x.p7b", "--no-fetch")
	adminOK(t, data, "bundle", "add", "b.example", "http://bundles.example/plain.p7b", "--no-fetch", "--allow-http")
	adminOK(t, data, "bundle", "add", "b.example", "http://127.0.0.1:9/local.p7b", "--no-fetch") // this machine
	out = adminOK(t, data, "bundle", "add", "b.example", "https://bundles.example/x.p7b", "--no-fetch", "--refresh", "1d")
	if !strings.Contains(out, "the server will fetch it") {
		t.Errorf("bundle add --no-fetch:\n%s", out)
	}
	out = adminOK(t, data, "bundle", "list")
	if !strings.Contains(out, "https://bundles.example/x.p7b") || !strings.Contains(out, "24h0m0s") || !strings.Contains(out, "LOCATION") {
		t.Errorf("bundle list:\n%s", out)
	}
	var bundles []ops.BundleInfo
	if err := json.Unmarshal([]byte(adminOK(t, data, "bundle", "list", "b.example", "--json")), &bundles); err != nil {
		t.Fatal(err)
	}
	if len(bundles) == 0 || bundles[len(bundles)-1].LastSuccess != nil {
		t.Errorf("bundles: %+v", bundles)
	}
	last := bundles[len(bundles)-1]
	adminOK(t, data, "bundle", "remove", "b.example", adminItoa(last.ID))
	adminFails(t, data, 1, "has no bundle", "bundle", "remove", "b.example", adminItoa(last.ID))
	adminFails(t, data, 2, "invalid bundle id", "bundle", "remove", "b.example", "x")

	// Removing a trial certificate revokes it on the local CA's CRL.
	out = adminOK(t, data, "cert", "remove", adminItoa(certs[0].ID))
	if !strings.Contains(out, "revoked serial") {
		t.Errorf("cert remove:\n%s", out)
	}
	adminFails(t, data, 1, "no certificate", "cert", "remove", adminItoa(certs[0].ID))
	st := openTestStore(t, data)
	revs, err := st.Revocations(ctx, "a.example")
	if err != nil || len(revs) != 1 || revs[0].Serial.String() != certs[0].Serial {
		t.Errorf("revocations %+v %v, want serial %s", revs, err, certs[0].Serial)
	}
	st.Close()

	// The audit log has the admin actions.
	st = openTestStore(t, data)
	evs, err := st.AuditEvents(ctx, 0)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Action != "domain.add" || evs[0].Actor != "cli:tester" {
		t.Errorf("audit: %v %+v", err, evs)
	}
	st.Close()

	// domain remove cascades: nothing of a.example is left.
	adminOK(t, data, "anchor", "add", "a.example", localCAFile, "--direction", "out")
	adminOK(t, data, "bundle", "add", "a.example", "https://bundles.example/a.p7b", "--no-fetch")
	out = adminOK(t, data, "domain", "remove", "a.example")
	if !strings.Contains(out, "removed domain a.example") {
		t.Errorf("domain remove:\n%s", out)
	}
	adminFails(t, data, 1, "domain a.example not found", "domain", "remove", "a.example")
	adminFails(t, data, 1, "domain a.example not found", "cert", "list", "a.example")
	out = adminOK(t, data, "cert", "list")
	if strings.Contains(out, "a.example ") || strings.Contains(out, "@a.example") {
		t.Errorf("certificates of a.example left:\n%s", out)
	}
	st = openTestStore(t, data)
	if as, _ := st.Anchors(ctx, ""); len(as) != 0 {
		for _, a := range as {
			if a.Domain == "a.example" {
				t.Errorf("anchor left: %+v", a)
			}
		}
	}
	if bs, _ := st.Bundles(ctx, ""); len(bs) != 0 {
		for _, b := range bs {
			if b.Domain == "a.example" {
				t.Errorf("bundle left: %+v", b)
			}
		}
	}
	if _, err := st.LocalCA(ctx, "a.example"); err == nil {
		t.Error("local CA of a.example left")
	}
	if cs, _ := st.Certificates(ctx, store.CertFilter{}); len(cs) == 0 {
		t.Error("certificates of b.example went too")
	}
	st.Close()
	// A re-added domain starts empty.
	adminOK(t, data, "domain", "add", "a.example")
	if out := adminOK(t, data, "cert", "list", "a.example", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("certificates of re-added a.example:\n%s", out)
	}
}

func adminItoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestAdminDataDir(t *testing.T) {
	tmp := t.TempDir()
	envDir := filepath.Join(tmp, "env")
	flagDir := filepath.Join(tmp, "flag")
	adminOK(t, envDir, "domain", "add", "env.example")
	adminOK(t, envDir, "domain", "add", "flag.example", "--data", flagDir)
	adminOK(t, envDir, "domain", "--data", flagDir, "add", "second.example") // --data before the subcommand
	out := adminOK(t, envDir, "domain", "list")
	if !strings.Contains(out, "env.example") || strings.Contains(out, "flag.example") {
		t.Errorf("HISP_DATA directory:\n%s", out)
	}
	out = adminOK(t, envDir, "domain", "list", "--data="+flagDir)
	if strings.Contains(out, "env.example") || !strings.Contains(out, "flag.example") || !strings.Contains(out, "second.example") {
		t.Errorf("--data directory:\n%s", out)
	}
	fi, err := os.Stat(filepath.Join(flagDir, store.MasterKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("master.key: %v %v", fi, err)
	}

	// A master key readable by others is refused with a clear message.
	if err := os.Chmod(filepath.Join(flagDir, store.MasterKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	adminFails(t, envDir, 1, "chmod 600", "domain", "list", "--data", flagDir)
}

func TestSplitArgs(t *testing.T) {
	c := newAdminCmd(&cliEnv{stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}, "x", "A B", true)
	c.fs.String("direction", "", "")
	flags, pos := splitArgs(c.fs, []string{"a", "--direction", "in", "b", "--json", "--data=d", "--", "-c"})
	if strings.Join(flags, " ") != "--direction in --json --data=d" || strings.Join(pos, " ") != "a b -c" {
		t.Errorf("flags %q, positionals %q", flags, pos)
	}
}

// TestAdminBinary runs the built binary as a subprocess for exit codes and
// the environment.
func TestAdminBinary(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "hisp")
	if b, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	data := filepath.Join(tmp, "data")
	runBin := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HISP_DATA="+data)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("hisp %s: %v", strings.Join(args, " "), err)
		}
		if code != want {
			t.Errorf("hisp %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		if code == 1 && !strings.HasPrefix(errb.String(), "hisp: ") {
			t.Errorf("hisp %s: stderr %q lacks the hisp: prefix", strings.Join(args, " "), errb.String())
		}
		return out.String()
	}
	runBin(2)
	runBin(2, "frobnicate")
	runBin(2, "domain")
	runBin(2, "domain", "frobnicate")
	runBin(2, "domain", "add")
	runBin(2, "domain", "add", "--bogus", "x.example")
	runBin(0, "domain", "add", "x.example")
	runBin(1, "domain", "add", "x.example")
	runBin(0, "cert", "issue", "bob@x.example")
	runBin(1, "cert", "issue", "bob@y.example")
	if out := runBin(0, "cert", "list"); !strings.Contains(out, "bob@x.example") || strings.Contains(out, "PRIVATE") {
		t.Errorf("cert list:\n%s", out)
	}
	ca := runBin(0, "cert", "ca", "x.example")
	if b, _ := pem.Decode([]byte(ca)); b == nil || b.Type != "CERTIFICATE" {
		t.Errorf("cert ca:\n%s", ca)
	}
	runBin(2, "anchor", "add", "x.example", "nofile", "--direction", "up")
	runBin(1, "anchor", "add", "x.example", filepath.Join(tmp, "nofile"))
	runBin(0, "domain", "remove", "x.example")
	runBin(1, "domain", "remove", "x.example")
	if _, err := os.Stat(filepath.Join(data, store.DBFile)); err != nil {
		t.Errorf("HISP_DATA not used: %v", err)
	}
}
