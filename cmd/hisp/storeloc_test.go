package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/pgtest"
)

// runCLIEnv is runCLI with an environment.
func runCLIEnv(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIWith(t, nil, func(k string) string { return env[k] }, args...)
}

// TestAdminCommandsUseTheConfigsStore: admin commands reach the store of
// hisp serve's config (--config, else $HISP_CONFIG): its data directory, or
// the PostgreSQL database of [store] url ($HISP_STORE_URL over it), with
// the master key file it names; --data and $HISP_DATA still name the data
// directory.
func TestAdminCommandsUseTheConfigsStore(t *testing.T) {
	tmp := t.TempDir()
	cfgData := filepath.Join(tmp, "from-config")
	cfg := filepath.Join(tmp, "hisp.toml")
	if err := os.WriteFile(cfg, []byte("data = \""+cfgData+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(env map[string]string, args ...string) string {
		t.Helper()
		code, out, errOut := runCLIEnv(t, env, args...)
		if code != 0 {
			t.Fatalf("hisp %v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	must(nil, "domain", "add", "a.example", "--config", cfg)
	if _, err := os.Stat(filepath.Join(cfgData, "hisp.db")); err != nil {
		t.Fatalf("domain add --config did not use the config's data: %v", err)
	}
	if out := must(map[string]string{"HISP_CONFIG": cfg}, "domain", "list"); !strings.Contains(out, "a.example") {
		t.Fatalf("HISP_CONFIG: domain list: %s", out)
	}
	other := filepath.Join(tmp, "other")
	must(map[string]string{"HISP_CONFIG": cfg}, "domain", "add", "b.example", "--data", other)
	if out := must(nil, "domain", "list", "--data", other); !strings.Contains(out, "b.example") || strings.Contains(out, "a.example") {
		t.Fatalf("--data over the config: %s", out)
	}
	// A config that does not load is a setup error.
	if code, _, errOut := runCLIEnv(t, nil, "domain", "list", "--config", filepath.Join(tmp, "missing.toml")); code != 2 {
		t.Fatalf("missing config: exit %d (%s), want 2", code, errOut)
	}

	// PostgreSQL: the config's [store] url and master_key_file.
	url := pgtest.URL(t)
	keyFile := filepath.Join(tmp, "keys", "hisp-master.key")
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	pgCfg := filepath.Join(tmp, "pg.toml")
	body := "data = \"" + filepath.Join(tmp, "node1") + "\"\n[store]\nurl = \"" + url + "\"\nmaster_key_file = \"" + keyFile + "\"\n"
	if err := os.WriteFile(pgCfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLIEnv(t, nil, "domain", "list", "--config", pgCfg); code != 2 || !strings.Contains(errOut, "no hisp data") {
		t.Fatalf("empty database: exit %d (%s), want 2 and no hisp data", code, errOut)
	}
	must(nil, "domain", "add", "pg.example", "--config", pgCfg)
	if _, err := os.Stat(keyFile); err != nil {
		t.Fatalf("master key not made where master_key_file says: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "node1", "hisp.db")); err == nil {
		t.Fatal("a PostgreSQL store made a SQLite database too")
	}
	// Another node's data directory, the same database and key file.
	env := map[string]string{"HISP_STORE_URL": url}
	if code, _, errOut := runCLIEnv(t, env, "domain", "list", "--data", filepath.Join(tmp, "node2")); code == 0 || !strings.Contains(errOut, "master key") {
		t.Fatalf("without the master key file: exit %d (%s), want a refusal naming the master key", code, errOut)
	}
	if out := must(map[string]string{"HISP_CONFIG": pgCfg}, "domain", "list", "--data", filepath.Join(tmp, "node2")); !strings.Contains(out, "pg.example") {
		t.Fatalf("second node: domain list: %s", out)
	}
	// A password in the URL never appears in messages.
	bad := "postgres://hisp:s3cret-pw@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	if code, _, errOut := runCLIEnv(t, map[string]string{"HISP_STORE_URL": bad}, "domain", "list", "--data", other); code == 0 || strings.Contains(errOut, "s3cret-pw") {
		t.Fatalf("unreachable store: exit %d, message %q", code, errOut)
	}
}
