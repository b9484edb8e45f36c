package store

import (
	"context"
	"errors"
	"testing"
)

func TestAdmins(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	a, err := s.AddAdmin(ctx, "Ops", "admin password")
	tcheck(t, err, "add admin")
	if a.Name != "ops" || a.ID == 0 {
		t.Fatalf("admin %+v", a)
	}
	if _, err := s.AddAdmin(ctx, "ops", "admin password"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range [][2]string{{"", "admin password"}, {"a b", "admin password"}, {"x", "short"}} {
		if _, err := s.AddAdmin(ctx, bad[0], bad[1]); err == nil {
			t.Errorf("admin %q with password %q taken", bad[0], bad[1])
		}
	}
	if _, err := s.CheckAdminPassword(ctx, "OPS", "admin password"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{{"ops", "wrong password"}, {"nobody", "admin password"}} {
		if _, err := s.CheckAdminPassword(ctx, bad[0], bad[1]); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("login %s: %v", bad[0], err)
		}
	}
	// An admin is no mail login.
	if _, err := s.CheckPassword(ctx, "ops", "admin password"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("admin as a mail login: %v", err)
	}
	if as, err := s.Admins(ctx); err != nil || len(as) != 1 {
		t.Fatalf("admins %+v, %v", as, err)
	}
	tcheck(t, s.RemoveAdmin(ctx, "ops"), "remove")
	if err := s.RemoveAdmin(ctx, "ops"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove again: %v", err)
	}
}
