package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/smallstep/pkcs7"
)

// countFields counts the header fields named name (any case) in the header
// of msg.
func countFields(t testing.TB, msg []byte, name string) int {
	t.Helper()
	hb, _ := splitMessage(msg)
	h, err := parseHeader(hb)
	if err != nil {
		t.Fatalf("filed message header: %v\n%s", err, msg)
	}
	return len(h.values(strings.ToLower(name)))
}

func TestInboundRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Alice's message carries a forged verification field; it goes through
	// Outbound and comes back in through Inbound.
	msg := message("alice@a.example", []string{"bob@b.example"}, nil,
		"X-Hisp-Verification: pass; signer=\"the president\"\r\nDisposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n")
	env := Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}
	out, err := f.agent.Outbound(ctx, env, msg)
	if err != nil {
		t.Fatal(err)
	}
	env.RemoteAddr = "192.0.2.1:25"
	res, err := f.agent.Inbound(ctx, env, out.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(res.Message, []byte(VerificationHeader+": pass; domain=b.example;")) {
		t.Errorf("filed message does not start with the verification field:\n%s", res.Message)
	}
	if n := countFields(t, res.Message, VerificationHeader); n != 1 || bytes.Contains(res.Message, []byte("president")) {
		t.Errorf("%d verification fields; forged one kept?\n%s", n, res.Message)
	}
	for _, w := range []string{"signer=\"CN=alice@a.example", "anchor=\"CN=a.example CA", "binding=address-bound",
		"digest=sha256", "cipher=aes128-cbc", "key-transport=rsa-oaep-sha256", "signer-san=\"email:alice@a.example\"", "host=hisp.test"} {
		if !bytes.Contains(res.Message, []byte(w)) {
			t.Errorf("verification lacks %q:\n%s", w, res.Message)
		}
	}
	// Folded lines stay under 78 characters.
	hb, _ := splitMessage(res.Message)
	for _, l := range strings.Split(string(hb), "\r\n") {
		if len(l) > 78 && strings.HasPrefix(l, VerificationHeader) {
			t.Errorf("long line %q", l)
		}
	}
	if !bytes.HasSuffix(res.Message, []byte("\r\n\r\nPatient was discharged in good health.\r\n")) {
		t.Errorf("body changed:\n%s", res.Message)
	}
	if !res.Signer.Equal(f.p.alice.Cert) || !res.Anchor.Equal(f.p.caA.Cert) || res.From != "alice@a.example" ||
		res.MessageID != out.MessageID || res.Notification ||
		res.DispositionOptions != "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true" {
		t.Errorf("result %+v", res)
	}
	if r := res.Recipients[0]; !r.Accepted || !r.Local || r.Status.Code != 250 {
		t.Errorf("bob: %+v", r)
	}
	if evs := f.audited("inbound", "bob@b.example"); len(evs) != 1 || evs[0].Verdict != "accepted" ||
		!strings.Contains(evs[0].Actor, "192.0.2.1") || !strings.Contains(evs[0].Subject, out.MessageID) {
		t.Errorf("audit %+v", evs)
	}
}

func TestInboundRemoteSender(t *testing.T) {
	f := newFixture(t)
	p := f.p
	ctx := context.Background()
	to := []string{"bob@b.example", "cathy@c.example", "ghost@b.example"}
	msg := message("ralph@r.example", to, nil, "x-hisp-verification: forged\r\n")
	sealed := seal(t, msg, p.ralph, p.bob, p.cathy)
	res, err := f.agent.Inbound(ctx, Envelope{MailFrom: "ralph@r.example", Recipients: to}, sealed)
	if err != nil {
		t.Fatal(err)
	}
	// Bob's domain trusts r.example; Cathy's does not; ghost does not
	// exist.
	r := res.Recipients
	if !r[0].Accepted || r[1].Accepted || r[1].Status.Enhanced != "5.7.1" || !strings.Contains(r[1].Status.Reason, "c.example") ||
		r[2].Accepted || r[2].Status.Code != 550 || r[2].Status.Enhanced != "5.1.1" {
		t.Errorf("recipients %+v", r)
	}
	if countFields(t, res.Message, VerificationHeader) != 1 || bytes.Contains(res.Message, []byte("forged")) {
		t.Errorf("filed:\n%s", res.Message)
	}
	if !res.Anchor.Equal(p.caR.Cert) {
		t.Errorf("anchor %s", res.Anchor.Subject)
	}
	for _, rcpt := range to {
		if len(f.audited("inbound", rcpt)) != 1 {
			t.Errorf("no audit record for %s", rcpt)
		}
	}
}

