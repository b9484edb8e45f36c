package config

import (
	"strings"
	"testing"
	"time"
)

// TestTrustRevocation: defer is the default with a 24h grace; the three
// modes load; a bad mode or grace is refused naming the key.
func TestTrustRevocation(t *testing.T) {
	d := Default()
	if d.Trust.Revocation != "defer" || d.Trust.RevocationGrace.Duration != 24*time.Hour || d.Trust.RefetchAfter.Duration != time.Minute {
		t.Errorf("defaults %+v", d.Trust)
	}
	for _, mode := range []string{"defer", "refuse", "allow"} {
		c, err := Load(write(t, "[trust]\nrevocation = \""+mode+"\"\nrevocation_grace = \"2h\"\nrefetch_after = \"10s\"\n"))
		if err != nil || c.Trust.Revocation != mode || c.Trust.RevocationGrace.Duration != 2*time.Hour || c.Trust.RefetchAfter.Duration != 10*time.Second {
			t.Errorf("%s: %+v, %v", mode, c.Trust, err)
		}
	}
	for toml, want := range map[string]string{
		"[trust]\nrevocation = \"later\"\n":    "trust.revocation",
		"[trust]\nrevocation_grace = \"0s\"\n": "trust.revocation_grace",
		"[trust]\nrefetch_after = \"-1s\"\n":   "trust.refetch_after",
	} {
		if _, err := Load(write(t, toml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want it to name %s", toml, err, want)
		}
	}
}
