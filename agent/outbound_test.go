package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/store"
)

func TestOutboundLocalAndRemote(t *testing.T) {
	f := newFixture(t)
	p := f.p
	ctx := context.Background()
	msg := message("alice@a.example", []string{"bob@b.example", "Carol <carol@r.example>"}, nil, "")
	res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", User: "alice@a.example",
		Recipients: []string{"bob@b.example", "CAROL@r.example"}, RemoteAddr: "127.0.0.1:9"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Signer.Equal(p.alice.Cert) {
		t.Errorf("signed by %s", res.Signer.Subject)
	}
	if !bytes.Equal(res.Message, msg) {
		t.Errorf("a complete message was changed:\n%s", res.Message)
	}
	want := []struct {
		rcpt  string
		local bool
		step  string
		cert  *x509.Certificate
	}{
		{"bob@b.example", true, "local", p.bob.Cert},
		{"CAROL@r.example", false, certs.DNSAddress.String(), p.carol.Cert},
	}
	for i, w := range want {
		r := res.Recipients[i]
		if r.Recipient != w.rcpt || !r.Accepted || r.Local != w.local || r.Step != w.step || r.Status.Code != 250 {
			t.Errorf("recipient %d: %+v", i, r)
		}
		if len(r.Certs) != 1 || !r.Certs[0].Equal(w.cert) {
			t.Errorf("recipient %s: encrypted to %d certificates", w.rcpt, len(r.Certs))
		}
	}
	// Sealed once: each recipient's key opens it, and the signature is
	// Alice's.
	for _, id := range []*testpki.Identity{p.bob, p.carol} {
		o, err := open(t, res.Sealed, id)
		if err != nil {
			t.Fatalf("open with %s: %v", id.Cert.Subject, err)
		}
		if vs := o.ValidSigners(); len(vs) != 1 || !vs[0].Equal(p.alice.Cert) {
			t.Errorf("signers %v", vs)
		}
		if !o.Wrapped || !bytes.Contains(o.Message, []byte("Patient was discharged")) {
			t.Errorf("inner message:\n%s", o.Message)
		}
	}
	// MF-04: no Subject (PHI) outside.
	outer, _ := splitMessage(res.Sealed)
	if bytes.Contains(outer, []byte("discharge")) || !bytes.Contains(outer, []byte("Subject: "+smime.DefaultSubject)) {
		t.Errorf("outer header:\n%s", outer)
	}
	if evs := f.audited("outbound", "carol@r.example"); len(evs) != 1 || evs[0].Verdict != "accepted" ||
		!strings.Contains(evs[0].Actor, "alice@a.example") {
		t.Errorf("audit: %+v", evs)
	}

	opensslOpen(t, res.Sealed, p.carol, p.caA)
}

// opensslOpen decrypts a sealed message with openssl cms and verifies the
// signature against anchor.
func opensslOpen(t *testing.T, sealed []byte, recip *testpki.Identity, anchor *testpki.Identity) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	certFile, keyFile := recip.WriteFiles(t, dir, "recip")
	caFile, _ := anchor.WriteFiles(t, dir, "ca")
	in := filepath.Join(dir, "sealed.eml")
	signed := filepath.Join(dir, "signed.eml")
	inner := filepath.Join(dir, "inner.eml")
	if err := os.WriteFile(in, sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "cms", "-decrypt", "-in", in, "-recip", certFile, "-inkey", keyFile, "-out", signed).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, out)
	}
	if out, err := exec.Command("openssl", "cms", "-verify", "-in", signed, "-CAfile", caFile, "-out", inner).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	b, err := os.ReadFile(inner)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("message/rfc822")) || !bytes.Contains(b, []byte("Patient was discharged")) {
		t.Errorf("openssl output:\n%s", b)
	}
}

