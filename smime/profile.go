package smime

import (
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/smime/cms"
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

// DefaultProfile is what hisp sends unless configured otherwise: AES-128-CBC
// (the one cipher every Direct implementation opens), RSA-OAEP with SHA-256
// and a SHA-256 signature (Algorithms table).
var DefaultProfile = Profile{Cipher: cms.AES128CBC, KeyTransport: cms.RSAOAEPSHA256, Digest: SHA256}

// Complete returns p with its zero fields set from DefaultProfile.
func (p Profile) Complete() Profile {
	if p.Cipher == 0 {
		p.Cipher = DefaultProfile.Cipher
	}
	if p.KeyTransport == 0 {
		p.KeyTransport = DefaultProfile.KeyTransport
	}
	if p.Digest == 0 {
		p.Digest = DefaultProfile.Digest
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

// ParseCipher parses the content ciphers a profile may name: aes128-cbc,
// aes256-cbc, aes128-gcm and aes256-gcm (AES-192 is accepted inbound but
// never chosen for sending).
func ParseCipher(s string) (cms.ContentCipher, error) {
	c, err := cms.ParseContentCipher(s)
	if err != nil || c == cms.AES192CBC || c == cms.AES192GCM {
		return 0, fmt.Errorf("unknown cipher %q: want aes128-cbc, aes256-cbc, aes128-gcm or aes256-gcm", s)
	}
	return c, nil
}

// ParseOAEP parses the key transport setting: "sha256" (RSA-OAEP with
// SHA-256 and MGF1-SHA-256), "sha1" (RSA-OAEP with SHA-1) or "off" (RSA
// PKCS #1 v1.5), any case.
func ParseOAEP(s string) (cms.KeyTransport, error) {
	switch strings.ToLower(s) {
	case "sha256", "sha-256":
		return cms.RSAOAEPSHA256, nil
	case "sha1", "sha-1":
		return cms.RSAOAEPSHA1, nil
	case "off", "none", "pkcs1", "pkcs1v15":
		return cms.RSAPKCS1v15, nil
	}
	return 0, fmt.Errorf("unknown oaep %q: want sha256, sha1 or off", s)
}

// OAEPName is the configuration word of a key transport, the inverse of
// ParseOAEP.
func OAEPName(k cms.KeyTransport) string {
	switch k {
	case cms.RSAOAEPSHA256:
		return "sha256"
	case cms.RSAOAEPSHA1:
		return "sha1"
	case cms.RSAPKCS1v15:
		return "off"
	}
	return k.String()
}
