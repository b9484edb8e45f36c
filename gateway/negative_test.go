package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/store"
)

// The negative end-to-end tests of issue 4: two or three hisp instances on
// loopback, each case asserting what a user would notice (a refusal, an
// empty mailbox, a DSN) and what an operator would (the queue, the audit
// log).

// deliverDirect sends a message to a backbone listener as another HISP
// would: go-smtp's client with STARTTLS. It returns the server's refusal,
// nil if the message was accepted.
func deliverDirect(t *testing.T, addr, from string, to []string, msg []byte) *gosmtp.SMTPError {
	t.Helper()
	c, err := gosmtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.SendMail(from, to, bytes.NewReader(msg))
	if err == nil {
		return nil
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("delivery failed without an SMTP reply: %v", err)
	}
	return se
}

func enhanced(se *gosmtp.SMTPError) string {
	e := se.EnhancedCode
	return fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
}

// refusedWith checks smtplib's refusal text for a code and an enhanced
// code.
func refusedWith(t *testing.T, refused string, code int, enh string) {
	t.Helper()
	if refused == "" {
		t.Fatalf("accepted; want %d %s", code, enh)
	}
	if !strings.Contains(refused, fmt.Sprintf("(%d, b'%s", code, enh)) {
		t.Fatalf("refusal %q; want %d %s", refused, code, enh)
	}
}