func TestOutboundSpoofing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	msg := message("alice@a.example", []string{"bob@b.example"}, nil, "")
	// MAIL FROM is not the From (MF-05).
	_, err := f.agent.Outbound(ctx, Envelope{MailFrom: "dave@a.example", Recipients: []string{"bob@b.example"}}, msg)
	wantError(t, err, 550, "5.7.1", "dave@a.example", "MF-05")
	// An authenticated user sending as somebody else, envelope and header
	// both forged.
	_, err = f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", User: "dave@a.example", Recipients: []string{"bob@b.example"}}, msg)
	wantError(t, err, 550, "5.7.1", "dave@a.example")
	// Sender field naming the user, From somebody else.
	msg = message("alice@a.example", []string{"bob@b.example"}, nil, "Sender: dave@a.example\r\n")
	_, err = f.agent.Outbound(ctx, Envelope{MailFrom: "dave@a.example", User: "dave@a.example", Recipients: []string{"bob@b.example"}}, msg)
	wantError(t, err, 550, "5.7.1")
	if evs := f.audited("outbound", "bob@b.example"); len(evs) != 3 || evs[0].Verdict != "refused" {
		t.Errorf("audit: %+v", evs)
	}
	// Without a user (a relay on the backbone), MAIL FROM may be the
	// Sender.
	msg = message("alice@a.example", []string{"bob@b.example"}, nil, "Sender: dave@a.example\r\n")
	if _, err := f.agent.Outbound(ctx, Envelope{MailFrom: "Dave@a.example", Recipients: []string{"bob@b.example"}}, msg); err != nil {
		t.Errorf("MAIL FROM = Sender: %v", err)
	}
}

// TestOutboundSenderFields: Sender, Resent-From and Resent-Sender of a
// submitted message name only addresses the login may send as.
func TestOutboundSenderFields(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	user := Envelope{MailFrom: "alice@a.example", User: "alice@a.example", Recipients: []string{"bob@b.example"}}
	relay := Envelope{MailFrom: "alice@a.example", User: "ehr", RelayDomains: []string{"a.example"}, Recipients: []string{"bob@b.example"}}
	for _, c := range []struct {
		env   Envelope
		extra string
		field string // "" accepted
	}{
		{user, "Sender: alice@a.example\r\n", ""},
		{user, "Resent-From: Alice <ALICE@a.example>\r\nResent-Sender: alice@a.example\r\n", ""},
		{user, "Sender: dave@a.example\r\n", "Sender"},
		{user, "Resent-From: alice@a.example, mallory@evil.example\r\n", "Resent-From"},
		{user, "Resent-Sender: dave@a.example\r\n", "Resent-Sender"},
		{relay, "Sender: dave@a.example\r\nResent-From: carol@a.example\r\n", ""},
		{relay, "Sender: mallory@evil.example\r\n", "Sender"},
		{relay, "Resent-Sender: mallory@b.example\r\n", "Resent-Sender"},
	} {
		msg := message("alice@a.example", []string{"bob@b.example"}, nil, c.extra)
		_, err := f.agent.Outbound(ctx, c.env, msg)
		if c.field == "" {
			if err != nil {
				t.Errorf("%q from %s: %v", c.extra, c.env.User, err)
			}
			continue
		}
		wantError(t, err, 550, "5.7.1", c.field)
	}
	// A Sender that is not an address at all is malformed.
	_, err := f.agent.Outbound(ctx, user, message("alice@a.example", []string{"bob@b.example"}, nil, "Resent-From: not an address\r\n"))
	wantError(t, err, 554, "5.6.0", "Resent-From")
}

