package gateway

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/testnet"
	"github.com/hisp-project/hisp/store"
)

// flakyDNS forwards queries to upstream, or answers SERVFAIL while broken
// is set: a resolver that is down for a while.
func flakyDNS(t *testing.T, upstream string, broken *atomic.Bool) string {
	t.Helper()
	pc, l := testnet.ListenDNS(t)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if broken.Load() {
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
			w.WriteMsg(m)
			return
		}
		c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
		resp, _, err := c.Exchange(r, upstream)
		if err != nil {
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
			w.WriteMsg(m)
			return
		}
		w.WriteMsg(resp)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// TestDeferredRecipient: a recipient whose certificate cannot be looked up
// (the resolver fails) is not failed: the others go at once, and it is
// sealed to and delivered once the resolver is back, without a DSN.
func TestDeferredRecipient(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dnsAddr := publishBoth(t, a, b)
	var broken atomic.Bool
	broken.Store(true)
	flaky := flakyDNS(t, dnsAddr, &broken)
	toA := newTCPProxy(t) // the clinic's MDNs to the hospital
	b.start(t, dnsAddr, map[string]string{"hospital.example": toA.addr()}, nil)
	a.start(t, flaky, map[string]string{"clinic.example": b.addrs["smtp"]}, func(c *config.Config) {
		c.Outbound.RetryFirst = config.Duration{Duration: time.Second}
		c.Outbound.RetryMax = config.Duration{Duration: 2 * time.Second}
		c.Outbound.RetryAttempts = 100
	})
	toA.setTarget(a.addrs["smtp"])

	msg := dischargeSummary(t, a.user, b.user+", "+a.user, "deferred-1@hospital.example")
	if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user, a.user}, msg); refused != "" {
		t.Fatalf("submission refused: %s", refused)
	}
	// alice, local, gets it at once; bob waits for the resolver.
	a.waitMailbox(t, a.user, "INBOX", 1)
	if got := b.mailbox(t, b.user, "INBOX"); len(got) != 0 {
		t.Fatal("bob got the message while his certificate could not be looked up")
	}
	broken.Store(false)
	got := b.waitMailbox(t, b.user, "INBOX", 1)
	if !bytes.Contains(got[0], []byte("deferred-1@hospital.example")) {
		t.Fatalf("bob got another message:\n%.300s", got[0])
	}
	// bob joined the message's tracking when he was sent to, and his
	// HISP's processed MDN found him there.
	mdnWait(t, "bob processed in the tracking of deferred-1", func() bool {
		tm, err := a.st.TrackedMessage(context.Background(), "<deferred-1@hospital.example>")
		if err != nil {
			return false
		}
		for _, r := range tm.Recipients {
			if r.Address == b.user && r.State == store.TrackProcessed {
				return len(tm.Recipients) == 2
			}
		}
		return false
	})
	for _, m := range a.mailbox(t, a.user, "INBOX") {
		if bytes.Contains(m, []byte("delivery-status")) {
			t.Fatalf("alice got a DSN for a recipient that was only deferred:\n%s", m)
		}
	}
}

// TestDeferredRecipientGivesUp: a recipient whose certificate cannot be
// looked up for the whole retry schedule fails for good: the sender gets a
// DSN and the message's tracking shows the recipient failed next to the one
// sent at once.
func TestDeferredRecipientGivesUp(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	dave, _ := a.addUser(t, "dave")
	a.trust(t, b)
	dnsAddr := publishBoth(t, a, b)
	var broken atomic.Bool
	broken.Store(true)
	a.start(t, flakyDNS(t, dnsAddr, &broken), map[string]string{"clinic.example": unavailableSMTP(t)}, func(c *config.Config) {
		c.Outbound.RetryFirst = config.Duration{Duration: 200 * time.Millisecond}
		c.Outbound.RetryMax = config.Duration{Duration: 200 * time.Millisecond}
		c.Outbound.RetryAttempts = 2
	})
	msg := dischargeSummary(t, a.user, b.user+", "+dave, "gives-up-1@hospital.example")
	if refused := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user, dave}, msg); refused != "" {
		t.Fatalf("submission refused: %s", refused)
	}
	mdnWait(t, "bob failed in the tracking of gives-up-1", func() bool {
		tm, err := a.st.TrackedMessage(context.Background(), "<gives-up-1@hospital.example>")
		if err != nil || len(tm.Recipients) != 2 {
			return false
		}
		for _, r := range tm.Recipients {
			if r.Address == b.user {
				return r.State == store.TrackFailed
			}
		}
		return false
	})
	mdnWait(t, "the failure DSN in alice's INBOX", func() bool {
		for _, m := range a.mailbox(t, a.user, "INBOX") {
			if bytes.Contains(m, []byte("delivery-status")) && bytes.Contains(m, []byte(b.user)) {
				return true
			}
		}
		return false
	})
}