// TestNegativeEndToEnd: what arrives at or leaves a working pair of HISPs
// against the Direct rules is refused, and nothing of it is queued, sent or
// filed.
func TestNegativeEndToEnd(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	carol, _ := a.addUser(t, "carol")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	tp, tapAddr := startTap(t, b.addrs["smtp"])
	a.start(t, dns, map[string]string{"clinic.example": tapAddr}, nil)

	// One message that goes through: the baseline every case below must
	// leave as it is, and the ciphertext to tamper with.
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
		dischargeSummary(t, a.user, b.user, "baseline@hospital.example")); r != "" {
		t.Fatalf("baseline refused: %s", r)
	}
	b.waitMailbox(t, b.user, "INBOX", 1)
	waitFor(t, "the tap saw the baseline", func() bool { return len(tp.messages()) == 1 })
	sealed := tp.messages()[0]

	// unchanged checks that nothing more was sent, queued or filed.
	unchanged := func(t *testing.T) {
		t.Helper()
		if n := len(b.mailbox(t, b.user, "INBOX")); n != 1 {
			t.Errorf("bob's INBOX holds %d messages, want the baseline only", n)
		}
		if n := len(tp.messages()); n != 1 {
			t.Errorf("%d messages left the hospital, want the baseline only", n)
		}
		if q := a.queued(t); len(q) != 1 {
			t.Errorf("hospital queue holds %d messages, want the baseline only", len(q))
		}
		if q := b.queuedNotMDN(t); len(q) != 0 {
			t.Errorf("clinic queue holds %d messages, want none", len(q))
		}
	}

	t.Run("open relay", func(t *testing.T) {
		c := dialRaw(t, b.addrs["smtp"], true)
		c.expect(250, "MAIL FROM:<"+a.user+">")
		if code, msg := c.cmd("RCPT TO:<victim@elsewhere.example>"); !replyIs(code, msg, 554, "5.7.1") {
			t.Errorf("RCPT for a foreign domain: %d %s, want 554 5.7.1", code, msg)
		}
		// The percent hack names a local domain but no local address.
		if code, msg := c.cmd("RCPT TO:<victim%elsewhere.example@clinic.example>"); !replyIs(code, msg, 550, "5.1.1") {
			t.Errorf("RCPT with the percent hack: %d %s, want 550 5.1.1", code, msg)
		}
		if code, msg := c.cmd("DATA"); code < 500 {
			t.Errorf("DATA without an accepted recipient: %d %s", code, msg)
		}
		c.expect(221, "QUIT")
		b.audited(t, "relay attempt refused", func(e store.Event) bool {
			return e.Action == "smtp.backbone.rcpt" && e.Subject == "victim@elsewhere.example" && e.Verdict == "refused"
		})
		unchanged(t)
	})

	t.Run("sender spoofing", func(t *testing.T) {
		sub := a.addrs["submission"]
		// Another local user's address, and a remote one, as MAIL FROM.
		for _, other := range []string{carol, b.user} {
			r := submitPython(t, sub, a.user, a.password, other, []string{b.user},
				plainMessage(other, b.user, "spoof-mail@hospital.example", "Spoofed."))
			refusedWith(t, r, 550, "5.7.1")
		}
		// Her own MAIL FROM, another's From: plainly, behind her own
		// address as display name, alongside hers, or with her as Sender.
		for i, c := range []struct {
			from string
			code int
			enh  string
		}{
			{carol, 550, "5.7.1"},
			{`"` + a.user + `" <` + carol + `>`, 550, "5.7.1"},
			{a.user + ", " + carol, 554, "5.6.0"}, // one author only
			{carol + "\r\nSender: " + a.user, 550, "5.7.1"},
		} {
			id := fmt.Sprintf("spoof-from-%d@hospital.example", i)
			r := submitPython(t, sub, a.user, a.password, a.user, []string{b.user}, plainMessage(c.from, b.user, id, "Spoofed."))
			refusedWith(t, r, c.code, c.enh)
			t.Logf("From: %s: %s", c.from, r)
		}
		if n := len(a.mailbox(t, a.user, "Sent")); n != 1 {
			t.Errorf("alice's Sent holds %d messages, want the baseline only", n)
		}
		if n := len(a.mailbox(t, carol, "Sent")) + len(a.mailbox(t, carol, "INBOX")); n != 0 {
			t.Errorf("carol's mailboxes hold %d messages", n)
		}
		a.audited(t, "spoofed From refused", func(e store.Event) bool {
			return e.Verdict == "refused" && strings.Contains(e.Subject, "spoof-from-1@hospital.example")
		})
		unchanged(t)
	})

	t.Run("plain unencrypted", func(t *testing.T) {
		se := deliverDirect(t, b.addrs["smtp"], a.user, []string{b.user},
			plainMessage(a.user, b.user, "plain@hospital.example", "Not encrypted, not signed."))
		if se == nil || se.Code/100 != 5 || !strings.HasPrefix(enhanced(se), "5.7.") {
			t.Fatalf("plain message: %v, want 5xx 5.7.x", se)
		}
		t.Logf("plain message refused: %d %s %s", se.Code, enhanced(se), se.Message)
		b.audited(t, "plain message refused", func(e store.Event) bool {
			return e.Verdict == "refused" && strings.Contains(e.Subject, "plain@hospital.example")
		})
		unchanged(t)
	})

	t.Run("tampered ciphertext", func(t *testing.T) {
		head, body, ok := bytes.Cut(sealed, []byte("\r\n\r\n"))
		if !ok || !bytes.Contains(bytes.ToLower(head), []byte("content-transfer-encoding: base64")) {
			t.Fatalf("sealed message is not base64:\n%.600s", sealed)
		}
		der, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(body), nil)))
		if err != nil {
			t.Fatal(err)
		}
		// The recipient's encrypted content-encryption key (an OCTET
		// STRING of 256 bytes for RSA-2048), the middle of the content
		// and the last blocks with their padding.
		key := bytes.Index(der, []byte{0x04, 0x82, 0x01, 0x00})
		if key < 0 {
			t.Fatal("no 256-byte encrypted key in the sealed message")
		}
		for _, i := range []int{key + 4 + 100, len(der) / 2, len(der) - 20} {
			bad := bytes.Clone(der)
			for j := i; j < i+4 && j < len(bad); j++ {
				bad[j] ^= 0x5a
			}
			var msg bytes.Buffer
			msg.Write(head)
			msg.WriteString("\r\n\r\n")
			enc := base64.StdEncoding.EncodeToString(bad)
			for len(enc) > 76 {
				msg.WriteString(enc[:76] + "\r\n")
				enc = enc[76:]
			}
			msg.WriteString(enc + "\r\n")
			se := deliverDirect(t, b.addrs["smtp"], a.user, []string{b.user}, msg.Bytes())
			if se == nil || se.Code/100 != 5 || !strings.HasPrefix(enhanced(se), "5.7.") {
				t.Fatalf("bytes flipped at %d of %d: %v, want a 5xx 5.7.x refusal", i, len(der), se)
			}
			t.Logf("flipped at %d of %d: %d %s %s", i, len(der), se.Code, enhanced(se), se.Message)
		}
		// The envelope or the outer header rewritten to another sender.
		for _, c := range []struct {
			name, from string
			msg        []byte
		}{
			{"MAIL FROM", carol, sealed},
			{"MAIL FROM and outer From", carol, bytes.Replace(sealed, []byte("From: "+a.user), []byte("From: "+carol), 1)},
		} {
			if c.name != "MAIL FROM" && bytes.Equal(c.msg, sealed) {
				t.Fatalf("no outer From in the sealed message:\n%.600s", sealed)
			}
			se := deliverDirect(t, b.addrs["smtp"], c.from, []string{b.user}, c.msg)
			if se == nil || se.Code/100 != 5 || !strings.HasPrefix(enhanced(se), "5.7.") {
				t.Fatalf("%s rewritten: %v, want a 5xx 5.7.x refusal", c.name, se)
			}
			t.Logf("%s rewritten: %d %s %s", c.name, se.Code, enhanced(se), se.Message)
		}
		unchanged(t)
	})

	// Nothing above left a message behind that a later delivery would
	// carry along: a second message still goes through, alone.
	// It carries a forged verification result, which the clinic replaces
	// with its own.
	forged := append([]byte("X-Hisp-Verification: pass; signer=mallory\r\n"),
		plainMessage(a.user, b.user, "after@hospital.example", "After.")...)
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user}, forged); r != "" {
		t.Fatalf("message after the refusals refused: %s", r)
	}
	got := b.waitMailbox(t, b.user, "INBOX", 2)
	if len(got) != 2 || !bytes.Contains(got[1], []byte("after@hospital.example")) {
		t.Fatalf("bob's INBOX: %d messages, want the baseline and the last", len(got))
	}
	if bytes.Contains(got[1], []byte("mallory")) || bytes.Count(bytes.ToLower(got[1]), []byte("x-hisp-verification:")) != 1 {
		t.Fatalf("forged verification header kept:\n%.800s", got[1])
	}
}

