package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/store"
)

// TestBackup: hisp backup copies the data directory while a store handle
// (a running server) has it open; the copy opens on its own, its private
// keys decrypt with the copied master key, and it holds nothing written
// after it was taken.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	pw := adminWriteFile(t, tmp, "pw", []byte("a password of alice\n"))
	adminOK(t, data, "domain", "add", "hospital.example")
	adminOK(t, data, "address", "add", "alice@hospital.example", "--password-file", pw)
	adminOK(t, data, "cert", "issue", "alice@hospital.example")

	live := openTestStore(t, data) // as a running hisp serve would
	defer live.Close()
	bk := filepath.Join(tmp, "backup")
	out := adminOK(t, data, "backup", bk)
	if !strings.Contains(out, store.DBFile) || !strings.Contains(out, store.MasterKeyFile) {
		t.Fatalf("backup: %q", out)
	}
	if _, err := live.AddDomain(ctx, "later.example"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"", store.DBFile, store.MasterKeyFile} {
		fi, err := os.Stat(filepath.Join(bk, f))
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			t.Errorf("%s/%s has mode %v", bk, f, mode)
		}
	}

	st := openTestStore(t, bk)
	defer st.Close()
	if _, err := st.Domain(ctx, "hospital.example"); err != nil {
		t.Fatalf("the backup lacks the domain: %v", err)
	}
	if _, err := st.Domain(ctx, "later.example"); err == nil {
		t.Fatal("the backup holds a domain added after it")
	}
	cs, err := st.Certificates(ctx, store.CertFilter{Owner: "alice@hospital.example"})
	if err != nil || len(cs) != 1 || !cs[0].HasKey {
		t.Fatalf("certificates in the backup: %+v %v", cs, err)
	}
	if _, err := st.PrivateKey(ctx, cs[0].ID); err != nil {
		t.Fatalf("the backup's private key does not open: %v", err)
	}
	adminFails(t, data, 1, "must not exist", "backup", bk)
}