func TestOutboundBcc(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	env := Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example", "carol@r.example"}}
	// A recipient in no header: a blind copy.
	_, err := f.agent.Outbound(ctx, env, message("alice@a.example", []string{"bob@b.example"}, nil, ""))
	wantError(t, err, 550, "5.7.1", "carol@r.example", "Bcc")
	// A Bcc field.
	_, err = f.agent.Outbound(ctx, env, message("alice@a.example", []string{"bob@b.example"}, nil, "Bcc: carol@r.example\r\n"))
	wantError(t, err, 550, "5.7.1", "Bcc")
	// An empty Bcc field is dropped; Cc counts.
	res, err := f.agent.Outbound(ctx, env, message("alice@a.example", []string{"bob@b.example"}, []string{"carol@r.example"}, "Bcc:\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(res.Message, []byte("Bcc")) || !res.Recipients[1].Accepted {
		t.Errorf("result %+v\n%s", res.Recipients, res.Message)
	}
}

func TestOutboundNoSigningCertificate(t *testing.T) {
	f := newFixture(t)
	_, err := f.agent.Outbound(context.Background(), Envelope{MailFrom: "dave@a.example", Recipients: []string{"bob@b.example"}},
		message("dave@a.example", []string{"bob@b.example"}, nil, ""))
	wantError(t, err, 554, "5.7.0", "hisp cert issue dave@a.example")
	// A domain that is not ours.
	_, err = f.agent.Outbound(context.Background(), Envelope{MailFrom: "eve@elsewhere.example", Recipients: []string{"bob@b.example"}},
		message("eve@elsewhere.example", []string{"bob@b.example"}, nil, ""))
	wantError(t, err, 550, "5.7.1", "not a local domain")
}

func TestOutboundSingleUseCertificates(t *testing.T) {
	f := newFixture(t)
	p := f.p
	ctx := context.Background()
	// Sid signs with the digitalSignature certificate...
	res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "sid@a.example", Recipients: []string{"bob@b.example"}},
		message("sid@a.example", []string{"bob@b.example"}, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Signer.Equal(p.signOnly.Cert) {
		t.Errorf("signed with %v", res.Signer.KeyUsage)
	}
	// ... and receives with the keyEncipherment one (AS-06).
	res, err = f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", Recipients: []string{"sid@a.example"}},
		message("alice@a.example", []string{"sid@a.example"}, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Recipients[0]; !r.Accepted || len(r.Certs) != 1 || !r.Certs[0].Equal(p.encOnly.Cert) {
		t.Errorf("sid: %+v", r)
	}
}

func TestOutboundDroppedRecipients(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rcpts := []string{"bob@b.example", "nobody@r.example", "expired@r.example", "other@r.example", "ghost@b.example"}
	res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", Recipients: rcpts},
		message("alice@a.example", rcpts, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Recipients[0].Accepted || res.Sealed == nil {
		t.Fatalf("bob not sealed for: %+v", res.Recipients[0])
	}
	if _, err := open(t, res.Sealed, f.p.bob); err != nil {
		t.Errorf("bob cannot open: %v", err)
	}
	wants := map[string][]string{
		"nobody@r.example":  {"5.7.1", "no certificate"},
		"expired@r.example": {"5.7.1", "expired"},
		"other@r.example":   {"5.7.1", "not trusted"},
		"ghost@b.example":   {"5.1.1", "not a local address"},
	}
	for _, r := range res.Recipients[1:] {
		w := wants[r.Recipient]
		if r.Accepted || r.Status.Code != 550 || r.Status.Enhanced != w[0] || !strings.Contains(r.Status.Reason, w[1]) {
			t.Errorf("%s: %v", r.Recipient, r.Status)
		}
	}
	// Nobody left: no sealed message, the dropped recipient with why
	// (the gateway tells the sender by DSN).
	res, err = f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", Recipients: []string{"nobody@r.example"}},
		message("alice@a.example", []string{"nobody@r.example"}, nil, ""))
	if err != nil || res.Sealed != nil || res.Recipients[0].Accepted || res.Recipients[0].Status.Enhanced != "5.7.1" {
		t.Errorf("only a dropped recipient: err %v, sealed %d bytes, %+v", err, len(res.Sealed), res.Recipients)
	}
}

func TestOutboundAddressBoundPreferred(t *testing.T) {
	f := newFixture(t)
	p := f.p
	rcpts := []string{"bob@b.example", "carl@b.example", "multi@b.example"}
	res, err := f.agent.Outbound(context.Background(), Envelope{MailFrom: "alice@a.example", Recipients: rcpts},
		message("alice@a.example", rcpts, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	// AS-08: Bob has both; his own certificate wins.
	if r := res.Recipients[0]; !certsEqual(r.Certs, []*x509.Certificate{p.bob.Cert}) {
		t.Errorf("bob encrypted to %d certificates", len(r.Certs))
	}
	// Carl has none of his own: the organization's.
	if r := res.Recipients[1]; !r.Accepted || !certsEqual(r.Certs, []*x509.Certificate{p.bOrg.Cert}) {
		t.Errorf("carl: %+v", r)
	}
	// AS-07: every valid certificate.
	if r := res.Recipients[2]; !certsEqual(r.Certs, []*x509.Certificate{p.multi1.Cert, p.multi2.Cert}) {
		t.Errorf("multi encrypted to %d certificates", len(r.Certs))
	}
	for _, id := range []*testpki.Identity{p.bob, p.bOrg, p.multi1, p.multi2} {
		if _, err := open(t, res.Sealed, id); err != nil {
			t.Errorf("%s cannot open: %v", id.Cert.Subject, err)
		}
	}
}

func TestOutboundStoreChanges(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	send := func() RecipientResult {
		t.Helper()
		res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", Recipients: []string{"carol@r.example"}},
			message("alice@a.example", []string{"carol@r.example"}, nil, ""))
		if err != nil {
			t.Fatal(err)
		}
		return res.Recipients[0]
	}
	if r := send(); !r.Accepted {
		t.Fatalf("carol: %v", r.Status)
	}
	// The admin removes the anchor of r.example: the same agent stops
	// sending there...
	anchors, err := f.st.Anchors(ctx, "a.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, an := range anchors {
		if an.Fingerprint == store.Fingerprint(f.p.caR.Cert.Raw) {
			if _, err := f.st.RemoveAnchor(ctx, "a.example", an.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r := send(); r.Accepted || r.Status.Enhanced != "5.7.1" {
		t.Fatalf("after the anchor was removed: %+v", r)
	}
	// ... and adds it again, outbound only: sending works again.
	if _, err := f.st.AddAnchor(ctx, "a.example", f.p.caR.Cert, store.DirectionOut); err != nil {
		t.Fatal(err)
	}
	if r := send(); !r.Accepted {
		t.Fatalf("after the anchor was added: %v", r.Status)
	}
	// A new certificate for a local recipient is used at once too.
	if _, err := f.st.AddCertificate(ctx, "carl@b.example", f.p.multi1.Cert, nil, nil); err != nil {
		t.Fatal(err)
	}
	res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "alice@a.example", Recipients: []string{"carl@b.example"}},
		message("alice@a.example", []string{"carl@b.example"}, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	// multi1 binds to multi@, not carl@: found but not trusted, and the
	// stop rule keeps the organization's certificate out (CD-08).
	if r := res.Recipients[0]; r.Accepted || !strings.Contains(r.Status.Reason, "not trusted") {
		t.Errorf("carl with a wrongly bound certificate: %+v", r)
	}
}

func TestOutboundAddsMessageIDAndDate(t *testing.T) {
	f := newFixture(t)
	msg := []byte("From: alice@a.example\nTo: bob@b.example\nSubject: hi\n\nhello\n")
	res, err := f.agent.Outbound(context.Background(), Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.MessageID, "<") || !strings.HasSuffix(res.MessageID, "@a.example>") {
		t.Errorf("Message-ID %q", res.MessageID)
	}
	o, err := open(t, res.Sealed, f.p.bob)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(first(splitMessage(o.Message)))
	if err != nil {
		t.Fatal(err)
	}
	if h.get("message-id") != res.MessageID || h.get("date") == "" || h.get("mime-version") != "1.0" || h.get("subject") != "hi" {
		t.Errorf("inner header:\n%s", o.Message)
	}
}

func first(a, _ []byte) []byte { return a }

func TestOutboundDiscoveryFailureIsTemporary(t *testing.T) {
	f := newFixture(t)
	// A resolver that refuses: a closed UDP port.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	a := f.newAgent(certs.DiscoveryOptions{Resolver: addr, DNSTimeout: 300e6})
	rcpts := []string{"bob@b.example", "carol@r.example"}
	res, err := a.Outbound(context.Background(), Envelope{MailFrom: "alice@a.example", Recipients: rcpts},
		message("alice@a.example", rcpts, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Recipients[1]; r.Accepted || r.Status.Code != 451 || r.Status.Enhanced != "4.4.3" {
		t.Errorf("carol: %+v", r)
	}
	if !res.Recipients[0].Accepted {
		t.Errorf("bob %+v", res.Recipients[0])
	}
	if evs := f.audited("outbound", "carol@r.example"); len(evs) != 1 || evs[0].Verdict != "deferred" {
		t.Errorf("audit %+v", evs)
	}
}

func TestOutboundMalformed(t *testing.T) {
	f := newFixture(t)
	env := Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}
	for name, msg := range map[string]string{
		"no header":      "\r\nbody\r\n",
		"bad line":       "From alice Mon Mar 2\r\nTo: bob@b.example\r\n\r\nx",
		"continuation":   " From: alice@a.example\r\n\r\n",
		"no To":          "From: alice@a.example\r\n\r\nx",
		"two From":       "From: alice@a.example, bob@b.example\r\nTo: bob@b.example\r\n\r\nx",
		"bad From":       "From: <<<\r\nTo: bob@b.example\r\n\r\nx",
		"bad To":         "From: alice@a.example\r\nTo: bob@@b\r\n\r\nx",
		"empty":          "",
		"no recipients?": "From: alice@a.example\r\nTo: undisclosed-recipients:;\r\n\r\nx",
	} {
		_, err := f.agent.Outbound(context.Background(), env, []byte(msg))
		var e *Error
		if !errors.As(err, &e) || e.Status.Code < 500 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestOutboundNotificationNullSender(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rcpts := []string{"carol@r.example", "nobody@r.example"}
	mdnMsg := []byte("From: bob@b.example\r\nTo: carol@r.example, nobody@r.example\r\nSubject: Processed\r\n" +
		"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nprocessed\r\n--b--\r\n")
	// hisp's own MDN, null reverse path: sealed, and the recipient it
	// cannot reach dropped (never bounced: the gateway has no sender to
	// tell).
	res, err := f.agent.Outbound(ctx, Envelope{MailFrom: "<>", Recipients: rcpts}, mdnMsg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Recipients[0].Accepted || res.Recipients[1].Accepted || res.Sealed == nil {
		t.Errorf("%+v", res.Recipients)
	}
	// A user may not send with a null reverse path.
	_, err = f.agent.Outbound(ctx, Envelope{MailFrom: "", User: "bob@b.example", Recipients: rcpts}, mdnMsg)
	wantError(t, err, 550, "5.7.1")
	// Nor may anybody send an ordinary message with one.
	_, err = f.agent.Outbound(ctx, Envelope{MailFrom: "", Recipients: rcpts[:1]}, message("bob@b.example", rcpts[:1], nil, ""))
	wantError(t, err, 550, "5.7.1")
}

// TestConcurrent sends and receives from several goroutines on one agent
// while the configuration changes (run with -race).
func TestConcurrent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rcpts := []string{"bob@b.example", "carol@r.example", "multi@b.example"}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				env := Envelope{MailFrom: "alice@a.example", Recipients: rcpts}
				out, err := f.agent.Outbound(ctx, env, message("alice@a.example", rcpts, nil, ""))
				if err != nil {
					errs <- err
					return
				}
				env.Recipients = []string{"bob@b.example", "multi@b.example"}
				if _, err := f.agent.Inbound(ctx, env, out.Sealed); err != nil {
					errs <- err
					return
				}
			}
			if g == 0 {
				if _, err := f.st.AddDomain(ctx, "d.example"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNoStore(t *testing.T) {
	a := New(Options{Logger: slog.New(slog.DiscardHandler)})
	defer a.Close()
	msg := message("alice@a.example", []string{"bob@b.example"}, nil, "")
	env := Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}
	if _, err := a.Outbound(context.Background(), env, msg); err == nil {
		t.Error("Outbound without a store succeeded")
	}
	if _, err := a.Inbound(context.Background(), env, msg); err == nil {
		t.Error("Inbound without a store succeeded")
	}
	if _, err := a.Outbound(context.Background(), env, []byte("garbage")); err == nil {
		t.Error("Outbound of garbage succeeded")
	}
}