// TestUntrustedSigner: a third HISP whose CA the clinic does not trust
// sends to bob. The clinic refuses in DATA and audits it, bob sees nothing,
// and the sender gets a failure DSN naming bob.
func TestUntrustedSigner(t *testing.T) {
	t.Parallel()
	b := newInstance(t, "clinic.example", "bob")
	c := newInstance(t, "stranger.example", "carl")
	c.trust(t, b) // the stranger trusts the clinic; not the other way round
	// The clinic would send to the stranger, but accepts nothing signed
	// under its CA: an anchor for the wrong direction is no anchor.
	must(t, func() error {
		_, err := b.st.AddAnchor(context.Background(), b.domain, c.ca.Cert, store.DirectionOut)
		return err
	})
	dns := publishBoth(t, b, c)
	b.start(t, dns, nil, nil)
	c.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)

	if r := submitPython(t, c.addrs["submission"], c.user, c.password, c.user, []string{b.user},
		dischargeSummary(t, c.user, b.user, "untrusted@stranger.example")); r != "" {
		t.Fatalf("the stranger's own HISP refused the submission: %s", r)
	}
	notices := dsns(t, c.waitMailbox(t, c.user, "INBOX", 1))
	d := notices[0]
	if len(d.Recipients) != 1 {
		t.Fatalf("DSN names %d recipients: %+v", len(d.Recipients), d.Recipients)
	}
	r := d.Recipients[0]
	if !strings.EqualFold(r.Recipient, b.user) || r.Action != mdn.Failed || !strings.HasPrefix(r.Status, "5.7.") {
		t.Fatalf("DSN recipient %+v; want failed 5.7.x for %s", r, b.user)
	}
	if !strings.Contains(r.Diagnostic, "trust") {
		t.Errorf("DSN diagnostic %q does not say why", r.Diagnostic)
	}
	if !strings.Contains(d.OriginalMessageID, "untrusted@stranger.example") {
		t.Errorf("DSN is about %q", d.OriginalMessageID)
	}
	if r.RemoteMTA == "" || !strings.HasPrefix(r.Diagnostic, "550 5.7.") {
		t.Errorf("DSN does not carry the clinic's reply: %+v", r)
	}
	// Refused in DATA (the clinic knows bob), for good, once.
	waitFor(t, "the stranger's recipient bounced", func() bool {
		q := c.queued(t)
		return len(q) == 1 && q[0].Recipients[0].State == store.StateBounced
	})
	if qr := c.queued(t)[0].Recipients[0]; qr.LastCode != 550 || qr.Attempts != 1 {
		t.Errorf("stranger's queue: %+v", qr)
	}
	if n := len(b.mailbox(t, b.user, "INBOX")); n != 0 {
		t.Fatalf("bob's INBOX holds %d messages", n)
	}
	ev := b.audited(t, "untrusted signer refused", func(e store.Event) bool {
		return e.Verdict == "refused" && strings.Contains(e.Subject, "untrusted@stranger.example")
	})
	t.Logf("clinic audit: %+v", ev)
	// A refused message gets no MDN: the clinic queued nothing.
	if q := b.queued(t); len(q) != 0 {
		t.Fatalf("clinic queued %d messages", len(q))
	}
}

