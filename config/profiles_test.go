package config

import (
	"strings"
	"testing"
)

// TestOutboundProfiles: the [outbound] algorithm keys and per-domain
// profiles load, keep today's defaults when absent, and bad values are
// refused naming the key.
func TestOutboundProfiles(t *testing.T) {
	c, err := Load(write(t, `
[outbound]
cipher = "aes256-cbc"
[outbound.profiles."ri.example"]
oaep = "sha1"
cipher = "aes128-cbc"
[outbound.profiles."new.example"]
cipher = "aes256-gcm"
digest = "sha512"
`))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Outbound
	if o.Cipher != "aes256-cbc" || o.OAEP != "sha256" || o.Digest != "sha256" {
		t.Errorf("[outbound] profile %+v", o.Profile)
	}
	if p := o.Profiles["ri.example"]; p != (Profile{Cipher: "aes128-cbc", OAEP: "sha1"}) {
		t.Errorf("ri.example %+v", p)
	}
	if p := o.Profiles["new.example"]; p != (Profile{Cipher: "aes256-gcm", Digest: "sha512"}) {
		t.Errorf("new.example %+v", p)
	}

	d := Default()
	if d.Outbound.Profile != (Profile{Cipher: "aes128-cbc", OAEP: "sha256", Digest: "sha256"}) || len(d.Outbound.Profiles) != 0 {
		t.Errorf("defaults changed: %+v", d.Outbound.Profile)
	}

	for _, bad := range []struct{ toml, want string }{
		{"[outbound]\ncipher = \"3des\"", `outbound.cipher = "3des"`},
		{"[outbound]\noaep = \"sha384\"", `outbound.oaep = "sha384"`},
		{"[outbound]\ndigest = \"sha1\"", `outbound.digest = "sha1"`},
		{"[outbound.profiles.\"p.example\"]\ncipher = \"aes192-cbc\"", `outbound.profiles."p.example".cipher`},
		{"[outbound.profiles.\"p.example\"]\nmode = \"x\"", `unknown keys: outbound.profiles."p.example".mode`},
		{"[listen]\nldap = \"389\"", `listen.ldap = "389"`},
	} {
		_, err := Load(write(t, bad.toml))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want it to name %s", bad.toml, err, bad.want)
		}
	}
}