func TestInboundOrganizationKey(t *testing.T) {
	f := newFixture(t)
	// Encrypted to the organization-bound certificate of b.example only
	// (IN-02): Carl has no certificate of his own.
	to := []string{"carl@b.example"}
	sealed := seal(t, message("ralph@r.example", to, nil, ""), f.p.ralph, f.p.bOrg)
	res, err := f.agent.Inbound(context.Background(), Envelope{MailFrom: "ralph@r.example", Recipients: to}, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Recipients[0].Accepted {
		t.Errorf("%+v", res.Recipients[0])
	}
}

func TestInboundRefused(t *testing.T) {
	f := newFixture(t)
	p := f.p
	ctx := context.Background()
	to := []string{"bob@b.example"}
	env := Envelope{MailFrom: "ralph@r.example", Recipients: to, RemoteAddr: "192.0.2.7:4000"}
	good := message("ralph@r.example", to, nil, "")
	tampered := seal(t, good, p.ralph, p.bob)
	// Flip a character in the middle of the base64 body.
	i := len(tampered) / 2
	for tampered[i] == '\r' || tampered[i] == '\n' {
		i++
	}
	if tampered[i] == 'A' {
		tampered[i] = 'B'
	} else {
		tampered[i] = 'A'
	}
	sealedGood := seal(t, good, p.ralph, p.bob)
	outerFrom := bytes.Replace(sealedGood, []byte("From: Test Sender <ralph@r.example>"), []byte("From: Boss <boss@r.example>"), 1)
	outerTo := bytes.Replace(sealedGood, []byte("To: bob@b.example"), []byte("To: bob@b.example, x@b.example"), 1)
	hdr, body := splitMessage(canonical(good))
	unsigned, err := smime.Encrypt(smime.Wrap(append(hdr, "\r\n\r\n"...), body), routing(t, good),
		[]cms.Recipient{{Cert: p.bob.Cert}}, smime.SealOptions{})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		env      Envelope
		msg      []byte
		code     int
		enhanced string
		words    []string
	}{
		{"untrusted signer", env, seal(t, good, p.ralphX, p.bob), 550, "5.7.1", []string{"not trusted by b.example"}},
		// The signing time lies outside the certificate's validity: smime
		// refuses the signature itself.
		{"expired signer", env, seal(t, good, p.ralphOld, p.bob), 550, "", []string{"validity"}},
		{"signer bound to another address", env, seal(t, good, p.mallory, p.bob), 550, "5.7.1", []string{"ralph@r.example"}},
		{"tampered ciphertext", env, tampered, 550, "", nil},
		{"plain mail", env, good, 550, "5.7.1", []string{"encrypted"}},
		{"unsigned", env, unsigned, 550, "5.7.1", []string{"signed"}},
		{"outer From differs", env, outerFrom, 550, "5.7.7", []string{"tampered", "From"}},
		{"outer To differs", env, outerTo, 550, "5.7.7", []string{"To"}},
		{"MAIL FROM not the From", Envelope{MailFrom: "boss@r.example", Recipients: to}, sealedGood, 550, "5.7.1", []string{"boss@r.example"}},
		{"empty MAIL FROM", Envelope{MailFrom: "", Recipients: to}, sealedGood, 550, "5.7.1", nil},
		{"RCPT not in To", Envelope{MailFrom: "ralph@r.example", Recipients: []string{"bob@b.example", "multi@b.example"}},
			seal(t, good, p.ralph, p.bob, p.multi1), 550, "5.7.1", []string{"multi@b.example", "To or Cc"}},
		{"not for us", env, seal(t, good, p.ralph, p.carol), 550, "5.7.5", nil},
		{"unknown recipient", Envelope{MailFrom: "ralph@r.example", Recipients: []string{"ghost@b.example"}}, sealedGood, 550, "5.1.1", nil},
		{"not a local domain", Envelope{MailFrom: "ralph@r.example", Recipients: []string{"x@elsewhere.example"}}, sealedGood, 550, "5.7.1", []string{"relay"}},
		{"garbage", env, []byte("\x00\x01\x02"), 550, "5.7.5", nil},
		{"empty", env, nil, 0, "", nil},
		{"no recipients", Envelope{MailFrom: "ralph@r.example"}, sealedGood, 554, "5.5.1", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := f.agent.Inbound(ctx, c.env, c.msg)
			if err == nil {
				t.Fatalf("accepted: %+v", res.Recipients)
			}
			if c.code == 0 {
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T)", err, err)
			}
			if e.Status.Code != c.code || (c.enhanced != "" && e.Status.Enhanced != c.enhanced) ||
				(c.enhanced == "" && !strings.HasPrefix(e.Status.Enhanced, "5.7.")) {
				t.Errorf("status %v", e.Status)
			}
			for _, w := range c.words {
				if !strings.Contains(e.Status.Reason, w) {
					t.Errorf("reason %q lacks %q", e.Status.Reason, w)
				}
			}
		})
	}
	// Every refusal was audited.
	evs := f.audited("inbound", "bob@b.example")
	refused := 0
	for _, e := range evs {
		if e.Verdict == "refused" {
			refused++
		}
	}
	if refused < 12 {
		t.Errorf("%d refusals audited for bob:\n%+v", refused, evs)
	}
}