// TestExpiredRecipientCertificate: the clinic publishes only an expired
// certificate for bob. The hospital drops bob: a submission to bob alone is
// refused at once (the client is told, no DSN on top), and bob among
// others is dropped with a failure DSN to alice while the others get the
// message.
func TestExpiredRecipientCertificate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	carol, _ := b.addUser(t, "carol")
	a.trust(t, b)
	b.trust(t, a)
	// Bob's only certificate expired a year ago.
	list, err := b.st.Certificates(ctx, store.CertFilter{Owner: b.user})
	if err != nil || len(list) != 1 {
		t.Fatalf("bob's certificates: %v %v", list, err)
	}
	if _, err := b.st.RemoveCertificate(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	expired := testpki.Issue(t, b.ca, testpki.Options{Email: []string{b.user},
		NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(-1, 0, 0)})
	if _, err := b.st.AddCertificate(ctx, b.user, expired.Cert, nil, expired.Key); err != nil {
		t.Fatal(err)
	}
	// hisp would not publish it; a careless HISP does.
	dns := publish(t, storeCerts{a.st}, everyCert{b.st})
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)

	t.Run("bob alone", func(t *testing.T) {
		r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
			plainMessage(a.user, b.user, "expired-alone@hospital.example", "To bob."))
		refusedWith(t, r, 550, "5.7.1")
		if !strings.Contains(r, b.user) || !strings.Contains(strings.ToLower(r), "expired") {
			t.Errorf("refusal %q does not name bob and the expired certificate", r)
		}
		// The client was told: one outcome, no DSN as well.
		if n := len(a.mailbox(t, a.user, "INBOX")); n != 0 {
			t.Errorf("alice's INBOX holds %d messages after a refused submission", n)
		}
		if q := a.queued(t); len(q) != 0 {
			t.Errorf("hospital queued %d messages", len(q))
		}
	})

	t.Run("bob and carol", func(t *testing.T) {
		r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user, carol},
			plainMessage(a.user, b.user+", "+carol, "expired-two@hospital.example", "To bob and carol."))
		if r != "" {
			t.Fatalf("submission refused: %s", r)
		}
		notices := dsns(t, a.waitMailbox(t, a.user, "INBOX", 1))
		d := notices[0]
		if len(d.Recipients) != 1 {
			t.Fatalf("DSN names %+v, want bob only", d.Recipients)
		}
		rr := d.Recipients[0]
		if !strings.EqualFold(rr.Recipient, b.user) || rr.Action != mdn.Failed || rr.Status != "5.7.1" ||
			!strings.Contains(strings.ToLower(rr.Diagnostic), "expired") {
			t.Fatalf("DSN recipient %+v; want bob failed 5.7.1 for an expired certificate", rr)
		}
		if !strings.Contains(d.OriginalMessageID, "expired-two@hospital.example") {
			t.Errorf("DSN is about %q", d.OriginalMessageID)
		}
		if got := b.waitMailbox(t, carol, "INBOX", 1); !bytes.Contains(got[0], []byte("expired-two@hospital.example")) {
			t.Fatalf("carol's message: %.300s", got[0])
		}
		waitFor(t, "the hospital's queue done", func() bool {
			q := a.queued(t)
			return len(q) == 1 && len(q[0].Recipients) == 1 && q[0].Recipients[0].State.Final()
		})
		if q := a.queued(t); !strings.EqualFold(q[0].Recipients[0].Address, carol) {
			t.Fatalf("queued for %s, want carol only", q[0].Recipients[0].Address)
		}
		if n := len(b.mailbox(t, b.user, "INBOX")); n != 0 {
			t.Fatalf("bob's INBOX holds %d messages", n)
		}
	})
}

