package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// The fuzz targets use a fixed PKI committed in testdata/fuzzpki, so that
// the committed seed messages stay decryptable and verifiable: a CA valid
// for a century, bob@b.example (local recipient) and ralph@r.example (remote
// sender). HISP_AGENT_WRITE_FUZZ=1 go test -run TestWriteFuzzFixtures
// remakes them and the seed corpus.
const fuzzPKIDir = "testdata/fuzzpki"

type fuzzPKI struct {
	ca, bob, ralph *testpki.Identity
}

func TestWriteFuzzFixtures(t *testing.T) {
	if os.Getenv("HISP_AGENT_WRITE_FUZZ") == "" {
		t.Skip("set HISP_AGENT_WRITE_FUZZ=1 to remake the fuzz PKI and seed corpus")
	}
	long := time.Now().AddDate(100, 0, 0)
	ca := testpki.Issue(t, nil, testpki.Options{CN: "fuzz CA", CA: true, NotAfter: long})
	p := fuzzPKI{
		ca:    ca,
		bob:   testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@b.example"}, NotAfter: long}),
		ralph: testpki.Issue(t, ca, testpki.Options{Email: []string{"ralph@r.example"}, NotAfter: long}),
	}
	if err := os.MkdirAll(fuzzPKIDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]*testpki.Identity{"ca": p.ca, "bob": p.bob, "ralph": p.ralph} {
		id.WriteFiles(t, fuzzPKIDir, name)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzInbound")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, msg := range fuzzSeeds(t, p) {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(msg)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fuzzSeeds are messages that reach each stage of Inbound.
func fuzzSeeds(t testing.TB, p fuzzPKI) map[string][]byte {
	to := []string{"bob@b.example"}
	good := message("ralph@r.example", to, nil, "X-Hisp-Verification: forged\r\n")
	sealed := seal(t, good, p.ralph, p.bob)
	mdnMsg := []byte("From: ralph@r.example\r\nTo: bob@b.example\r\nMessage-ID: <m@r.example>\r\n" +
		"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nok\r\n--b--\r\n")
	return map[string][]byte{
		"sealed":      sealed,
		"sealed-mdn":  seal(t, mdnMsg, p.ralph, p.bob),
		"outer-from":  bytes.Replace(sealed, []byte("ralph@r.example"), []byte("boss@r.example"), 1),
		"plain":       good,
		"self-signed": seal(t, good, p.bob, p.bob),
		"empty":       {},
		"header-only": []byte("From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"),
	}
}

func loadFuzzPKI(t testing.TB) fuzzPKI {
	load := func(name string) *testpki.Identity {
		cb, err := os.ReadFile(filepath.Join(fuzzPKIDir, name+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		kb, err := os.ReadFile(filepath.Join(fuzzPKIDir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cblock, _ := pem.Decode(cb)
		kblock, _ := pem.Decode(kb)
		if cblock == nil || kblock == nil {
			t.Fatalf("%s: no PEM", name)
		}
		cert, err := x509.ParseCertificate(cblock.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		key, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return &testpki.Identity{Cert: cert, Key: key.(crypto.Signer)}
	}
	return fuzzPKI{ca: load("ca"), bob: load("bob"), ralph: load("ralph")}
}

// fuzzAgent is an agent for b.example, which trusts the fuzz CA both ways.
func fuzzAgent(t testing.TB, p fuzzPKI) *Agent {
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.AddDomain(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddAddress(ctx, "bob@b.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddCertificate(ctx, "bob@b.example", p.bob.Cert, nil, p.bob.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddAnchor(ctx, "b.example", p.ca.Cert, store.DirectionBoth); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	a := New(Options{Store: st, Logger: logger, Validator: trust.NewValidator(trust.Options{Logger: logger})})
	t.Cleanup(func() { a.Close() })
	return a
}

// checkInbound checks what Inbound may return for any input: an accepted
// message with exactly one verification field of ours on top, or an *Error
// with an SMTP status and a one-line reason.
func checkInbound(t *testing.T, res *InboundResult, err error) {
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
		if e.Status.Code < 400 || e.Status.Code > 599 || strings.ContainsAny(e.Status.Reason, "\r\n") {
			t.Fatalf("bad status %q", e.Status)
		}
		return
	}
	if !res.Recipients[0].Accepted || !bytes.HasPrefix(res.Message, []byte(VerificationHeader+": pass;")) {
		t.Fatalf("accepted without verification: %+v\n%q", res.Recipients, res.Message)
	}
	hb, _ := splitMessage(res.Message)
	h, err := parseHeader(hb)
	if err != nil {
		t.Fatalf("filed header does not parse: %v", err)
	}
	if n := len(h.values(strings.ToLower(VerificationHeader))); n != 1 {
		t.Fatalf("%d verification fields in %q", n, hb)
	}
}

// FuzzInbound feeds arbitrary bytes to Inbound as a message from
// ralph@r.example to bob@b.example.
func FuzzInbound(f *testing.F) {
	p := loadFuzzPKI(f)
	a := fuzzAgent(f, p)
	for _, msg := range fuzzSeeds(f, p) {
		f.Add(msg)
	}
	env := Envelope{MailFrom: "ralph@r.example", Recipients: []string{"bob@b.example"}}
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, err := a.Inbound(context.Background(), env, msg)
		checkInbound(t, res, err)
	})
}

// FuzzInboundInner fuzzes the inner message, the part a signature protects
// and mutations of a whole message hardly reach: the bytes follow a From and
// To field, are sealed by ralph for bob, and go through Inbound.
func FuzzInboundInner(f *testing.F) {
	p := loadFuzzPKI(f)
	a := fuzzAgent(f, p)
	for _, s := range []string{
		"Subject: hi\r\n\r\nbody\r\n",
		"X-Hisp-Verification: pass\r\nx-hisp-verification:\r\n  folded\r\n\r\n",
		"Cc: bob@b.example, (comment) \"q\"@x\r\nSender: ralph@r.example\r\n\r\n",
		"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x--\r\n",
		"Message-ID: <a@b>\r\nDisposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	env := Envelope{MailFrom: "ralph@r.example", Recipients: []string{"bob@b.example"}}
	f.Fuzz(func(t *testing.T, inner []byte) {
		msg := append([]byte("From: ralph@r.example\r\nTo: bob@b.example\r\n"), inner...)
		sealed, err := sealErr(msg, p.ralph, p.bob)
		if err != nil {
			return // smime refuses to seal it; not the agent's business
		}
		res, err := a.Inbound(context.Background(), env, sealed)
		checkInbound(t, res, err)
	})
}

// TestFuzzSeedAccepted keeps the committed fuzz PKI and seeds honest: the
// committed sealed seed must be accepted, so that fuzzing starts from a
// message that reaches every stage.
func TestFuzzSeedAccepted(t *testing.T) {
	p := loadFuzzPKI(t)
	a := fuzzAgent(t, p)
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzInbound", "sealed"))
	if err != nil {
		t.Fatal(err)
	}
	_, lit, ok := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if !ok || !strings.HasPrefix(lit, "[]byte(") || !strings.HasSuffix(lit, ")") {
		t.Fatalf("corpus file: %q", b)
	}
	msg, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lit, "[]byte("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Inbound(context.Background(), Envelope{MailFrom: "ralph@r.example", Recipients: []string{"bob@b.example"}}, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	checkInbound(t, res, nil)
}

// FuzzOutbound feeds arbitrary messages from bob@b.example to himself to
// Outbound: refused with an *Error, or sealed for him.
func FuzzOutbound(f *testing.F) {
	p := loadFuzzPKI(f)
	a := fuzzAgent(f, p)
	for _, s := range []string{
		"From: bob@b.example\r\nTo: bob@b.example\r\n\r\nhello\r\n",
		"From: Bob <bob@b.example>\nTo: \"B\" <BOB@b.example>, x@y.example\nBcc:\nMessage-ID:\n\nhi",
		"From: bob@b.example\r\nTo: bob@b.example\r\nContent-Type: multipart/report; report-type=disposition-notification\r\n\r\n",
		"From: bob@b.example\r\nTo: g:bob@b.example;\r\n\tfolded\r\nCc: =?x-unknown?q?a?= <c@d>\r\n",
	} {
		f.Add([]byte(s))
	}
	env := Envelope{MailFrom: "bob@b.example", User: "bob@b.example", Recipients: []string{"bob@b.example"}}
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, err := a.Outbound(context.Background(), env, msg)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status.Code < 400 || strings.ContainsAny(e.Status.Reason, "\r\n") {
				t.Fatalf("error %v", err)
			}
			return
		}
		if r := res.Recipients[0]; !r.Accepted || res.Sealed == nil || res.MessageID == "" {
			t.Fatalf("not sealed: %+v", r)
		}
	})
}
