package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminAccountCommands(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	pw := adminWriteFile(t, tmp, "pw", []byte("an admin password\n"))
	short := adminWriteFile(t, tmp, "short", []byte("abc\n"))
	adminFails(t, data, 2, "no hisp data in", "admin", "add", "Ops", "--password-file", pw)
	openTestStore(t, data)

	if out := adminOK(t, data, "admin", "add", "Ops", "--password-file", pw); !strings.Contains(out, "added admin ops") {
		t.Errorf("admin add: %q", out)
	}
	adminFails(t, data, 1, "exists", "admin", "add", "ops", "--password-file", pw)
	adminFails(t, data, 1, "password", "admin", "add", "other", "--password-file", short)
	adminFails(t, data, 2, "--password-file", "admin", "add", "other")

	out := adminOK(t, data, "admin", "list")
	if !strings.Contains(out, "ops") || strings.Contains(out, "$2a$") {
		t.Errorf("admin list:\n%s", out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(adminOK(t, data, "admin", "list", "--json")), &list); err != nil || len(list) != 1 || list[0]["name"] != "ops" {
		t.Fatalf("admin list --json: %v %v", list, err)
	}
	adminOK(t, data, "admin", "remove", "ops")
	adminFails(t, data, 1, "not found", "admin", "remove", "ops")
}