// TestRemoteDownThenUp: the next hop answers 421 at first; the hospital
// retries and bob gets the message once when it is back.
func TestRemoteDownThenUp(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	tp, tapAddr := startTap(t, b.addrs["smtp"])
	tp.mu.Lock()
	tp.down = true
	tp.mu.Unlock()
	a.start(t, dns, map[string]string{"clinic.example": tapAddr}, func(c *config.Config) {
		c.Outbound.RetryFirst = config.Duration{Duration: time.Second}
		c.Outbound.RetryMax = config.Duration{Duration: 2 * time.Second}
		c.Outbound.RetryAttempts = 100 // not to give up on a slow machine
	})

	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
		dischargeSummary(t, a.user, b.user, "retry@hospital.example")); r != "" {
		t.Fatalf("submission refused: %s", r)
	}
	recipient := func() store.QueuedRecipient {
		q := a.queued(t)
		if len(q) != 1 || len(q[0].Recipients) != 1 {
			t.Fatalf("hospital queue: %+v", q)
		}
		return q[0].Recipients[0]
	}
	waitFor(t, "a failed first attempt", func() bool {
		r := recipient()
		return r.Attempts >= 1 && r.LastCode/100 == 4
	})
	if r := recipient(); r.State.Final() || !strings.Contains(r.LastError+r.Status, "421") {
		t.Fatalf("after the 421: %+v", r)
	}
	if n := len(b.mailbox(t, b.user, "INBOX")); n != 0 {
		t.Fatalf("bob's INBOX holds %d messages while the hop is down", n)
	}
	tp.mu.Lock()
	tp.down = false
	tp.mu.Unlock()

	b.waitMailbox(t, b.user, "INBOX", 1)
	waitFor(t, "the recipient delivered", func() bool { return recipient().State == store.StateDelivered })
	r := recipient()
	if r.Attempts < 2 {
		t.Errorf("delivered after %d attempts", r.Attempts)
	}
	if n := len(b.mailbox(t, b.user, "INBOX")); n != 1 {
		t.Fatalf("bob's INBOX holds %d messages, want 1", n)
	}
	if n := len(tp.messages()); n != 1 {
		t.Fatalf("the hop took %d messages, want 1", n)
	}
	// Delivered in the end: no failure or delay notice for alice.
	if n := len(a.mailbox(t, a.user, "INBOX")); n != 0 {
		t.Fatalf("alice's INBOX holds %d messages", n)
	}
}