// routing returns the routing header fields of msg, for the outside of a
// message sealed by hand.
func routing(t *testing.T, msg []byte) []byte {
	t.Helper()
	hb, _ := splitMessage(canonical(msg))
	h, err := parseHeader(hb)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, f := range h {
		switch f.lname {
		case "from", "sender", "to", "cc", "date", "message-id":
			out = append(out, f.raw...)
		}
	}
	return out
}

func canonical(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

func TestInboundNotification(t *testing.T) {
	f := newFixture(t)
	to := []string{"bob@b.example"}
	mdnMsg := []byte("From: ralph@r.example\r\nTo: bob@b.example\r\nSubject: Processed: hello\r\n" +
		"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <mdn1@r.example>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=\"disposition-notification\";\r\n\tboundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nprocessed\r\n" +
		"--b1\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: r.example; hisp\r\n" +
		"Final-Recipient: rfc822; ralph@r.example\r\nOriginal-Message-ID: <orig@b.example>\r\n" +
		"Disposition: automatic-action/MDN-sent-automatically;processed\r\n\r\n--b1--\r\n")
	sealed := seal(t, mdnMsg, f.p.ralph, f.p.bob)
	// MDNs may come with a null reverse path.
	res, err := f.agent.Inbound(context.Background(), Envelope{MailFrom: "", Recipients: to}, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Notification || res.MessageID != "<mdn1@r.example>" {
		t.Errorf("result %+v", res)
	}
	// A plain message is not a notification.
	res, err = f.agent.Inbound(context.Background(), Envelope{MailFrom: "ralph@r.example", Recipients: to},
		seal(t, message("ralph@r.example", to, nil, ""), f.p.ralph, f.p.bob))
	if err != nil || res.Notification {
		t.Errorf("plain message: %v %+v", err, res)
	}
}

func TestInboundDomainsEachVerified(t *testing.T) {
	f := newFixture(t)
	to := []string{"bob@b.example", "cathy@c.example"}
	sealed := seal(t, message("alice@a.example", to, nil, ""), f.p.alice, f.p.bob, f.p.cathy)
	res, err := f.agent.Inbound(context.Background(), Envelope{MailFrom: "alice@a.example", Recipients: to}, sealed)
	if err != nil {
		t.Fatal(err)
	}
	// Both b.example and c.example trust a.example's CA: two
	// verification fields, one per domain.
	if !res.Recipients[0].Accepted || !res.Recipients[1].Accepted || countFields(t, res.Message, VerificationHeader) != 2 {
		t.Errorf("%+v\n%s", res.Recipients, res.Message)
	}
}

// signTwice signs a wrapped message with two signers, in order, as a
// multipart/signed entity.
func signTwice(t *testing.T, msg []byte, signers ...*testpki.Identity) []byte {
	t.Helper()
	hdr, body := splitMessage(canonical(msg))
	entity := smime.Wrap(append(hdr, "\r\n\r\n"...), body)
	sd, err := pkcs7.NewSignedData(entity)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	for _, s := range signers {
		if err := sd.AddSigner(s.Cert, s.Key, pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	sd.Detach()
	sig, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"xx\"\r\n\r\n")
	b.WriteString("--xx\r\n")
	b.Write(entity)
	b.WriteString("\r\n--xx\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	b.WriteString(base64.StdEncoding.EncodeToString(sig))
	b.WriteString("\r\n--xx--\r\n")
	return b.Bytes()
}

func TestInboundSeveralSigners(t *testing.T) {
	// TV-07: one trusted signature bound to the sender suffices, whatever
	// its place among the SignerInfos.
	f := newFixture(t)
	p := f.p
	to := []string{"bob@b.example"}
	msg := message("ralph@r.example", to, nil, "")
	for _, order := range [][]*testpki.Identity{{p.ralphX, p.ralph}, {p.ralph, p.mallory}, {p.mallory, p.ralphX}} {
		sealed, err := smime.Encrypt(signTwice(t, msg, order...), routing(t, msg), []cms.Recipient{{Cert: p.bob.Cert}}, smime.SealOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.agent.Inbound(context.Background(), Envelope{MailFrom: "ralph@r.example", Recipients: to}, sealed)
		trustedOne := order[0] == p.ralph || order[1] == p.ralph
		switch {
		case trustedOne && err != nil:
			t.Errorf("%s, %s: %v", order[0].Cert.Subject, order[1].Cert.Subject, err)
		case trustedOne && !res.Signer.Equal(p.ralph.Cert):
			t.Errorf("signer %s", res.Signer.Subject)
		case !trustedOne && err == nil:
			t.Errorf("%s, %s: accepted", order[0].Cert.Subject, order[1].Cert.Subject)
		}
	}
}

// TestInboundWeakAlgorithms refuses 3DES content encryption and SHA-1
// signatures (Algorithms table), made by openssl as an old sender would.
func TestInboundWeakAlgorithms(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	f := newFixture(t)
	p := f.p
	dir := t.TempDir()
	bobCert, _ := p.bob.WriteFiles(t, dir, "bob")
	ralphCert, ralphKey := p.ralph.WriteFiles(t, dir, "ralph")
	to := []string{"bob@b.example"}
	plain := filepath.Join(dir, "plain.eml")
	hdr, body := splitMessage(message("ralph@r.example", to, nil, ""))
	if err := os.WriteFile(plain, smime.Wrap(append(hdr, "\r\n\r\n"...), body), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command("openssl", args...).Output()
		if err != nil {
			t.Skipf("openssl %v: %v", args, err)
		}
		return out
	}
	signed := filepath.Join(dir, "signed.eml")
	signedSHA1 := filepath.Join(dir, "signed-sha1.eml")
	os.WriteFile(signed, run("cms", "-sign", "-binary", "-in", plain, "-signer", ralphCert, "-inkey", ralphKey, "-md", "sha256"), 0o600)
	os.WriteFile(signedSHA1, run("cms", "-sign", "-binary", "-in", plain, "-signer", ralphCert, "-inkey", ralphKey, "-md", "sha1"), 0o600)
	// An older sender that does not wrap (MF-03): the outer header is the
	// message's.
	entity := filepath.Join(dir, "entity.eml")
	unwrapped := filepath.Join(dir, "unwrapped.eml")
	os.WriteFile(entity, []byte("Content-Type: text/plain\r\n\r\nunwrapped hello\r\n"), 0o600)
	os.WriteFile(unwrapped, run("cms", "-sign", "-binary", "-in", entity, "-signer", ralphCert, "-inkey", ralphKey), 0o600)
	env := Envelope{MailFrom: "ralph@r.example", Recipients: to}
	for name, c := range map[string]struct {
		msg      []byte
		enhanced string
	}{
		"3DES":     {run("cms", "-encrypt", "-des3", "-in", signed, "-from", "ralph@r.example", "-to", "bob@b.example", bobCert), "5.7.6"},
		"SHA-1":    {run("cms", "-encrypt", "-aes128", "-in", signedSHA1, "-from", "ralph@r.example", "-to", "bob@b.example", bobCert), "5.7.6"},
		"accepted": {run("cms", "-encrypt", "-aes256", "-in", signed, "-from", "ralph@r.example", "-to", "bob@b.example", bobCert), ""},
		"unwrapped": {run("cms", "-encrypt", "-aes256", "-in", unwrapped, "-from", "ralph@r.example", "-to", "bob@b.example",
			"-subject", "old style", bobCert), ""},
	} {
		res, err := f.agent.Inbound(context.Background(), env, c.msg)
		if c.enhanced == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			} else if name == "unwrapped" && (!bytes.Contains(res.Message, []byte("unwrapped hello")) ||
				!bytes.Contains(res.Message, []byte("Subject: old style"))) {
				t.Errorf("unwrapped message filed as\n%s", res.Message)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Status.Enhanced != c.enhanced {
			t.Errorf("%s: %v", name, err)
		}
	}
}
