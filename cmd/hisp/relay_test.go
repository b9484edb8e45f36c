package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/ops"
)

func TestRelayCommands(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	pw := adminWriteFile(t, tmp, "pw", []byte("an EHR password\n"))
	short := adminWriteFile(t, tmp, "short", []byte("abc\n"))
	ca := testpki.NewCA(t, "EHR client CA")
	caFile := adminWriteFile(t, tmp, "ehr-ca.pem", ca.CertPEM())
	adminOK(t, data, "domain", "add", "hospital.example")
	adminOK(t, data, "domain", "add", "clinic.example")

	out := adminOK(t, data, "relay", "add", "EHR1", "--password-file", pw, "--domain", "hospital.example", "--domain", "Clinic.Example",
		"--from-ip", "10.1.2.0/24", "--from-ip", "192.0.2.7", "--client-cert", caFile)
	for _, want := range []string{"added relay ehr1", "clinic.example, hospital.example", "10.1.2.0/24, 192.0.2.7/32", "1 (CN=EHR client CA,O=hisp tests)"} {
		if !strings.Contains(out, want) {
			t.Errorf("relay add lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("relay add prints more than one line:\n%s", out)
	}
	adminOK(t, data, "relay", "add", "ehr2", "--password-file", pw, "--domain", "clinic.example")

	// The store holds what was given.
	st := openTestStore(t, data)
	rs, err := st.Relays(context.Background())
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Name != "ehr1" || len(rs[0].Domains) != 2 || len(rs[0].Networks) != 2 ||
		rs[0].Networks[1] != netip.MustParsePrefix("192.0.2.7/32") || len(rs[0].ClientCAs) != 1 || !rs[0].ClientCAs[0].Equal(ca.Cert) {
		t.Fatalf("stored relays: %+v", rs)
	}

	// Listing: text and JSON, never the password or its hash.
	out = adminOK(t, data, "relay", "list")
	if !strings.HasPrefix(out, "NAME") {
		t.Errorf("relay list has no header:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("relay list: want a header and 2 lines:\n%s", out)
	}
	for _, want := range []string{"ehr1", "clinic.example, hospital.example", "10.1.2.0/24, 192.0.2.7/32", "1 (CN=EHR client CA,O=hisp tests)"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("relay list line of ehr1 lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(lines[2], "ehr2") || !strings.Contains(lines[2], "any network") || !strings.Contains(lines[2], "0 (none required)") {
		t.Errorf("relay list line of ehr2:\n%s", out)
	}
	if strings.Contains(out, "$2a$") || strings.Contains(out, "an EHR password") {
		t.Errorf("relay list shows the password:\n%s", out)
	}
	out = adminOK(t, data, "relay", "list", "--json")
	var list []ops.RelayInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("relay list --json: %v\n%s", err, out)
	}
	if len(list) != 2 || list[0].Name != "ehr1" || strings.Join(list[0].Domains, ",") != "clinic.example,hospital.example" ||
		strings.Join(list[0].Networks, ",") != "10.1.2.0/24,192.0.2.7/32" || len(list[0].ClientCAs) != 1 ||
		list[0].ClientCAs[0] != "CN=EHR client CA,O=hisp tests" || list[0].Created.IsZero() {
		t.Errorf("relay list --json: %+v", list)
	}
	if list[1].Networks == nil || list[1].ClientCAs == nil || !strings.Contains(out, `"networks": []`) {
		t.Errorf("relay list --json: empty lists are not []:\n%s", out)
	}
	if strings.Contains(out, "$2a$") || strings.Contains(out, "password") {
		t.Errorf("relay list --json shows the password:\n%s", out)
	}

	// Refusals.
	adminFails(t, data, 1, "relay ehr1 already exists", "relay", "add", "ehr1", "--password-file", pw, "--domain", "hospital.example")
	adminFails(t, data, 1, "domain lab.example not found: run hisp domain add lab.example",
		"relay", "add", "ehr3", "--password-file", pw, "--domain", "hospital.example", "--domain", "lab.example")
	adminFails(t, data, 2, "--from-ip \"10.0.0.0/33\"", "relay", "add", "ehr3", "--password-file", pw, "--domain", "hospital.example", "--from-ip", "10.0.0.0/33")
	adminFails(t, data, 2, "--from-ip \"not-an-ip\"", "relay", "add", "ehr3", "--password-file", pw, "--domain", "hospital.example", "--from-ip", "not-an-ip")
	adminFails(t, data, 2, "need --domain", "relay", "add", "ehr3", "--password-file", pw)
	adminFails(t, data, 2, "need --password-file", "relay", "add", "ehr3", "--domain", "hospital.example")
	adminFails(t, data, 1, "shorter than 8", "relay", "add", "ehr3", "--password-file", short, "--domain", "hospital.example")
	adminFails(t, data, 1, "no such file", "relay", "add", "ehr3", "--password-file", filepath.Join(tmp, "missing"), "--domain", "hospital.example")
	adminFails(t, data, 1, "client CA", "relay", "add", "ehr3", "--password-file", pw, "--domain", "hospital.example", "--client-cert", filepath.Join(tmp, "missing.pem"))
	adminFails(t, data, 1, "client CA", "relay", "add", "ehr3", "--password-file", pw, "--domain", "hospital.example", "--client-cert", pw)
	adminFails(t, data, 1, "relay name", "relay", "add", "ehr@hospital.example", "--password-file", pw, "--domain", "hospital.example")
	if out := adminOK(t, data, "relay", "list"); strings.Contains(out, "ehr3") {
		t.Errorf("a refused relay was added:\n%s", out)
	}

	// Removal.
	if out := adminOK(t, data, "relay", "remove", "EHR1"); !strings.Contains(out, "removed relay ehr1") {
		t.Errorf("relay remove:\n%s", out)
	}
	adminFails(t, data, 1, "relay ehr1 not found", "relay", "remove", "ehr1")
	out = adminOK(t, data, "relay", "list", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Name != "ehr2" {
		t.Errorf("relay list after remove: %v\n%s", err, out)
	}
}