// TestRemotePermanentFailure: the clinic has an organization-bound
// certificate, so the hospital encrypts to any clinic address; the clinic
// answers 550 5.1.1 for an address it does not have, and alice gets a
// failure DSN naming it.
func TestRemotePermanentFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	org := testpki.Issue(t, b.ca, testpki.Options{DNS: []string{b.domain}})
	if _, err := b.st.AddCertificate(ctx, b.domain, org.Cert, nil, org.Key); err != nil {
		t.Fatal(err)
	}
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)

	const nobody = "nobody@clinic.example"
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{nobody},
		plainMessage(a.user, nobody, "nobody@hospital.example", "To no one.")); r != "" {
		t.Fatalf("submission refused: %s", r)
	}
	notices := dsns(t, a.waitMailbox(t, a.user, "INBOX", 1))
	d := notices[0]
	if len(d.Recipients) != 1 {
		t.Fatalf("DSN names %+v", d.Recipients)
	}
	r := d.Recipients[0]
	if !strings.EqualFold(r.Recipient, nobody) || r.Action != mdn.Failed || r.Status != "5.1.1" ||
		!strings.Contains(r.Diagnostic, "550") {
		t.Fatalf("DSN recipient %+v; want %s failed 5.1.1 with the 550", r, nobody)
	}
	if !strings.Contains(d.OriginalMessageID, "nobody@hospital.example") {
		t.Errorf("DSN is about %q", d.OriginalMessageID)
	}
	waitFor(t, "the recipient bounced", func() bool {
		q := a.queued(t)
		return len(q) == 1 && q[0].Recipients[0].State == store.StateBounced
	})
	// Exactly one outcome: the one DSN, tried once.
	if q := a.queued(t); q[0].Recipients[0].Attempts != 1 {
		t.Errorf("a 550 was tried %d times", q[0].Recipients[0].Attempts)
	}
	if n := len(a.mailbox(t, a.user, "INBOX")); n != 1 {
		t.Fatalf("alice's INBOX holds %d messages, want the one DSN", n)
	}
	b.audited(t, "unknown recipient refused", func(e store.Event) bool {
		return e.Action == "smtp.backbone.rcpt" && e.Subject == nobody && e.Verdict == "refused"
	})
}

