package imap

import (
	"strings"
	"testing"
)

// TestAppendOverDefaultQuota: an account without a quota of its own gets
// the store's default; APPEND over it is NO [OVERQUOTA] and the session
// goes on.
func TestAppendOverDefaultQuota(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.store.SetDefaultQuota(3000)
	rc := e.loggedIn(alice, alicePW)
	small := "Subject: small\r\n\r\n" + strings.Repeat("x", 1000) + "\r\n"
	rc.ok("APPEND INBOX {%d+}\r\n%s", len(small), small)
	big := "Subject: big\r\n\r\n" + strings.Repeat("y", 4000) + "\r\n"
	if st := rc.no("APPEND INBOX {%d+}\r\n%s", len(big), big); !strings.HasPrefix(st, "NO [OVERQUOTA]") {
		t.Fatalf("APPEND over the default quota: %s", st)
	}
	rc.ok("APPEND INBOX {%d+}\r\n%s", len(small), small)
	if st := rc.no("APPEND INBOX {%d+}\r\n%s", len(small), small); !strings.HasPrefix(st, "NO [OVERQUOTA]") {
		t.Fatalf("third small APPEND: %s", st)
	}
	rc.ok("NOOP")
}
