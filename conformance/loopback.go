package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/trust"
)

// checkLoopback seals a probe message to each published encryption
// certificate, as a partner would with what its discovery found, signed
// with the domain's own signing certificate, and opens it with the keys of
// the data directory as the gateway's inbound side does (IN-02): a
// published certificate whose key the server lacks, or a signature partners
// would refuse, shows here.
func (r *run) checkLoopback(ctx context.Context) {
	st := r.opts.Store
	if st == nil {
		r.skip("loopback", "%s: the probe opens messages with the domain's private keys, so it runs on the server (hisp check DOMAIN --data DIR)", r.opts.NoStore)
		return
	}
	now := r.opts.Now()
	var keys []cms.KeyPair
	var signer *smime.Signer
	signerOwner := ""
	for _, h := range r.held {
		if !h.rec.HasKey {
			continue
		}
		k, err := st.PrivateKey(ctx, h.rec.ID)
		if err != nil {
			r.fail("loopback", "the key of certificate %d (%s) cannot be read: %v", h.rec.ID, h.rec.Owner, err)
			continue
		}
		keys = append(keys, cms.KeyPair{Cert: h.cert, Key: k})
		usable := h.cert.KeyUsage&x509.KeyUsageDigitalSignature != 0 && !now.Before(h.cert.NotBefore) && now.Before(h.cert.NotAfter)
		// An organization-bound signer signs for any address of the
		// domain; prefer it, as the gateway does for mail without an
		// address certificate of its own.
		if usable && (signer == nil || !strings.Contains(h.rec.Owner, "@") && strings.Contains(signerOwner, "@")) {
			signer = &smime.Signer{Cert: h.cert, Key: k, Chain: h.chain}
			signerOwner = h.rec.Owner
		}
	}
	if signer == nil {
		r.fail("loopback", "no valid signing certificate (digitalSignature) with a key in the data directory: %s cannot sign messages (AS-06)", r.opts.Domain)
		return
	}
	// The signer as partners judge it (TV-01, TV-07).
	sv := r.validator().Validate(ctx, trust.Request{Cert: signer.Cert, Intermediates: signer.Chain, Anchors: r.anchors,
		Address: signerOwner, Purpose: trust.Signing})

	sealedTo := 0
	for _, p := range r.published {
		if p.cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			continue
		}
		sealedTo++
		r.probe(p, signer, signerOwner, sv, keys)
	}
	if sealedTo == 0 {
		r.skip("loopback", "no published certificate allows encryption: nothing to seal to (see the published checks)")
	}
}

// probe seals one message to p and opens it.
func (r *run) probe(p *publishedCert, signer *smime.Signer, signerOwner string, sv trust.Verdict, keys []cms.KeyPair) {
	check := fmt.Sprintf("loopback %s %s", p.owner, shortFP(p.cert))
	from, to := signerOwner, p.owner
	if !strings.Contains(from, "@") {
		from = "postmaster@" + from
	}
	if !strings.Contains(to, "@") {
		to = "postmaster@" + to
	}
	token := make([]byte, 12)
	rand.Read(token)
	tok := hex.EncodeToString(token)
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: hisp check loopback probe\r\nDate: %s\r\nMessage-ID: <check-%s@%s>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\nhisp check probe %s\r\n",
		from, to, r.opts.Now().UTC().Format(time.RFC1123Z), tok, r.opts.Domain, tok)
	prof := smime.DefaultProfile
	sealed, err := smime.Seal([]byte(msg), *signer, []cms.Recipient{{Cert: p.cert, KeyTransport: prof.KeyTransport}}, prof.SealOptions())
	if err != nil {
		r.fail(check, "cannot seal to the published certificate: %v", err)
		return
	}
	opened, err := smime.Open(sealed, keys)
	if err != nil {
		r.fail(check, "sealed to the published certificate, but no key of the data directory opens it: %v", err)
		return
	}
	switch {
	case opened.Recipient == nil || !opened.Recipient.Equal(p.cert):
		r.fail(check, "opened, but with the key of another certificate than the published one")
	case len(opened.ValidSigners()) == 0:
		r.fail(check, "opened, but no signature verifies")
	case !bytes.Contains(opened.Message, []byte("hisp check probe "+tok)):
		r.fail(check, "opened, but the content is not the probe's")
	case !sv.Trusted:
		r.fail(check, "sealed and opened with the domain's key, but partners would refuse its signer %s (%s): %s",
			shortFP(signer.Cert), signerOwner, sv.Reason)
	default:
		r.pass(check, "sealed to it (%s), opened with the domain's key, signature of %s (%s) verified and trusted by the domain's anchor",
			prof, shortFP(signer.Cert), signerOwner)
	}
}