// TestBadInput: malformed and abusive input on the hospital's submission
// and the clinic's backbone listener gets a clear SMTP error (with an audit
// record where the server refuses it itself), nothing is queued or filed,
// and both servers go on serving: a normal message still goes through
// afterwards.
func TestBadInput(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)

	type side struct {
		kind string // listener kind, as in audit actions
		in   *instance
		dial func(t *testing.T) *rawClient // ready for MAIL
	}
	sides := []side{
		{"submission", a, func(t *testing.T) *rawClient {
			c := dialRaw(t, a.addrs["submission"], true)
			c.login(a.user, a.password)
			return c
		}},
		{"backbone", b, func(t *testing.T) *rawClient { return dialRaw(t, b.addrs["smtp"], true) }},
	}
	from, to := a.user, b.user
	for _, s := range sides {
		t.Run(s.kind, func(t *testing.T) {
			begin := func(t *testing.T) *rawClient {
				t.Helper()
				c := s.dial(t)
				c.expect(250, "MAIL FROM:<"+from+">")
				c.expect(250, "RCPT TO:<"+to+">")
				return c
			}
			refusedAudit := func(t *testing.T, action, reason string) {
				t.Helper()
				s.in.audited(t, action+" "+reason, func(e store.Event) bool {
					return e.Action == "smtp."+s.kind+"."+action && e.Verdict == "refused" && strings.Contains(e.Reason, reason)
				})
			}

			t.Run("empty message", func(t *testing.T) {
				c := begin(t)
				if code, msg := c.data(nil); !replyIs(code, msg, 554, "5.6.0") {
					t.Fatalf("0-byte message: %d %s, want 554 5.6.0", code, msg)
				}
				refusedAudit(t, "data", "5.6.0")
			})

			t.Run("malformed", func(t *testing.T) {
				c := begin(t)
				msg := []byte("no header at all, just a line of text\r\n")
				if s.kind == "backbone" {
					msg = []byte("From: " + from + "\r\nTo: " + to + "\r\nMIME-Version: 1.0\r\n" +
						"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
						"Content-Transfer-Encoding: base64\r\n\r\n" +
						base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("not CMS "), 64)) + "\r\n")
				}
				code, text := c.data(msg)
				if code/100 != 5 || !strings.HasPrefix(text, "5.") {
					t.Fatalf("malformed message: %d %s, want a 5xx refusal", code, text)
				}
				t.Logf("malformed message refused: %d %s", code, text)
			})

			t.Run("oversize", func(t *testing.T) {
				c := s.dial(t)
				if code, msg := c.cmd(fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", from, 64<<20+1)); !replyIs(code, msg, 552, "5.3.4") {
					t.Fatalf("MAIL with SIZE over 64 MB: %d %s, want 552 5.3.4", code, msg)
				}
				// Sent anyway, without announcing it.
				c.expect(250, "MAIL FROM:<"+from+">")
				c.expect(250, "RCPT TO:<"+to+">")
				line := bytes.Repeat([]byte("x"), 998)
				msg := make([]byte, 0, 64<<20+2<<20)
				msg = append(msg, "From: "+from+"\r\nTo: "+to+"\r\nSubject: big\r\n\r\n"...)
				for len(msg) <= 64<<20 {
					msg = append(append(msg, line...), '\r', '\n')
				}
				if code, text := c.data(msg); !replyIs(code, text, 552, "5.3.4") {
					t.Fatalf("%d-byte message: %d %s, want 552 5.3.4", len(msg), code, text)
				}
				refusedAudit(t, "data", "too big")
				c.expect(250, "NOOP")
			})

			t.Run("header bomb", func(t *testing.T) {
				var lines, wide bytes.Buffer
				for i := range 5000 {
					fmt.Fprintf(&lines, "X-Bomb-%d: x\r\n", i)
				}
				for i := range 900 {
					fmt.Fprintf(&wide, "X-Wide-%d: %s\r\n", i, bytes.Repeat([]byte("y"), 1500))
				}
				for _, h := range [][]byte{lines.Bytes(), wide.Bytes()} {
					c := begin(t)
					msg := append([]byte("From: "+from+"\r\nTo: "+to+"\r\n"), h...)
					msg = append(msg, "\r\nbody\r\n"...)
					if code, text := c.data(msg); !replyIs(code, text, 552, "5.3.4") {
						t.Fatalf("header bomb: %d %s, want 552 5.3.4", code, text)
					}
				}
				refusedAudit(t, "data", "lines")
				refusedAudit(t, "data", "bytes")
			})

			t.Run("thousands of recipients", func(t *testing.T) {
				c := s.dial(t)
				c.expect(250, "MAIL FROM:<"+from+">")
				accepted, limited := 0, 0
				for i := range 3000 {
					rcpt := fmt.Sprintf("rcpt-%d@clinic.example", i)
					if s.kind == "backbone" {
						rcpt = to // only local addresses get this far
					}
					code, msg := c.cmd("RCPT TO:<" + rcpt + ">")
					switch {
					case code == 250:
						accepted++
					case replyIs(code, msg, 452, "4.5.3"):
						limited++
					default:
						t.Fatalf("RCPT %d: %d %s", i, code, msg)
					}
				}
				if accepted != 100 || limited != 2900 {
					t.Fatalf("%d recipients accepted, %d refused for the limit; want 100 and 2900", accepted, limited)
				}
				// The connection is still in good order.
				c.expect(250, "RSET")
				c.expect(250, "NOOP")
			})

			t.Run("non-ASCII addresses", func(t *testing.T) {
				c := s.dial(t)
				if code, msg := c.cmd("MAIL FROM:<jörg@hospital.example>"); !replyIs(code, msg, 553, "5.6.7") {
					t.Errorf("non-ASCII MAIL FROM: %d %s, want 553 5.6.7", code, msg)
				}
				if code, msg := c.cmd("MAIL FROM:<" + from + "> SMTPUTF8"); code/100 != 5 {
					t.Errorf("MAIL with SMTPUTF8: %d %s, want a 5xx refusal", code, msg)
				}
				c.expect(250, "MAIL FROM:<"+from+">")
				for _, rcpt := range []string{"jörg@clinic.example", "bob@clïnic.example"} {
					if code, msg := c.cmd("RCPT TO:<" + rcpt + ">"); !replyIs(code, msg, 553, "5.6.7") {
						t.Errorf("non-ASCII RCPT %s: %d %s, want 553 5.6.7", rcpt, code, msg)
					}
				}
				c.expect(250, "RSET")
				refusedAudit(t, "mail", "5.6.7")
				refusedAudit(t, "rcpt", "5.6.7")
			})

			t.Run("dropped in DATA", func(t *testing.T) {
				c := begin(t)
				c.expect(354, "DATA")
				half := plainMessage(from, to, "partial-"+s.kind+"@hospital.example", strings.Repeat("half a message\r\n", 2000))
				if _, err := c.conn.Write(half[:len(half)/2]); err != nil {
					t.Fatal(err)
				}
				c.conn.Close()
				// The next client is served in full.
				next := begin(t)
				code, msg := next.data(plainMessage(from, to, "next-"+s.kind+"@hospital.example", "The next client."))
				if s.kind == "submission" && code != 250 {
					t.Fatalf("the next client's message: %d %s", code, msg)
				}
				if s.kind == "backbone" && !replyIs(code, msg, 550, "5.7.1") {
					t.Fatalf("the next client's plain message: %d %s, want the Direct refusal 550 5.7.1", code, msg)
				}
				next.expect(221, "QUIT")
			})
		})
	}

	// Both servers are still up: a normal message goes the whole way.
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
		dischargeSummary(t, a.user, b.user, "after-bad-input@hospital.example")); r != "" {
		t.Fatalf("normal message after the bad input refused: %s", r)
	}
	got := b.waitMailbox(t, b.user, "INBOX", 2)
	want := []string{"next-submission@hospital.example", "after-bad-input@hospital.example"}
	if len(got) != len(want) {
		t.Fatalf("bob's INBOX holds %d messages, want %d", len(got), len(want))
	}
	for i, id := range want {
		if !bytes.Contains(got[i], []byte("<"+id+">")) {
			t.Errorf("bob's message %d is not %s:\n%.400s", i, id, got[i])
		}
	}
	q := a.queued(t)
	if len(q) != len(want) {
		t.Fatalf("hospital queue holds %d messages, want %d", len(q), len(want))
	}
	for i, id := range want {
		if !strings.Contains(q[i].MessageID, id) {
			t.Errorf("queued message %d is %s, want %s", i, q[i].MessageID, id)
		}
	}
	if q := b.queuedNotMDN(t); len(q) != 0 {
		t.Fatalf("clinic queued %d messages", len(q))
	}
}
