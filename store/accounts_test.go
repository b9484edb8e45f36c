package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPasswords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := testOpen(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddDomain(ctx, "clinic.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddAddress(ctx, "Bob@Clinic.example"); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Address(ctx, "bob@clinic.example"); a.Login {
		t.Fatal("new address has a password")
	}
	if _, err := s.CheckPassword(ctx, "bob@clinic.example", ""); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("no password set: %v", err)
	}
	if err := s.SetPassword(ctx, "bob@clinic.example", "short"); err == nil {
		t.Fatal("short password accepted")
	}
	if err := s.SetPassword(ctx, "nobody@clinic.example", "long enough pw"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown address: %v", err)
	}
	if err := s.SetPassword(ctx, "bob@clinic.example", "correct horse"); err != nil {
		t.Fatal(err)
	}
	addr, err := s.CheckPassword(ctx, "BOB@clinic.example", "correct horse")
	if err != nil || addr != "bob@clinic.example" {
		t.Fatalf("login: %q %v", addr, err)
	}
	for _, c := range [][2]string{{"bob@clinic.example", "wrong horse"}, {"eve@clinic.example", "correct horse"}, {"not an address", "x"}} {
		if _, err := s.CheckPassword(ctx, c[0], c[1]); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%v: %v", c, err)
		}
	}
	// Only a hash is stored.
	s.Close()
	for _, f := range []string{DBFile, DBFile + "-wal"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.Contains(string(b), "correct horse") {
			t.Fatalf("%s holds the clear-text password", f)
		}
	}
}

// TestOpenRelativeDir: the default data directory is relative (./hisp-data).
func TestOpenRelativeDir(t *testing.T) {
	sqliteOnly(t)
	t.Chdir(t.TempDir())
	s, err := Open(context.Background(), "./hisp-data")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddDomain(context.Background(), "rel.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("hisp-data", DBFile)); err != nil {
		t.Fatal(err)
	}
}
