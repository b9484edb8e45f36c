package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestCredentialCache: a login that passed its bcrypt check passes again
// without one; a wrong password is checked every time and never kept; a
// password changed by another process, or an expired entry, misses at
// once; a cache turned off keeps nothing.
func TestCredentialCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	_, err := s.AddDomain(ctx, "clinic.example")
	tcheck(t, err, "add domain")
	_, err = s.AddAddress(ctx, "alice@clinic.example")
	tcheck(t, err, "add address")
	tcheck(t, s.SetPassword(ctx, "alice@clinic.example", "first password"), "set password")
	check := func(password string, wantOK bool, wantCached, wantHashed uint64) {
		t.Helper()
		c0, h0 := s.PasswordChecks()
		_, err := s.CheckPassword(ctx, "Alice@Clinic.Example", password)
		if ok := err == nil; ok != wantOK {
			t.Fatalf("password %q: %v", password, err)
		}
		if err != nil && !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("password %q: %v", password, err)
		}
		c1, h1 := s.PasswordChecks()
		if c1-c0 != wantCached || h1-h0 != wantHashed {
			t.Fatalf("password %q: %d cached and %d hashed checks, want %d and %d", password, c1-c0, h1-h0, wantCached, wantHashed)
		}
	}
	check("first password", true, 0, 1)
	check("first password", true, 1, 0)
	check("first password", true, 1, 0)
	check("wrong password", false, 0, 1)
	check("wrong password", false, 0, 1) // failures are never kept

	// Another process (an admin command) changes the password.
	other := openTest(t, dir)
	tcheck(t, other.SetPassword(ctx, "alice@clinic.example", "second password"), "set password elsewhere")
	check("first password", false, 0, 1)
	check("second password", true, 0, 1)
	check("second password", true, 1, 0)

	// Entries expire.
	s.creds.now = func() time.Time { return time.Now().Add(DefaultCredentialCacheTTL + time.Second) }
	check("second password", true, 0, 1)
	s.creds.now = time.Now

	// A removed account fails at once.
	tcheck(t, other.RemoveAddress(ctx, "alice@clinic.example"), "remove elsewhere")
	check("second password", false, 0, 1)
	_, err = s.AddAddress(ctx, "alice@clinic.example")
	tcheck(t, err, "add address again")
	tcheck(t, s.SetPassword(ctx, "alice@clinic.example", "second password"), "set password again")
	check("second password", true, 0, 1)

	// Off: every check hashes.
	s.SetCredentialCache(0)
	check("second password", true, 0, 1)
	check("second password", true, 0, 1)
}

// TestCredentialCacheConcurrent: clients logging in at once with the same
// password cost one bcrypt check, whatever its answer.
func TestCredentialCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	_, err := s.AddDomain(ctx, "clinic.example")
	tcheck(t, err, "add domain")
	_, err = s.AddAddress(ctx, "bob@clinic.example")
	tcheck(t, err, "add address")
	tcheck(t, s.SetPassword(ctx, "bob@clinic.example", "bob password"), "set password")
	for _, c := range []struct {
		password string
		ok       bool
	}{{"bob password", true}, {"not bob's", false}} {
		_, h0 := s.PasswordChecks()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.CheckPassword(ctx, "bob@clinic.example", c.password)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if (err == nil) != c.ok {
				t.Fatalf("password %q: %v", c.password, err)
			}
		}
		// Most arrive while the first check runs; a few may come after it
		// (then a cached success, or a failure checked again).
		if _, h1 := s.PasswordChecks(); c.ok && h1-h0 != 1 {
			t.Errorf("password %q: %d bcrypt checks for 8 logins at once", c.password, h1-h0)
		}
	}
}
