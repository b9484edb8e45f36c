package gateway

import (
	"bytes"
	"context"
	"log/slog"
	netsmtp "net/smtp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
)

// TestRelayAccount: an EHR logs in with its relay account and sends for an
// address of its domain that has no account of its own; the organization's
// certificate signs, the clinic files the message, the hospital tracks it
// under the envelope sender, files no Sent copy, and takes the clinic's MDN
// for that address into the tracking. An address of another domain is
// refused.
func TestRelayAccount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	addEHRRelay(t, a)
	dns := publishBoth(t, a, b)
	toA := newTCPProxy(t) // the clinic's MDNs to the hospital
	b.start(t, dns, map[string]string{"hospital.example": toA.addr()}, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)
	toA.setTarget(a.addrs["smtp"])

	const from = "dr.who@hospital.example"
	msg := dischargeSummary(t, from, b.user, "relayed-1@hospital.example")
	if r := submitPython(t, a.addrs["submission"], "ehr", relayPassword, from, []string{b.user}, msg); r != "" {
		t.Fatalf("relay submission refused: %s", r)
	}
	got := b.waitMailbox(t, b.user, "INBOX", 1)
	if !bytes.Contains(got[0], []byte("relayed-1@hospital.example")) || !bytes.HasPrefix(got[0], []byte(agent.VerificationHeader+":")) {
		t.Fatalf("bob's message:\n%.500s", got[0])
	}
	// The clinic's processed MDN to dr.who, who has no mailbox here, is
	// taken and recorded: the EHR follows it through the API.
	mdnWait(t, "bob's processed MDN recorded for the relayed message", func() bool {
		tm, err := a.st.TrackedMessage(ctx, "<relayed-1@hospital.example>")
		return err == nil && tm.Sender == from && len(tm.Recipients) == 1 && tm.Recipients[0].State == store.TrackProcessed
	})
	// Only an address a relay sent as takes mail without an account; any
	// other of the domain is refused at once.
	c, err := netsmtp.Dial(a.addrs["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(b.user); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("never-sent@hospital.example"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Fatalf("RCPT of an address nobody sent as: %v", err)
	}
	if err := c.Rcpt(from); err != nil {
		t.Fatalf("RCPT of the address the relay sent as: %v", err)
	}
	c.Reset()

	// A message (not a notice) for that address has no mailbox to go to:
	// bob hears so by a failed MDN (DN-04).
	if r := submitPython(t, b.addrs["submission"], b.user, b.password, b.user, []string{from},
		requestMessage(b.user, from, "to-the-ehr@clinic.example", "")); r != "" {
		t.Fatalf("the clinic refused bob's message: %s", r)
	}
	mdnWait(t, "bob's message to the EHR's address failed by MDN", func() bool {
		tm, err := b.st.TrackedMessage(ctx, "<to-the-ehr@clinic.example>")
		return err == nil && tm.Recipients[0].State == store.TrackFailed && strings.Contains(tm.Recipients[0].Reason, "no such mailbox")
	})
	for _, q := range a.queued(t) {
		if q.MessageID == "<relayed-1@hospital.example>" && (q.User != "" || !strings.HasSuffix(q.Origin, " relay ehr")) {
			t.Fatalf("queued as user %q, origin %q", q.User, q.Origin)
		}
	}
	if n := len(a.mailbox(t, a.user, "Sent")); n != 0 {
		t.Fatalf("alice's Sent folder holds %d messages", n)
	}

	other := dischargeSummary(t, "someone@clinic.example", b.user, "relayed-2@hospital.example")
	if r := submitPython(t, a.addrs["submission"], "ehr", relayPassword, "someone@clinic.example", []string{b.user}, other); !strings.Contains(r, "550") {
		t.Fatalf("relay sending for another domain: %q", r)
	}
	// A From of another domain behind an envelope sender of its own.
	spoof := dischargeSummary(t, "someone@clinic.example", b.user, "relayed-3@hospital.example")
	if r := submitPython(t, a.addrs["submission"], "ehr", relayPassword, from, []string{b.user}, spoof); !strings.Contains(r, "550") {
		t.Fatalf("relay with a From of another domain: %q", r)
	}
}

