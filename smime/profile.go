package smime

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/smime/directprofile"
)

// Profile is the set of algorithms a message is sealed with for one
// partner: content encryption, key transport and signature digest. Partners
// differ in what they can open (the Direct Project's Java reference
// implementation reads no AES-GCM, older HISPs no RSA-OAEP with SHA-256), so
// the gateway keeps one per recipient domain ([outbound.profiles]). The zero
// value is the Direct default, DefaultProfile.
type Profile struct {
	Cipher       cms.ContentCipher // zero: AES-128-CBC
	KeyTransport cms.KeyTransport  // zero: RSA-OAEP with SHA-256
	Digest       Digest            // zero: SHA-256
}

// DefaultProfile is what hisp sends unless configured otherwise: the
// Default rows of the Direct profile's tables, AES-128-CBC (the one cipher
// every Direct implementation opens), RSA-OAEP with SHA-256 and a SHA-256
// signature.
var DefaultProfile = Profile{Cipher: defaultCipher(), KeyTransport: cms.DefaultKeyTransport, Digest: defaultDigest()}

func defaultCipher() cms.ContentCipher {
	for _, r := range directprofile.Ciphers {
		if r.Send == directprofile.Default {
			c, _ := cms.ParseContentCipher(r.Name)
			return c
		}
	}
	return 0
}

func defaultDigest() Digest {
	for _, r := range directprofile.Digests {
		if r.Send == directprofile.Default {
			d, _ := ParseDigest(r.Name)
			return d
		}
	}
	return 0
}

// Complete returns p with its zero fields set from DefaultProfile.
func (p Profile) Complete() Profile { return p.Or(DefaultProfile) }

// Or returns p with its zero fields set from def (a configured default
// profile, say).
func (p Profile) Or(def Profile) Profile {
	if p.Cipher == 0 {
		p.Cipher = def.Cipher
	}
	if p.KeyTransport == 0 {
		p.KeyTransport = def.KeyTransport
	}
	if p.Digest == 0 {
		p.Digest = def.Digest
	}
	return p
}

// String names the profile in the configuration's words, for logs and
// audit records: "cipher=aes128-cbc oaep=sha256 digest=sha256".
func (p Profile) String() string {
	p = p.Complete()
	return fmt.Sprintf("cipher=%s oaep=%s digest=%s", p.Cipher, OAEPName(p.KeyTransport), p.Digest)
}

// SealOptions returns the SealOptions that seal with p.
func (p Profile) SealOptions() SealOptions {
	p = p.Complete()
	return SealOptions{Cipher: p.Cipher, Digest: p.Digest}
}

// ParseProfile reads the three configuration values of a profile
// ("aes256-gcm", "sha1", "sha384"); an empty value leaves the field zero,
// so that Complete or a caller's own default fills it.
func ParseProfile(cipher, oaep, digest string) (Profile, error) {
	var p Profile
	var err error
	if cipher != "" {
		if p.Cipher, err = ParseCipher(cipher); err != nil {
			return p, err
		}
	}
	if oaep != "" {
		if p.KeyTransport, err = ParseOAEP(oaep); err != nil {
			return p, err
		}
	}
	if digest != "" {
		if p.Digest, err = ParseDigest(digest); err != nil {
			return p, err
		}
	}
	return p, nil
}

// ParseCipher parses the content ciphers a profile may name: those the
// Direct profile lets hisp send, aes128-cbc, aes256-cbc, aes128-gcm and
// aes256-gcm (AES-192 is accepted inbound but never chosen for sending).
func ParseCipher(s string) (cms.ContentCipher, error) {
	c, err := cms.ParseContentCipher(s)
	if err == nil && sendable(directprofile.CipherByName(c.String())) {
		return c, nil
	}
	var names []string
	for _, r := range directprofile.Ciphers {
		if r.Verdict == directprofile.Accept && r.Send != directprofile.Never {
			names = append(names, r.Name)
		}
	}
	return 0, fmt.Errorf("unknown cipher %q: want %s", s, orList(names))
}

func sendable(r directprofile.Cipher, ok bool) bool {
	return ok && r.Verdict == directprofile.Accept && r.Send != directprofile.Never
}

// oaepWords are the configuration words of the key transports hisp may
// send, in the order the error message lists them.
var oaepWords = []struct {
	words []string
	kt    cms.KeyTransport
}{
	{[]string{"sha256", "sha-256"}, cms.RSAOAEPSHA256},
	{[]string{"sha1", "sha-1"}, cms.RSAOAEPSHA1},
	{[]string{"off", "none", "pkcs1", "pkcs1v15"}, cms.RSAPKCS1v15},
}

// ParseOAEP parses the key transport setting: "sha256" (RSA-OAEP with
// SHA-256 and MGF1-SHA-256), "sha1" (RSA-OAEP with SHA-1) or "off" (RSA
// PKCS #1 v1.5), any case; each must be one the Direct profile lets hisp
// send.
func ParseOAEP(s string) (cms.KeyTransport, error) {
	var names []string
	for _, w := range oaepWords {
		r, ok := directprofile.KeyTransportByName(w.kt.String())
		if !ok || r.Verdict != directprofile.Accept || r.Send == directprofile.Never {
			continue
		}
		if slices.Contains(w.words, strings.ToLower(s)) {
			return w.kt, nil
		}
		names = append(names, w.words[0])
	}
	return 0, fmt.Errorf("unknown oaep %q: want %s", s, orList(names))
}

// OAEPName is the configuration word of a key transport, the inverse of
// ParseOAEP.
func OAEPName(k cms.KeyTransport) string {
	for _, w := range oaepWords {
		if w.kt == k {
			return w.words[0]
		}
	}
	return k.String()
}
