package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

// TestPolicyCommands: hisp policy add (one rule, or the DirectTrust preset),
// list in plain words and as JSON, and remove; bad rules are refused with
// the problem named, before anything is stored.
func TestPolicyCommands(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	adminOK(t, data, "domain", "add", "a.example")

	out := adminOK(t, data, "policy", "add", "a.example", "--preset", "directtrust")
	if strings.Count(out, "added rule directtrust-") != 4 || !strings.Contains(out, "for the signers it accepts and recipients it sends to, the certificate asserts a certificate policy under 1.3.6.1.4.1.41179.1") {
		t.Errorf("preset:\n%s", out)
	}
	out = adminOK(t, data, "policy", "add", "a.example", "no-test-ca", `not issuer("Test CA")`, "--direction", "in")
	if !strings.Contains(out, `for the signers it accepts, the certificate is not one that has an issuer containing "Test CA"`) {
		t.Errorf("add:\n%s", out)
	}
	adminFails(t, data, 2, "key-usage(sign)", "policy", "add", "a.example", "bad", "key-usage(sign)")
	adminFails(t, data, 2, "rule name", "policy", "add", "a.example", "bad name", "key-type(rsa)")
	adminFails(t, data, 2, "unknown preset", "policy", "add", "a.example", "--preset", "nope")
	adminFails(t, data, 1, "hisp domain add b.example", "policy", "add", "b.example", "no-test-ca", "key-type(rsa)")
	if _, _, errs := adminRun(t, data, "policy", "add", "a.example", "no-test-ca", "key-type(rsa)"); !strings.Contains(errs, "already has a rule no-test-ca") {
		t.Errorf("a second rule of one name: %s", errs)
	}

	out = adminOK(t, data, "policy", "list", "a.example")
	for _, want := range []string{"directtrust-key-size", "no-test-ca", "in", "either (has an RSA key and has a key of at least 2048 bits)"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	var list []ops.PolicyInfo
	if err := json.Unmarshal([]byte(adminOK(t, data, "policy", "list", "--json")), &list); err != nil || len(list) != 5 {
		t.Fatalf("json: %v, %d rules", err, len(list))
	}
	if list[0].Rule == "" || list[0].Meaning == "" || list[0].Direction == "" {
		t.Errorf("json entry %+v", list[0])
	}

	adminOK(t, data, "policy", "remove", "a.example", "no-test-ca", "directtrust-category")
	adminFails(t, data, 1, "not found", "policy", "remove", "a.example", "no-test-ca")
	if out := adminOK(t, data, "policy", "list", "a.example"); strings.Contains(out, "no-test-ca") || strings.Contains(out, "directtrust-category") {
		t.Errorf("after remove:\n%s", out)
	}
}

// TestDiscoverAppliesPolicies: hisp discover --domain judges a partner's
// certificate as the gateway would, trust policies of the domain included.
func TestDiscoverAppliesPolicies(t *testing.T) {
	_, data, resolver := discoverSetup(t)
	if code, _, stderr := runCLI(t, nil, "policy", "add", "local.example", "--preset", "directtrust", "--direction", "out", data); code != 0 {
		t.Fatalf("policy add: %s", stderr)
	}
	code, out, _ := runCLI(t, nil, "discover", "bob@remote.example", "--resolver", resolver, "--domain", "local.example", data)
	if code != 1 || !strings.Contains(out, "trust policies: 4 rule(s) of local.example") ||
		!strings.Contains(out, `refused by trust policy "directtrust-assurance" of local.example`) {
		t.Errorf("exit %d\n%s", code, out)
	}
}

// TestDiscoverUnreadablePolicyRefuses: a stored rule that does not parse
// (written by another version, or into the database by hand) refuses every
// recipient in hisp discover as it does in the gateway, naming the rule:
// the command reports a verdict rather than failing.
func TestDiscoverUnreadablePolicyRefuses(t *testing.T) {
	dir, data, resolver := discoverSetup(t)
	code, out, _ := runCLI(t, nil, "discover", "bob@remote.example", "--resolver", resolver, "--domain", "local.example", data)
	if code != 0 {
		t.Fatalf("without rules: exit %d\n%s", code, out)
	}
	st, err := store.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.AddTrustPolicy(context.Background(), store.TrustPolicy{Domain: "local.example", Name: "broken",
		Direction: store.DirectionOut, Expr: "key-size(>="})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, nil, "discover", "bob@remote.example", "--resolver", resolver, "--domain", "local.example", data)
	if code != 1 || !strings.Contains(out, `trust policy "broken" of local.example is unreadable`) {
		t.Errorf("exit %d\n%s\n%s", code, out, stderr)
	}
}

// discoverSetup makes a data directory with local.example anchoring a
// remote CA for recipients, and a DNS server publishing the certificate of
// bob@remote.example from that CA: the data directory, its --data flag and
// the resolver's address.
func discoverSetup(t *testing.T) (dir, data, resolver string) {
	t.Helper()
	dir = t.TempDir()
	data = "--data=" + dir
	remoteCA := testpki.NewCA(t, "remote CA")
	bob := testpki.Issue(t, remoteCA, testpki.Options{Email: []string{"bob@remote.example"}})
	resolver = startDNS(t, staticCerts{zone: "remote.example", names: map[string][][]byte{"bob.remote.example": {bob.Cert.Raw}}})
	anchorFile, _ := remoteCA.WriteFiles(t, dir, "remote-ca")
	for _, args := range [][]string{
		{"domain", "add", "local.example", data},
		{"anchor", "add", "local.example", anchorFile, "--direction", "out", data},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	return dir, data, resolver
}
