package main

import (
	"context"
	"fmt"

	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/store"
)

func TestAddressCommands(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("a long password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, nil, "domain", "add", "hospital.example", data) // makes the store
	if code, _, stderr := runCLI(t, nil, "address", "add", "bob@clinic.example", "--password-file", pw, data); code != 1 || !strings.Contains(stderr, "hisp domain add clinic.example") {
		t.Fatalf("unknown domain: exit %d %s", code, stderr)
	}
	runCLI(t, nil, "domain", "add", "clinic.example", data)
	if code, _, stderr := runCLI(t, nil, "address", "add", "Bob@Clinic.example", "--password-file", pw, data); code != 0 {
		t.Fatalf("add: %s", stderr)
	}
	if code, _, _ := runCLI(t, nil, "address", "add", "bob@clinic.example", "--password-file", pw, data); code != 1 {
		t.Fatal("duplicate added")
	}
	if code, _, _ := runCLI(t, nil, "address", "add", "amy@clinic.example", "--password-file", short, data); code != 1 {
		t.Fatal("short password accepted")
	}
	if code, _, _ := runCLI(t, nil, "address", "add", "amy@clinic.example", data); code != 2 {
		t.Fatal("missing --password-file is not a usage error")
	}
	code, out, _ := runCLI(t, nil, "address", "list", data)
	if code != 0 || !strings.Contains(out, "bob@clinic.example") || strings.Contains(out, "amy@") || strings.Contains(out, "a long password") {
		t.Fatalf("list: %s", out)
	}
	code, out, _ = runCLI(t, nil, "address", "list", "clinic.example", "--json", data)
	if code != 0 || !strings.Contains(out, `"login": true`) {
		t.Fatalf("list --json: %s", out)
	}
	if code, _, stderr := runCLI(t, nil, "address", "remove", "bob@clinic.example", data); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, _ := runCLI(t, nil, "address", "remove", "bob@clinic.example", data); code != 1 {
		t.Fatal("removed twice")
	}
}

func TestQueueCommands(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	runCLI(t, nil, "domain", "add", "hospital.example", data)
	st := openTestStore(t, dir)
	id, err := st.Enqueue(context.Background(), store.QueuedMessage{MessageID: "<q1@hospital.example>", MailFrom: "alice@hospital.example",
		Origin: "submission 192.0.2.7:4711 relay ehr", Data: []byte("sealed"), Recipients: []store.QueuedRecipient{{Address: "bob@clinic.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, out, stderr := runCLI(t, nil, "queue", "list", data)
	if code != 0 || !strings.Contains(out, "<q1@hospital.example>") || !strings.Contains(out, "bob@clinic.example") {
		t.Fatalf("list: %d %s %s", code, out, stderr)
	}
	if code, out, _ := runCLI(t, nil, "queue", "list", "--json", data); code != 0 || !strings.Contains(out, `"state": "queued"`) ||
		!strings.Contains(out, `"origin": "submission 192.0.2.7:4711 relay ehr"`) {
		t.Fatalf("list --json: %s", out)
	}
	if code, _, stderr := runCLI(t, nil, "queue", "retry", fmt.Sprint(id), data); code != 0 {
		t.Fatalf("retry: %s", stderr)
	}
	if code, _, stderr := runCLI(t, nil, "queue", "drop", fmt.Sprint(id), data); code != 0 {
		t.Fatalf("drop: %s", stderr)
	}
	if code, _, _ := runCLI(t, nil, "queue", "drop", fmt.Sprint(id), data); code != 1 {
		t.Fatal("dropped twice")
	}
	if code, _, _ := runCLI(t, nil, "queue", "retry", "x", data); code != 2 {
		t.Fatal("bad id is not a usage error")
	}
}

func TestAddressQuota(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	pw := adminWriteFile(t, tmp, "pw", []byte("a password of alice\n"))
	adminOK(t, data, "domain", "add", "hospital.example")
	adminOK(t, data, "address", "add", "alice@hospital.example", "--password-file", pw)
	if out := adminOK(t, data, "address", "quota", "alice@hospital.example"); !strings.Contains(out, "quota default ([limits] mailbox_quota of hisp serve), 0 bytes in use") {
		t.Errorf("quota before: %q", out)
	}
	if out := adminOK(t, data, "address", "quota", "Alice@hospital.example", "2GB"); !strings.Contains(out, "quota 2.0 GB") {
		t.Errorf("quota 2GB: %q", out)
	}
	adminFails(t, data, 2, "size", "address", "quota", "alice@hospital.example", "lots")
	if out := adminOK(t, data, "address", "quota", "alice@hospital.example", "500MB"); !strings.Contains(out, "quota 500.0 MB") {
		t.Errorf("quota set: %q", out)
	}
	st := openTestStore(t, data)
	a, err := st.MailAccount(context.Background(), "alice@hospital.example")
	st.Close()
	if err != nil || a.Quota != 500<<20 {
		t.Fatalf("stored quota %+v %v", a, err)
	}
	if out := adminOK(t, data, "address", "quota", "alice@hospital.example", "0"); !strings.Contains(out, "quota none") {
		t.Errorf("quota removed: %q", out)
	}
	if out := adminOK(t, data, "address", "quota", "alice@hospital.example", "default"); !strings.Contains(out, "quota default") {
		t.Errorf("quota back to the default: %q", out)
	}
	adminFails(t, data, 1, "not found", "address", "quota", "bob@hospital.example", "1MB")
}
