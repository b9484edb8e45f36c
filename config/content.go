package config

import (
	"fmt"
	"strings"
)

// Inbound configures the clinical content of received messages: what hisp
// adds beside the parts that came (which stay byte for byte). Whatever is
// wrong with a payload is noted in the X-Hisp-Verification field and the
// audit log; a message is never refused for its payload.
type Inbound struct {
	// XDMDocuments adds each document of an IHE XDM package beside the
	// zip as an attachment of its own, so that a clinician opens a C-CDA
	// without unzipping; default true.
	XDMDocuments bool `toml:"xdm_documents"`
	// CCDAHTML adds a text/html view of each C-CDA document (header and
	// each section's narrative, escaped, no scripts or remote
	// references); default true.
	CCDAHTML bool `toml:"ccda_html"`
}

// XDMPolicies are the values of outbound.xdm and outbound.xdm_domains.
var XDMPolicies = []string{"never", "ccda", "always"}

func validXDM(v string) bool {
	for _, p := range XDMPolicies {
		if v == p {
			return true
		}
	}
	return false
}

// validateContent checks outbound.xdm and outbound.xdm_domains.
func (c *Config) validateContent() []error {
	var errs []error
	if c.Outbound.XDM != "" && !validXDM(c.Outbound.XDM) {
		errs = append(errs, fmt.Errorf("outbound.xdm = %q: want never, ccda or always", c.Outbound.XDM))
	}
	for d, v := range c.Outbound.XDMDomains {
		if !validXDM(v) {
			errs = append(errs, fmt.Errorf("outbound.xdm_domains.%s = %q: want never, ccda or always", d, v))
		}
		if d == "" || d != strings.ToLower(strings.TrimSuffix(d, ".")) || strings.ContainsAny(d, "@ /") {
			errs = append(errs, fmt.Errorf("outbound.xdm_domains: %q is not a domain in lower case", d))
		}
	}
	return errs
}

// XDMPolicy returns outbound.xdm, "never" when unset.
func (o Outbound) XDMPolicy() string {
	if o.XDM == "" {
		return "never"
	}
	return o.XDM
}
