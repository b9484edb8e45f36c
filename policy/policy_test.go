package policy

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
)

// TestDirectTrustPreset: a certificate made to pass every rule of the
// DirectTrust preset does, and one made to fail each rule fails that rule
// and only it, with a reason that says what it lacks.
func TestDirectTrustPreset(t *testing.T) {
	ca := testpki.NewCA(t, "policy test CA")
	good := []string{"1.3.6.1.4.1.41179.1.3", "1.3.6.1.4.1.41179.2.1"}
	rules, err := Preset("DirectTrust")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		opts  testpki.Options
		fails string // the rule it fails, "" for none
		why   string
	}{
		{"compliant RSA", testpki.Options{Email: []string{"a@b.example"}, Policies: good}, "", ""},
		{"compliant ECDSA signer", testpki.Options{Email: []string{"a@b.example"}, Policies: good, Curve: "P-256"}, "", ""},
		{"no assurance level", testpki.Options{Email: []string{"a@b.example"}, Policies: good[1:]}, "directtrust-assurance", "not one under 1.3.6.1.4.1.41179.1"},
		{"no category", testpki.Options{Email: []string{"a@b.example"}, Policies: good[:1]}, "directtrust-category", "not one under 1.3.6.1.4.1.41179.2"},
		{"no policies", testpki.Options{Email: []string{"a@b.example"}}, "directtrust-assurance", "asserts no certificate policy"},
		{"wrong key usage", testpki.Options{Email: []string{"a@b.example"}, Policies: good, KeyUsage: x509.KeyUsageKeyAgreement}, "directtrust-key-usage", "lacks keyEncipherment"},
		{"RSA 1024", testpki.Options{Email: []string{"a@b.example"}, Policies: good, KeyBits: 1024}, "directtrust-key-size", "1024 bits, want at least 2048"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert := testpki.Issue(t, ca, tc.opts).Cert
			for _, r := range rules {
				e, err := Parse(r.Expr)
				if err != nil {
					t.Fatalf("%s: %v", r.Name, err)
				}
				ok, why := e.Eval(cert)
				if wantFail := r.Name == tc.fails; ok == wantFail {
					if tc.fails == "directtrust-assurance" && r.Name == "directtrust-category" && tc.name == "no policies" {
						continue // no policies at all fails both
					}
					t.Errorf("rule %s: met %v (%s)", r.Name, ok, why)
				}
				if !ok && r.Name == tc.fails && !strings.Contains(why, tc.why) {
					t.Errorf("rule %s: reason %q lacks %q", r.Name, why, tc.why)
				}
			}
		})
	}
}

// TestParse: the language reads back as written (String) and in plain words
// (Words); precedence, not and parentheses; errors name the problem.
func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, str, words string }{
		{"policy(1.2.3.*) and key-usage(digitalsignature) or not issuer(\"Test CA\")",
			`(policy(1.2.3.*) and key-usage(digitalSignature)) or not issuer("Test CA")`,
			`either (asserts a certificate policy under 1.2.3 and has key usage digitalSignature) or is not one that has an issuer containing "Test CA"`},
		{"KEY-SIZE(>= 3072) and (san(*@b.example) or ext-key-usage(emailProtection))",
			`key-size(>=3072) and (san("*@b.example") or ext-key-usage(emailProtection))`,
			`has a key of at least 3072 bits and (either names *@b.example in its subjectAltName or has extended key usage emailProtection)`},
	} {
		e, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if e.String() != tc.str || e.Words() != tc.words {
			t.Errorf("%s:\n got %s\n     %s\nwant %s\n     %s", tc.in, e.String(), e.Words(), tc.str, tc.words)
		}
		again, err := Parse(e.String())
		if err != nil || again.String() != e.String() {
			t.Errorf("%s does not read back: %v", e, err)
		}
	}
	for in, want := range map[string]string{
		"":                            "empty",
		"policy(1.2.3) and":           "ends where a condition",
		"policy(x.y)":                 "not an OID",
		"key-usage(sign)":             "want digitalSignature",
		"key-size(about 2048)":        "operator",
		"frobnicate(1)":               "unknown condition",
		"(policy(1.2.3)":              "missing )",
		"policy(1.2.3) policy(1.2.4)": "unexpected",
		`issuer("open`:                "unterminated",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want an error with %q", in, err, want)
		}
	}
}

// TestEvalPredicates: each predicate on a certificate that has and lacks
// what it asks.
func TestEvalPredicates(t *testing.T) {
	ca := testpki.NewCA(t, "Acme Test CA")
	cert := testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@b.example"}, Policies: []string{"1.3.6.1.4.1.41179.1.3"}}).Cert
	for expr, want := range map[string]bool{
		"policy(1.3.6.1.4.1.41179.1.3)":      true,
		"policy(1.3.6.1.4.1.41179.1.*)":      true,
		"policy(1.3.6.1.4.1.41179.1.3.*)":    false,
		"key-usage(keyEncipherment)":         true,
		"key-usage(keyCertSign)":             false,
		"ext-key-usage(emailProtection)":     true,
		"ext-key-usage(serverAuth)":          false,
		"ext-key-usage(1.3.6.1.5.5.7.3.4)":   true,
		"key-type(rsa)":                      true,
		"key-type(ecdsa)":                    false,
		"key-size(=2048)":                    true,
		"key-size(>2048)":                    false,
		"issuer(\"acme test\")":              true,
		"subject(\"acme\")":                  false,
		"san(*@b.example)":                   true,
		"san(*@c.example)":                   false,
		"not san(*@c.example)":               true,
		"key-type(ecdsa) or key-size(<4096)": true,
	} {
		e, err := Parse(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if ok, why := e.Eval(cert); ok != want {
			t.Errorf("%s: %v (%s), want %v", expr, ok, why, want)
		}
	}
}

// FuzzParse reads arbitrary rules: no panics, and what parses reads back.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(e.String())
		if err != nil || again.String() != e.String() {
			t.Fatalf("%q parsed as %q, which reads back as %v (%v)", s, e.String(), again, err)
		}
		_ = e.Words()
	})
}
