package directprofile

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
)

// Verdict is what hisp does with an algorithm it receives.
type Verdict int

const (
	// Accept: allowed by the profile and implemented.
	Accept Verdict = iota + 1
	// Refuse: known, and forbidden by the profile.
	Refuse
	// Unsupported: known by name, not implemented; refused as unsupported.
	Unsupported
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Refuse:
		return "refuse"
	case Unsupported:
		return "unsupported"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Sending is whether hisp produces an algorithm.
type Sending int

const (
	// Never: hisp does not produce it (it may accept it).
	Never Sending = iota
	// Optional: hisp produces it when configured to ([outbound.profiles],
	// an imported key of that kind).
	Optional
	// Default: hisp produces it unless configured otherwise.
	Default
)

func (s Sending) String() string {
	switch s {
	case Never:
		return "never"
	case Optional:
		return "when configured"
	case Default:
		return "by default"
	}
	return fmt.Sprintf("Sending(%d)", int(s))
}

// Scheme is how a signature value is computed.
type Scheme int

// Signature schemes.
const (
	PKCS1v15 Scheme = iota + 1 // RSASSA-PKCS1-v1_5
	PSS                        // RSASSA-PSS, parameters in the AlgorithmIdentifier
	ECDSA
	DSA
)

// Digest is a row of Digests.
type Digest struct {
	Name    string
	Verdict Verdict
	Send    Sending
	Rule    string
	Hash    crypto.Hash
	OID     asn1.ObjectIdentifier
}

// Cipher is a row of Ciphers.
type Cipher struct {
	Name     string
	Verdict  Verdict
	Send     Sending
	Rule     string
	KeyBytes int // AES key length; 0 for the rows not implemented
	OID      asn1.ObjectIdentifier
}

// KeyTransport is a row of KeyTransports.
type KeyTransport struct {
	Name      string
	Verdict   Verdict
	Send      Sending
	Rule      string
	Hash, MGF crypto.Hash // RSAES-OAEP: the hash and the MGF1 hash; 0 for PKCS #1 v1.5
	OID       asn1.ObjectIdentifier
}

// OAEP reports whether k is an RSAES-OAEP variant.
func (k KeyTransport) OAEP() bool { return k.OID.Equal(oidRSAESOAEP) }

// Signature is a row of Signatures.
type Signature struct {
	Name    string
	Verdict Verdict
	Send    Sending
	Rule    string
	Scheme  Scheme
	Hash    crypto.Hash // 0: the SignerInfo's digest, or (PSS) its parameters
	X509    x509.SignatureAlgorithm
	OID     asn1.ObjectIdentifier
}

// Key is a row of Keys.
type Key struct {
	Name    string
	Verdict Verdict
	Send    Sending
	Rule    string
	Sign    bool // may sign
	Encrypt bool // may receive the content-encryption key
	MinBits int  // RSA: the smallest modulus
	OID     asn1.ObjectIdentifier
}

// Curve is a row of Curves.
type Curve struct {
	Name    string
	Verdict Verdict
	Send    Sending
	Rule    string
	Curve   elliptic.Curve
}

// DigestByOID returns the row of Digests with oid.
func DigestByOID(oid asn1.ObjectIdentifier) (Digest, bool) {
	for _, d := range Digests {
		if d.OID.Equal(oid) {
			return d, true
		}
	}
	return Digest{}, false
}

// DigestByName returns the row of Digests named name ("sha256").
func DigestByName(name string) (Digest, bool) {
	for _, d := range Digests {
		if d.Name == name {
			return d, true
		}
	}
	return Digest{}, false
}

// CipherByOID returns the row of Ciphers with oid.
func CipherByOID(oid asn1.ObjectIdentifier) (Cipher, bool) {
	for _, c := range Ciphers {
		if c.OID.Equal(oid) {
			return c, true
		}
	}
	return Cipher{}, false
}

// CipherByName returns the row of Ciphers named name ("aes128-cbc").
func CipherByName(name string) (Cipher, bool) {
	for _, c := range Ciphers {
		if c.Name == name {
			return c, true
		}
	}
	return Cipher{}, false
}

// KeyTransportByName returns the row of KeyTransports named name
// ("rsa-oaep-sha256").
func KeyTransportByName(name string) (KeyTransport, bool) {
	for _, k := range KeyTransports {
		if k.Name == name {
			return k, true
		}
	}
	return KeyTransport{}, false
}

// KeyTransportFor returns the row of KeyTransports for a key-encryption
// algorithm: rsaEncryption (PKCS #1 v1.5), or RSAES-OAEP with the hash and
// MGF1 hash of its parameters (ignored for other OIDs). ok is false for an
// algorithm or an OAEP hash pair not in the table.
func KeyTransportFor(oid asn1.ObjectIdentifier, hash, mgf crypto.Hash) (KeyTransport, bool) {
	for _, k := range KeyTransports {
		if !k.OID.Equal(oid) {
			continue
		}
		if !k.OAEP() || k.Hash == hash && k.MGF == mgf {
			return k, true
		}
	}
	return KeyTransport{}, false
}

// IsKeyTransportOID reports whether oid names a key transport of the table
// (whatever its parameters).
func IsKeyTransportOID(oid asn1.ObjectIdentifier) bool {
	for _, k := range KeyTransports {
		if k.OID.Equal(oid) {
			return true
		}
	}
	return false
}

// SignatureFor returns the row of Signatures for a signatureAlgorithm oid
// used with digest: the row with that OID and that hash, or whose hash
// comes from elsewhere (0). When the OID is known but no row fits the
// digest, it returns the OID's first row, whose Hash then differs from
// digest. ok is false for an OID in no row.
func SignatureFor(oid asn1.ObjectIdentifier, digest crypto.Hash) (s Signature, ok bool) {
	for _, r := range Signatures {
		if !r.OID.Equal(oid) {
			continue
		}
		if r.Hash == 0 || r.Hash == digest {
			return r, true
		}
		if !ok {
			s, ok = r, true
		}
	}
	return s, ok
}

// SignatureByScheme returns the row of Signatures for a scheme and hash.
func SignatureByScheme(scheme Scheme, h crypto.Hash) (Signature, bool) {
	for _, s := range Signatures {
		if s.Scheme == scheme && s.Hash == h {
			return s, true
		}
	}
	return Signature{}, false
}

// X509Signature returns the row of Signatures for the signature algorithm
// of a certificate, CRL or OCSP response.
func X509Signature(a x509.SignatureAlgorithm) (Signature, bool) {
	if a == x509.UnknownSignatureAlgorithm {
		return Signature{}, false
	}
	for _, s := range Signatures {
		if s.X509 == a {
			return s, true
		}
	}
	return Signature{}, false
}

// CheckX509Signature returns nil when the profile accepts a for the
// signature of a certificate, CRL or OCSP response, else an error saying
// which rule refuses it: "SHA1-RSA, which is not allowed: Direct accepts
// SHA256-RSA, ... (AL-02)", to follow "signed with".
func CheckX509Signature(a x509.SignatureAlgorithm) error {
	s, ok := X509Signature(a)
	if ok && s.Verdict == Accept {
		return nil
	}
	rule := "AL-04"
	if ok {
		rule = s.Rule
	}
	var accepted []string
	for _, s := range Signatures {
		if s.Verdict == Accept && s.X509 != x509.UnknownSignatureAlgorithm {
			accepted = append(accepted, s.X509.String())
		}
	}
	return fmt.Errorf("%s, which is not allowed: Direct accepts %s (%s)", a, strings.Join(accepted, ", "), rule)
}

// Name returns the name of the algorithm with oid in any table (ciphers,
// keys, key transports, signatures, digests, in that order), or "".
func Name(oid asn1.ObjectIdentifier) string {
	if c, ok := CipherByOID(oid); ok {
		return c.Name
	}
	for _, k := range Keys {
		if k.OID.Equal(oid) {
			return k.Name
		}
	}
	for _, k := range KeyTransports {
		if k.OID.Equal(oid) {
			if k.OAEP() {
				return "RSAES-OAEP"
			}
			return k.Name
		}
	}
	if s, ok := SignatureFor(oid, 0); ok {
		return s.Name
	}
	if d, ok := DigestByOID(oid); ok {
		return d.Name
	}
	return ""
}

// Use is what a key is checked for.
type Use int

const (
	// AnyUse: a certificate of a trust path, or one whose use is not yet
	// known: its key type must be one Direct uses, of an accepted size or
	// curve.
	AnyUse Use = iota
	// Signing: a signer's key.
	Signing
	// Encryption: a key-transport recipient's key, ours or a peer's.
	Encryption
)

func (u Use) String() string {
	switch u {
	case Signing:
		return "signing"
	case Encryption:
		return "encryption"
	}
	return "any use"
}

// KeyError is a key the profile refuses for a use.
type KeyError struct {
	Key   string // the key's type: a row name of Keys, else the Go type
	Bits  int    // RSA: the modulus size
	Curve string // ECDSA: the curve
	Use   Use
	// Weak is true when the key's type suits the use but its size or
	// curve does not; false when the type itself does not suit the use.
	Weak bool
	Rule string
	why  string
}

func (e *KeyError) Error() string { return e.why + " (" + e.Rule + ")" }

// KeyOf returns the row of Keys for a public key's type.
func KeyOf(pub crypto.PublicKey) (Key, bool) {
	name := ""
	switch k := pub.(type) {
	case *rsa.PublicKey:
		name = "RSA"
	case *ecdsa.PublicKey:
		name = "ECDSA"
	case ed25519.PublicKey:
		name = "Ed25519"
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			name = "X25519"
		}
	}
	for _, k := range Keys {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}

// CurveOf returns the row of Curves for c.
func CurveOf(c elliptic.Curve) (Curve, bool) {
	for _, r := range Curves {
		if r.Curve == c || c != nil && r.Curve.Params().Name == c.Params().Name {
			return r, true
		}
	}
	return Curve{}, false
}

// CheckKey checks a public key for a use: its type (Keys), the RSA
// modulus size (MinRSABits) and the ECDSA curve (Curves). It returns the
// key's row and a description ("RSA 2048", "ECDSA P-256"), or a *KeyError.
func CheckKey(pub crypto.PublicKey, use Use) (Key, string, error) {
	row, known := KeyOf(pub)
	if !known || row.Verdict != Accept {
		name := row.Name
		if !known {
			name = strings.TrimPrefix(fmt.Sprintf("%T", pub), "*")
		}
		rule := row.Rule
		if rule == "" {
			rule = "AL-12"
		}
		return row, "", &KeyError{Key: name, Use: use, Rule: rule,
			why: fmt.Sprintf("%s %s key: Direct uses %s keys", article(name), name, strings.Join(acceptedKeys(), " and "))}
	}
	if use == Encryption && !row.Encrypt || use == Signing && !row.Sign {
		return row, "", &KeyError{Key: row.Name, Use: use, Rule: row.Rule,
			why: fmt.Sprintf("%s %s key, which cannot be used for %s: Direct %s", article(row.Name), row.Name, use, keyUses(use))}
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < row.MinBits {
			return row, "", &KeyError{Key: row.Name, Bits: bits, Use: use, Weak: true, Rule: row.Rule,
				why: fmt.Sprintf("a %d-bit RSA key: Direct requires at least %d bits", bits, row.MinBits)}
		}
		return row, fmt.Sprintf("RSA %d", bits), nil
	case *ecdsa.PublicKey:
		c, ok := CurveOf(k.Curve)
		name := k.Curve.Params().Name
		if !ok || c.Verdict != Accept {
			rule := c.Rule
			if !ok {
				rule = row.Rule
			}
			return row, "", &KeyError{Key: row.Name, Curve: name, Use: use, Weak: true, Rule: rule,
				why: fmt.Sprintf("an ECDSA key on curve %s: Direct accepts %s", name, strings.Join(acceptedCurves(), " and "))}
		}
		return row, "ECDSA " + c.Name, nil
	}
	return row, row.Name, nil
}

// CheckCertKey is CheckKey for a certificate's key. The key's row is
// found by the algorithm of its SubjectPublicKeyInfo, so that keys
// crypto/x509 reads into no Go type (X448, RSASSA-PSS keys) or into a
// deprecated one (DSA) meet their row too.
func CheckCertKey(cert *x509.Certificate, use Use) (Key, string, error) {
	var spki struct {
		Algorithm struct {
			Algorithm asn1.ObjectIdentifier
			Params    asn1.RawValue `asn1:"optional"`
		}
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err == nil {
		for _, row := range Keys {
			if row.OID.Equal(spki.Algorithm.Algorithm) && row.Verdict != Accept {
				return row, "", &KeyError{Key: row.Name, Use: use, Rule: row.Rule,
					why: fmt.Sprintf("%s %s key: Direct uses %s keys", article(row.Name), row.Name, strings.Join(acceptedKeys(), " and "))}
			}
		}
	}
	row, desc, err := CheckKey(cert.PublicKey, use)
	if ke, ok := err.(*KeyError); ok && cert.PublicKey == nil {
		ke.Key = cert.PublicKeyAlgorithm.String()
		if spki.Algorithm.Algorithm != nil {
			ke.Key = spki.Algorithm.Algorithm.String()
		}
		ke.why = fmt.Sprintf("a key of algorithm %s: Direct uses %s keys", ke.Key, strings.Join(acceptedKeys(), " and "))
	}
	return row, desc, err
}

// article is "an" before a name read with a leading vowel sound ("an
// RSA", "an Ed25519", "an 8192-bit"), else "a".
func article(name string) string {
	if name != "" && strings.ContainsRune("AEFHILMNORSXaeio8", rune(name[0])) {
		return "an"
	}
	return "a"
}

func acceptedKeys() []string {
	var l []string
	for _, k := range Keys {
		if k.Verdict == Accept {
			l = append(l, k.Name)
		}
	}
	return l
}

func acceptedCurves() []string {
	var l []string
	for _, c := range Curves {
		if c.Verdict == Accept {
			l = append(l, c.Name)
		}
	}
	return l
}

// keyUses says which key types Direct uses for use.
func keyUses(use Use) string {
	var l []string
	for _, k := range Keys {
		if k.Verdict == Accept && (use == Encryption && k.Encrypt || use == Signing && k.Sign) {
			l = append(l, k.Name)
		}
	}
	verb := "signs with"
	if use == Encryption {
		verb = "encrypts to"
	}
	return verb + " " + strings.Join(l, " and ") + " keys"
}
