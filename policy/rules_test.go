package policy

import (
	"crypto/x509"
	"strings"
	"testing"
)

// TestRuleSetCheck: every rule must hold; the first that fails is named
// with its domain; an unreadable rule refuses whatever the certificate.
func TestRuleSetCheck(t *testing.T) {
	cert := &x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment}
	rs := RuleSet{ParseRule("enc", "key-usage(keyEncipherment)"), ParseRule("sign", "key-usage(digitalSignature)")}
	if why := rs[:1].Check(cert, "a.example"); why != "" {
		t.Errorf("met rule refused: %s", why)
	}
	if why := rs.Check(cert, "a.example"); !strings.Contains(why, `refused by trust policy "sign" of a.example`) {
		t.Errorf("failed rule: %q", why)
	}
	broken := ParseRule("broken", "key-usage(")
	if broken.Err == nil {
		t.Fatal("an unparsable rule parsed")
	}
	if why := (RuleSet{broken}).Check(cert, "a.example"); !strings.Contains(why, `trust policy "broken" of a.example is unreadable`) {
		t.Errorf("unreadable rule: %q", why)
	}
	if why := RuleSet(nil).Check(cert, "a.example"); why != "" {
		t.Errorf("no rules: %q", why)
	}
}
