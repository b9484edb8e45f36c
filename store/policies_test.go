package store

import (
	"context"
	"errors"
	"testing"
)

// TestTrustPolicies: rules are added per domain with unique names, listed,
// removed by name, and go with their domain.
func TestTrustPolicies(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	_, err = s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	p, err := s.AddTrustPolicy(ctx, TrustPolicy{Domain: "A.example", Name: "rsa", Direction: DirectionIn, Expr: "key-type(rsa)"})
	tcheck(t, err, "add")
	if p.ID == 0 || p.Domain != "a.example" {
		t.Fatalf("added %+v", p)
	}
	if _, err := s.AddTrustPolicy(ctx, TrustPolicy{Domain: "a.example", Name: "rsa", Direction: DirectionOut, Expr: "x"}); !errors.Is(err, ErrExists) {
		t.Errorf("same name twice: %v", err)
	}
	if _, err := s.AddTrustPolicy(ctx, TrustPolicy{Domain: "b.example", Name: "rsa", Direction: DirectionIn, Expr: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown domain: %v", err)
	}
	if _, err := s.AddTrustPolicy(ctx, TrustPolicy{Domain: "a.example", Name: "x", Direction: "sideways", Expr: "x"}); err == nil {
		t.Error("bad direction taken")
	}
	list, err := s.TrustPolicies(ctx, "a.example")
	tcheck(t, err, "list")
	if len(list) != 1 || list[0].Expr != "key-type(rsa)" || list[0].Direction != DirectionIn {
		t.Fatalf("list %+v", list)
	}
	if _, err := s.RemoveTrustPolicy(ctx, "a.example", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove unknown: %v", err)
	}
	if _, err := s.RemoveTrustPolicy(ctx, "a.example", "rsa"); err != nil {
		t.Fatal(err)
	}
	_, err = s.AddTrustPolicy(ctx, TrustPolicy{Domain: "a.example", Name: "again", Direction: DirectionBoth, Expr: "key-type(rsa)"})
	tcheck(t, err, "add again")
	_, err = s.RemoveDomain(ctx, "a.example")
	tcheck(t, err, "remove domain")
	if list, _ := s.TrustPolicies(ctx, ""); len(list) != 0 {
		t.Errorf("rules outlived their domain: %+v", list)
	}
}
