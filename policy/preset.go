package policy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// Rule is a named rule as an admin adds it.
type Rule struct {
	Name string
	Expr string
}

// The DirectTrust certificate policy's object identifiers: assurance levels
// under 1.3.6.1.4.1.41179.1 and certificate categories under
// 1.3.6.1.4.1.41179.2 (DirectTrust Community X.509 Certificate Policy).
const (
	DirectTrustAssuranceArc = "1.3.6.1.4.1.41179.1"
	DirectTrustCategoryArc  = "1.3.6.1.4.1.41179.2"
)

// presets are the rule sets `hisp policy add DOMAIN --preset NAME` adds.
var presets = map[string][]Rule{
	// A certificate of the DirectTrust community: it asserts an assurance
	// level and a category of the DirectTrust policy, its key is for
	// encryption or signing, and it is RSA of directprofile.MinRSABits or
	// more (or ECDSA of 256 or more, which the Direct profile allows for
	// signers).
	"directtrust": {
		{"directtrust-assurance", "policy(" + DirectTrustAssuranceArc + ".*)"},
		{"directtrust-category", "policy(" + DirectTrustCategoryArc + ".*)"},
		{"directtrust-key-usage", "key-usage(keyEncipherment) or key-usage(digitalSignature)"},
		{"directtrust-key-size", "key-type(rsa) and key-size(>=" + strconv.Itoa(directprofile.MinRSABits) + ") or key-type(ecdsa) and key-size(>=256)"},
	},
}

// Preset returns the rules of a named preset.
func Preset(name string) ([]Rule, error) {
	rules, ok := presets[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("unknown preset %q: want %s", name, strings.Join(PresetNames(), ", "))
	}
	return append([]Rule(nil), rules...), nil
}

// PresetNames lists the presets.
func PresetNames() []string {
	var out []string
	for n := range presets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ValidName checks a rule's name: letters, digits, '-', '_' and '.', at
// most 64, so that it reads well in a refusal.
func ValidName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("rule name %q: want 1 to 64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("rule name %q: only letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}
