package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/trust"
)

// TestOutboundProfiles: a partner domain with a profile of its own gets a
// copy sealed with its algorithms, which openssl opens and verifies, while
// a recipient without one gets the default; the two are separate copies,
// each encrypted to its own recipients only.
func TestOutboundProfiles(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	f := newFixture(t)
	p := f.p
	ctx := context.Background()
	digests := []smime.Digest{smime.SHA256, smime.SHA384, smime.SHA512}
	i := 0
	for _, c := range []cms.ContentCipher{cms.AES128CBC, cms.AES256CBC, cms.AES128GCM, cms.AES256GCM} {
		for _, k := range []cms.KeyTransport{cms.RSAOAEPSHA256, cms.RSAOAEPSHA1, cms.RSAPKCS1v15} {
			prof := smime.Profile{Cipher: c, KeyTransport: k, Digest: digests[i%len(digests)]}
			i++
			t.Run(prof.String(), func(t *testing.T) {
				a := New(Options{Store: f.st, Discoverer: certs.NewDiscoverer(certs.DiscoveryOptions{Resolver: f.resolver}),
					Validator: trust.NewValidator(trust.Options{}), ReloadInterval: -1,
					Profiles: map[string]smime.Profile{"r.example": prof}})
				defer a.Close()
				msg := message("alice@a.example", []string{"bob@b.example", "carol@r.example"}, nil, "")
				res, err := a.Outbound(ctx, Envelope{MailFrom: "alice@a.example", User: "alice@a.example",
					Recipients: []string{"bob@b.example", "carol@r.example"}}, msg)
				if err != nil {
					t.Fatal(err)
				}
				partner := res.Copies[len(res.Copies)-1]
				if prof == smime.DefaultProfile {
					if len(res.Copies) != 1 || len(partner.Recipients) != 2 {
						t.Fatalf("the default profile twice: %d copies", len(res.Copies))
					}
				} else {
					if len(res.Copies) != 2 || fmt.Sprint(res.Copies[0].Recipients, partner.Recipients) != "[0] [1]" {
						t.Fatalf("want a default copy for bob and a partner copy for carol, got %d copies", len(res.Copies))
					}
					if res.Copies[0].Profile != smime.DefaultProfile {
						t.Errorf("bob's copy has %s", res.Copies[0].Profile)
					}
					if _, err := open(t, partner.Data, p.bob); err == nil {
						t.Error("bob can open the partner's copy: it should be encrypted to carol only")
					}
					if o, err := open(t, res.Copies[0].Data, p.bob); err != nil || o.Cipher != cms.AES128CBC || o.KeyTransport != cms.RSAOAEPSHA256 {
						t.Errorf("bob's copy: %v", err)
					}
				}
				o, err := open(t, partner.Data, p.carol)
				if err != nil {
					t.Fatal(err)
				}
				if o.Cipher != c || o.KeyTransport != k || o.Signers[0].Digest != prof.Digest.String() {
					t.Errorf("carol's copy sealed with %s, %s, %s", o.Cipher, o.KeyTransport, o.Signers[0].Digest)
				}
				signed := opensslDecryptVerify(t, partner.Data, p.carol, p.caA)
				if want := "micalg=" + prof.Digest.Micalg(); !bytes.Contains(signed, []byte(want)) {
					t.Errorf("signed entity lacks %s:\n%.300s", want, signed)
				}
			})
		}
	}
}

// opensslDecryptVerify opens sealed with openssl cms as recip, checks the
// signature against anchor and returns the signed (decrypted) entity.
func opensslDecryptVerify(t *testing.T, sealed []byte, recip, anchor *testpki.Identity) []byte {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := recip.WriteFiles(t, dir, "recip")
	caFile, _ := anchor.WriteFiles(t, dir, "ca")
	in, signed := filepath.Join(dir, "sealed.eml"), filepath.Join(dir, "signed.eml")
	if err := os.WriteFile(in, sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "cms", "-decrypt", "-in", in, "-recip", certFile, "-inkey", keyFile, "-out", signed).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, out)
	}
	out, err := exec.Command("openssl", "cms", "-verify", "-in", signed, "-CAfile", caFile).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Patient was discharged")) {
		t.Fatalf("openssl cms -verify: %v\n%.500s", err, out)
	}
	b, err := os.ReadFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
