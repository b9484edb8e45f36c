package store

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestRelays(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	_, err := s.AddDomain(ctx, "lab.example")
	tcheck(t, err, "add domain")
	r, err := s.AddRelay(ctx, Relay{Name: "EHR-Prod", Domains: []string{"Lab.example", "clinic.example", "lab.example"},
		Networks: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16")}}, "relay password 1")
	tcheck(t, err, "add relay")
	if r.Name != "ehr-prod" || len(r.Domains) != 2 || r.Domains[0] != "clinic.example" || r.Networks[0].String() != "10.1.0.0/16" {
		t.Fatalf("relay %+v", r)
	}
	for _, tc := range []struct {
		name   string
		relay  Relay
		pw     string
		reason error
	}{
		{"duplicate", Relay{Name: "ehr-prod", Domains: []string{"lab.example"}}, "relay password 1", ErrExists},
		{"unknown domain", Relay{Name: "other", Domains: []string{"nowhere.example"}}, "relay password 1", ErrNotFound},
		{"address as name", Relay{Name: "a@lab.example", Domains: []string{"lab.example"}}, "relay password 1", nil},
		{"no domain", Relay{Name: "other"}, "relay password 1", nil},
		{"short password", Relay{Name: "other", Domains: []string{"lab.example"}}, "short", nil},
	} {
		_, err := s.AddRelay(ctx, tc.relay, tc.pw)
		if err == nil || (tc.reason != nil && !errors.Is(err, tc.reason)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := s.Relays(ctx); err != nil {
		t.Fatal(err)
	}

	got, err := s.CheckRelayPassword(ctx, "ehr-PROD", "relay password 1")
	tcheck(t, err, "relay login")
	if !got.SendsFor("dr.who@LAB.example") || got.SendsFor("x@elsewhere.example") || len(got.Networks) != 1 {
		t.Fatalf("relay as checked %+v", got)
	}
	// Read without a password (a client certificate's check before it):
	// the same account.
	if r, err := s.Relay(ctx, " EHR-prod "); err != nil || r.ID != got.ID || len(r.Networks) != 1 || !r.SendsFor("dr.who@lab.example") {
		t.Fatalf("relay by name: %+v, %v", r, err)
	}
	if _, err := s.Relay(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown relay: %v", err)
	}
	for _, bad := range [][2]string{{"ehr-prod", "wrong password"}, {"nobody", "relay password 1"}, {"alice@clinic.example", "relay password 1"}} {
		if _, err := s.CheckRelayPassword(ctx, bad[0], bad[1]); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("login %s: %v", bad[0], err)
		}
	}
	// A relay name is no address login, nor the other way round.
	if _, err := s.CheckPassword(ctx, "ehr-prod", "relay password 1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("relay name as an address login: %v", err)
	}

	// Removing a domain takes it from the relay.
	_, err = s.RemoveDomain(ctx, "lab.example")
	tcheck(t, err, "remove domain")
	if got, _ := s.CheckRelayPassword(ctx, "ehr-prod", "relay password 1"); got.SendsFor("x@lab.example") {
		t.Fatal("relay still sends for a removed domain")
	}
	tcheck(t, s.RemoveRelay(ctx, "ehr-prod"), "remove relay")
	if err := s.RemoveRelay(ctx, "ehr-prod"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove again: %v", err)
	}
	if rs, _ := s.Relays(ctx); len(rs) != 0 {
		t.Fatalf("relays left: %+v", rs)
	}
}

// TestTakesMail: a local address takes mail, and of unknown addresses only
// one a relay that still sends for its domain sent as; an address's own
// tracked mail does not count once the address is gone.
func TestTakesMail(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	_, err := s.AddRelay(ctx, Relay{Name: "ehr", Domains: []string{"clinic.example"}}, "relay password 1")
	tcheck(t, err, "add relay")
	now := time.Now()
	for _, m := range []TrackedMessage{
		{MessageID: "<r1@clinic.example>", Sender: "dr.who@clinic.example", Relay: "ehr", Sent: now},
		{MessageID: "<a1@clinic.example>", Sender: "gone@clinic.example", Sent: now},
	} {
		m.Recipients = []TrackedRecipient{{Address: "bob@b.example", ProcessedDeadline: now.Add(time.Hour)}}
		_, err := s.TrackMessage(ctx, m)
		tcheck(t, err, "track")
	}
	for addr, want := range map[string]bool{"dr.who@clinic.example": true, "DR.WHO@clinic.example": true,
		"alice@clinic.example": true, "gone@clinic.example": false, "never@clinic.example": false, "not an address": false} {
		if got, err := s.TakesMail(ctx, addr); err != nil || got != want {
			t.Errorf("TakesMail(%s) = %v, %v; want %v", addr, got, err, want)
		}
	}
	tcheck(t, s.RemoveRelay(ctx, "ehr"), "remove relay")
	if got, _ := s.TakesMail(ctx, "dr.who@clinic.example"); got {
		t.Error("a removed relay's address still takes mail")
	}
}
