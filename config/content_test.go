package config

import (
	"strings"
	"testing"
)

func TestContentDefaults(t *testing.T) {
	c := Default()
	if c.Outbound.XDMPolicy() != "never" || !c.Inbound.XDMDocuments || !c.Inbound.CCDAHTML {
		t.Fatalf("defaults: %+v %+v", c.Outbound, c.Inbound)
	}
}

func TestContentKeys(t *testing.T) {
	c, err := Load(write(t, `
[outbound]
xdm = "ccda"
[outbound.xdm_domains]
"partner.example" = "always"
"plain.example" = "never"
[inbound]
xdm_documents = false
ccda_html = false
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbound.XDMPolicy() != "ccda" || c.Outbound.XDMDomains["partner.example"] != "always" || c.Inbound.XDMDocuments || c.Inbound.CCDAHTML {
		t.Fatalf("%+v %+v", c.Outbound, c.Inbound)
	}
	for _, tc := range []struct{ toml, want string }{
		{"[outbound]\nxdm = \"sometimes\"\n", `outbound.xdm = "sometimes"`},
		{"[outbound.xdm_domains]\n\"partner.example\" = \"zip\"\n", `outbound.xdm_domains.partner.example = "zip"`},
		{"[outbound.xdm_domains]\n\"Partner.Example\" = \"ccda\"\n", "not a domain in lower case"},
		{"[inbound]\nxdm_docs = true\n", "unknown keys: inbound.xdm_docs"},
	} {
		if _, err := Load(write(t, tc.toml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.toml, err, tc.want)
		}
	}
}