// TestBounceWithoutMailbox: the DSN of a message whose sender has no
// mailbox here (an address a relay account sent for) is not filed, and the
// bounce is done with: the queue does not try it again and again.
func TestBounceWithoutMailbox(t *testing.T) {
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	m := &mail{st: a.st, log: slog.New(slog.DiscardHandler), hostname: "hisp.hospital.example", now: time.Now,
		deliver: func(ctx context.Context, address, mailbox string, msg []byte, flags []string) error {
			_, err := a.st.Deliver(ctx, address, mailbox, msg, flags, time.Now())
			return err
		}}
	msg := store.QueuedMessage{MessageID: "<relayed-9@hospital.example>", MailFrom: "dr.who@hospital.example", Origin: "submission relay ehr"}
	out := []smtp.RecipientOutcome{{Recipient: "bob@clinic.example", Reply: smtp.Reply{Code: 550, Enhanced: "5.1.1", Message: "no such user"}}}
	if err := m.Bounce(ctx, msg, out, true); err != nil {
		t.Fatalf("bounce to a sender without a mailbox: %v", err)
	}
	// A sender with a mailbox gets it.
	msg.MailFrom = a.user
	if err := m.Bounce(ctx, msg, out, true); err != nil {
		t.Fatal(err)
	}
	if got := a.mailbox(t, a.user, "INBOX"); len(got) != 1 {
		t.Fatalf("alice's INBOX holds %d messages", len(got))
	}
}

// TestDeferredRelayRechecked: a relay account's message whose recipient's
// certificate could not be looked up waits in the queue plain; when it is
// sealed later it is sent as the account may send then: delivered while
// the account exists, refused (tracked as failed, never sent) once the
// account was removed in between.
func TestDeferredRelayRechecked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	// A recipient each: a certificate once found is cached.
	carol, _ := b.addUser(t, "carol")
	a.trust(t, b)
	b.trust(t, a)
	addEHRRelay(t, a)
	dnsAddr := publishBoth(t, a, b)
	var broken atomic.Bool
	broken.Store(true)
	b.start(t, dnsAddr, nil, nil)
	a.start(t, flakyDNS(t, dnsAddr, &broken), map[string]string{"clinic.example": b.addrs["smtp"]}, func(c *config.Config) {
		c.Outbound.RetryFirst = config.Duration{Duration: 300 * time.Millisecond}
		c.Outbound.RetryMax = config.Duration{Duration: 300 * time.Millisecond}
		c.Outbound.RetryAttempts = 100
	})
	const from = "dr.who@hospital.example"
	submit := func(id, to string) {
		t.Helper()
		// alice, local, takes it at once: the clinic's recipient alone
		// waits.
		if r := submitPython(t, a.addrs["submission"], "ehr", relayPassword, from, []string{to, a.user},
			dischargeSummary(t, from, to+", "+a.user, id)); r != "" {
			t.Fatalf("relay submission %s refused: %s", id, r)
		}
		for _, q := range a.queued(t) {
			if q.MessageID == "<"+id+">" && !strings.HasSuffix(q.Origin, " relay ehr") {
				t.Fatalf("%s deferred with origin %q", id, q.Origin)
			}
		}
	}

	submit("deferred-relay-1@hospital.example", b.user)
	broken.Store(false)
	if got := b.waitMailbox(t, b.user, "INBOX", 1); !bytes.Contains(got[0], []byte("deferred-relay-1@hospital.example")) {
		t.Fatalf("bob's message:\n%.300s", got[0])
	}

	broken.Store(true)
	submit("deferred-relay-2@hospital.example", carol)
	must(t, func() error { return a.st.RemoveRelay(ctx, "ehr") })
	broken.Store(false)
	mdnWait(t, "the removed relay's deferred message failed in its tracking", func() bool {
		tm, err := a.st.TrackedMessage(ctx, "<deferred-relay-2@hospital.example>")
		if err != nil {
			return false
		}
		for _, r := range tm.Recipients {
			if r.Address == carol {
				return r.State == store.TrackFailed && strings.Contains(r.Reason, "relay account ehr was removed")
			}
		}
		return false
	})
	time.Sleep(time.Second) // what a wrong send would take
	if got := b.mailbox(t, carol, "INBOX"); len(got) != 0 {
		t.Fatalf("carol holds %d messages: the removed relay's message was sent", len(got))
	}
}

// relayPassword is the password of the relay account addEHRRelay adds.
const relayPassword = "ehr relay password"

// addEHRRelay gives hospital.example an organization certificate (what an
// EHR's messages are signed with) and the relay account "ehr" sending for
// the domain.
func addEHRRelay(t *testing.T, a *instance) {
	t.Helper()
	ctx := context.Background()
	org := testpki.Issue(t, a.ca, testpki.Options{DNS: []string{"hospital.example"}})
	must(t, func() error {
		_, err := a.st.AddCertificate(ctx, "hospital.example", org.Cert, nil, org.Key)
		return err
	})
	must(t, func() error {
		_, err := a.st.AddRelay(ctx, store.Relay{Name: "ehr", Domains: []string{"hospital.example"}}, relayPassword)
		return err
	})
}
