package trust

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Rule names one rule of validation in an [Inspection].
type Rule string

// The rules Validate applies, in its order.
const (
	RuleBinding    Rule = "binding"    // AS-02..AS-05
	RuleValidity   Rule = "validity"   // TV-01
	RuleKeyUsage   Rule = "key usage"  // AS-06
	RuleKey        Rule = "key size"   // DT-04, TV-09: key type and size, signature algorithm
	RuleChain      Rule = "chain"      // TV-02, TV-03
	RuleRevocation Rule = "revocation" // TV-04
)

// Finding is the outcome of one rule.
type Finding struct {
	Rule   Rule
	OK     bool
	Reason string // always set
}

// Inspection is the rule-by-rule outcome of Inspect.
type Inspection struct {
	Findings []Finding // one per rule, in the order of the Rule constants
	Binding  Binding
	// Chain is the path to an anchor, leaf first, when one was found.
	Chain []*x509.Certificate
}

// OK reports whether every rule passed.
func (in Inspection) OK() bool {
	for _, f := range in.Findings {
		if !f.OK {
			return false
		}
	}
	return true
}

// Find returns the finding of rule r.
func (in Inspection) Find(r Rule) Finding {
	for _, f := range in.Findings {
		if f.Rule == r {
			return f
		}
	}
	return Finding{Rule: r, Reason: "not inspected"}
}

// Inspect applies the rules of Validate to req one by one and reports each,
// instead of stopping at the first that fails: for a conformance report
// (hisp check) that says which rules a certificate meets. Two differences
// from Validate make the report more useful: the path is built as of a time
// inside the certificate's validity, so that an expired certificate still
// shows whether it chains to an anchor (validity is its own rule); and a
// revocation status that cannot be established fails the revocation rule
// whatever Options.Revocation says, since a partner refusing such
// certificates would refuse it.
func (v *Validator) Inspect(ctx context.Context, req Request) Inspection {
	now := v.now()
	cert := req.Cert
	var in Inspection
	add := func(r Rule, reason, okReason string) {
		if reason != "" {
			in.Findings = append(in.Findings, Finding{Rule: r, Reason: reason})
		} else {
			in.Findings = append(in.Findings, Finding{Rule: r, OK: true, Reason: okReason})
		}
	}
	if cert == nil {
		for _, r := range []Rule{RuleBinding, RuleValidity, RuleKeyUsage, RuleKey, RuleChain, RuleRevocation} {
			add(r, "no certificate", "")
		}
		return in
	}

	binding, why := bind(cert, req.Address)
	in.Binding = binding
	if binding == Unbound {
		add(RuleBinding, why, "")
	} else {
		add(RuleBinding, "", fmt.Sprintf("%s to %s: %s", binding, req.Address, why))
	}

	add(RuleValidity, checkValidity(cert, now),
		fmt.Sprintf("valid from %s to %s", formatTime(cert.NotBefore), formatTime(cert.NotAfter)))

	add(RuleKeyUsage, v.checkLeafUsage(cert, req.Purpose),
		fmt.Sprintf("%s allows %s (AS-06)", keyUsageString(cert.KeyUsage), req.Purpose))

	keyReason := checkKey(cert, req.Purpose, true)
	if keyReason == "" && !(isSelfIssued(cert) && containsCert(req.Anchors, cert)) {
		keyReason = checkSignatureAlgorithm(cert)
	}
	add(RuleKey, keyReason, fmt.Sprintf("%s, signed with %s", keyDescription(cert), cert.SignatureAlgorithm))

	// The path as of a time the certificate is valid at.
	at := now
	if at.After(cert.NotAfter) {
		at = cert.NotAfter.Add(-time.Second)
	} else if at.Before(cert.NotBefore) {
		at = cert.NotBefore
	}
	var chain []*x509.Certificate
	chainReason := ""
	if len(req.Anchors) == 0 {
		chainReason = "no trust anchors to build a path to (TV-05)"
	} else {
		// An expired certificate's issuers may have been renewed since:
		// also try the start of each issuer's validity that falls within
		// the certificate's own.
		times := []time.Time{at}
		if !at.Equal(now) {
			for _, c := range append(slices.Clone(req.Intermediates), req.Anchors...) {
				if c != nil && !c.NotBefore.Before(cert.NotBefore) && !c.NotBefore.After(cert.NotAfter) {
					times = append(times, c.NotBefore)
				}
			}
		}
		var chains [][]*x509.Certificate
		for i, t := range times {
			var reason string
			chains, reason = v.buildChains(ctx, cert, req.Intermediates, req.Anchors, t, true)
			if i == 0 {
				chainReason = reason
			}
			if len(chains) > 0 {
				chainReason = ""
				break
			}
		}
		for _, c := range chains {
			if chainReason = checkChain(c, req.Purpose); chainReason == "" {
				chain = c
				break
			}
		}
	}
	in.Chain = chain
	chainOK := ""
	if chain != nil {
		anchor := chain[len(chain)-1]
		switch len(chain) {
		case 1:
			chainOK = "is itself anchor " + certName(anchor)
		case 2:
			chainOK = "issued by anchor " + certName(anchor)
		default:
			chainOK = fmt.Sprintf("chains to anchor %s via %d intermediate(s)", certName(anchor), len(chain)-2)
		}
		if !anchor.NotAfter.After(now) {
			chainReason = fmt.Sprintf("anchor %s expired on %s", certName(anchor), formatTime(anchor.NotAfter))
		}
	}
	add(RuleChain, chainReason, chainOK)

	if chain == nil {
		add(RuleRevocation, "not checked: no path to an anchor, so no issuer to verify a CRL or OCSP response with", "")
		return in
	}
	var checked []string
	revReason := ""
	for i := 0; i+1 < len(chain); i++ {
		res := v.revocationStatus(ctx, chain[i], chain[i+1], now)
		switch {
		case res.revoked != "":
			revReason = res.revoked
		case res.unavailable != "":
			revReason = res.unavailable
		case res.checked != "":
			checked = append(checked, res.checked)
		default:
			checked = append(checked, certName(chain[i])+" names no CRL distribution point or OCSP responder")
		}
		if revReason != "" {
			break
		}
	}
	add(RuleRevocation, revReason, strings.Join(checked, "; "))
	return in
}

// keyDescription says what key a certificate holds: "RSA 2048 bits",
// "ECDSA P-256".
func keyDescription(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}
