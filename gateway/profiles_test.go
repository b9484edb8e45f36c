package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/config"
)

// TestOutboundProfileEndToEnd: the hospital sends one message to a partner
// with an [outbound.profiles] entry (AES-256-GCM, RSA-OAEP with SHA-1,
// SHA-384) and to a local colleague. Two copies are queued; the partner's
// copy on the wire is what openssl opens with the partner's key, and the
// partner's hisp reports those algorithms; the colleague's copy has the
// defaults.
func TestOutboundProfileEndToEnd(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	colleague, _ := a.addUser(t, "carl")
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	tp, tapAddr := startTap(t, b.addrs["smtp"])
	a.start(t, dns, map[string]string{"clinic.example": tapAddr}, func(c *config.Config) {
		c.Outbound.Profiles = map[string]config.Profile{"Clinic.Example": {Cipher: "aes256-gcm", OAEP: "sha1", Digest: "sha384"}}
	})

	msg := plainMessage(a.user, b.user+", "+colleague, "profile-1@hospital.example", "two profiles")
	if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user, colleague}, msg); refused != "" {
		t.Fatalf("submission refused: %s", refused)
	}
	got := b.waitMailbox(t, b.user, "INBOX", 1)[0]
	for _, want := range []string{"cipher=aes256-gcm", "key-transport=rsa-oaep-sha1", "digest=sha384"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("partner's verification header lacks %s:\n%.800s", want, got)
		}
	}
	local := a.waitMailbox(t, colleague, "INBOX", 1)[0]
	for _, want := range []string{"cipher=aes128-cbc", "key-transport=rsa-oaep-sha256", "digest=sha256"} {
		if !bytes.Contains(local, []byte(want)) {
			t.Errorf("colleague's verification header lacks %s:\n%.800s", want, local)
		}
	}
	var copies int
	for _, q := range a.queued(t) {
		if q.MessageID == "<profile-1@hospital.example>" {
			copies++
			if len(q.Recipients) != 1 {
				t.Errorf("queued copy for %d recipients", len(q.Recipients))
			}
		}
	}
	if copies != 2 {
		t.Errorf("%d queued copies, want one per profile", copies)
	}

	waitFor(t, "the tap saw the message", func() bool { return len(tp.messages()) >= 1 })
	wire := tp.messages()[0]
	if !bytes.Contains(wire, []byte("smime-type=authEnveloped-data")) {
		t.Errorf("partner's copy is not AuthEnvelopedData:\n%.500s", wire)
	}
	dir := t.TempDir()
	bobCert, bobKey := b.userID.WriteFiles(t, dir, "bob")
	caFile, _ := a.ca.WriteFiles(t, dir, "hospital-ca")
	signed := run(t, wire, "openssl", "cms", "-decrypt", "-recip", bobCert, "-inkey", bobKey)
	if !strings.Contains(string(signed), "micalg=sha-384") {
		t.Errorf("signed entity without micalg=sha-384:\n%.300s", signed)
	}
	inner := run(t, signed, "openssl", "cms", "-verify", "-CAfile", caFile, "-purpose", "smimesign")
	if !bytes.Contains(inner, []byte("two profiles")) {
		t.Fatalf("openssl-verified content:\n%.400s", inner)
	}
}
