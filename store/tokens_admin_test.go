package store

import (
	"context"
	"testing"
)

// TestAdminAPIToken: an admin token says so when checked and listed; it
// cannot be limited to domains.
func TestAdminAPIToken(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	_, err := s.AddDomain(ctx, "a.example")
	tcheck(t, err, "domain")
	if _, _, err := s.CreateAPITokenScope(ctx, "both", true, []string{"a.example"}); err == nil {
		t.Fatal("an admin token limited to a domain was made")
	}
	_, secret, err := s.CreateAPITokenScope(ctx, "ops", true, nil)
	tcheck(t, err, "admin token")
	_, plain, err := s.CreateAPIToken(ctx, "ehr", "a.example")
	tcheck(t, err, "scoped token")
	got, err := s.CheckAPIToken(ctx, secret)
	tcheck(t, err, "check")
	if !got.Admin || got.Domains != nil {
		t.Fatalf("admin token checked as %+v", got)
	}
	got, err = s.CheckAPIToken(ctx, plain)
	tcheck(t, err, "check")
	if got.Admin {
		t.Fatalf("scoped token checked as admin: %+v", got)
	}
	list, err := s.APITokens(ctx)
	tcheck(t, err, "list")
	if len(list) != 2 || list[0].Name != "ehr" || list[0].Admin || list[1].Name != "ops" || !list[1].Admin {
		t.Fatalf("list %+v", list)
	}
}
