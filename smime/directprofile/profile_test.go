package directprofile_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	dp "github.com/hisp-project/hisp/smime/directprofile"
)

// The tests below walk every row of the profile's tables against real
// inputs: messages, signatures, certificates and keys made by openssl, and
// what hisp makes itself, opened by openssl. A row without a recipe fails
// the test, so a row added to the tables must come with its proof.

var content = []byte("Content-Type: text/plain\r\n\r\nhello\r\n")

// lab is a directory where openssl makes inputs.
type lab struct {
	t   *testing.T
	dir string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (make test-deps)")
	}
	l := &lab{t: t, dir: t.TempDir()}
	if err := os.WriteFile(l.path("content"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *lab) path(name string) string { return filepath.Join(l.dir, name) }

// openssl runs openssl in the lab directory and returns its output.
func (l *lab) openssl(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = l.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func (l *lab) read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(l.path(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// identity is a key made by openssl and its self-signed certificate.
type identity struct {
	name string // files name.key, name.crt
	cert *x509.Certificate
	key  crypto.PrivateKey
}

func (id *identity) keyPair() cms.KeyPair { return cms.KeyPair{Cert: id.cert, Key: id.key} }

// selfSigned makes a key with the openssl req -newkey argument spec (e.g.
// "rsa:2048") and a self-signed certificate, with extra req options.
func (l *lab) selfSigned(t *testing.T, name string, newkey []string, extra ...string) *identity {
	t.Helper()
	args := append([]string{"req", "-x509", "-nodes", "-subj", "/CN=" + name, "-days", "2",
		"-keyout", name + ".key", "-out", name + ".crt"}, newkey...)
	l.openssl(t, append(args, extra...)...)
	return l.load(t, name)
}

// load reads name.crt and, when there is one, name.key.
func (l *lab) load(t *testing.T, name string) *identity {
	t.Helper()
	id := &identity{name: name}
	block, _ := pem.Decode(l.read(t, name+".crt"))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	id.cert = cert
	if b, err := os.ReadFile(l.path(name + ".key")); err == nil {
		block, _ := pem.Decode(b)
		if id.key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			id.key = nil // a key type Go does not read (X448, RSA-PSS)
		}
	}
	return id
}

// forcedKey makes a certificate for a key of a type that cannot sign its
// own certificate (or that Go cannot sign with), issued by ca: genpkey
// arguments make the key.
func (l *lab) forcedKey(t *testing.T, name string, ca *identity, genpkey ...string) *identity {
	t.Helper()
	l.openssl(t, append([]string{"genpkey", "-out", name + ".key"}, genpkey...)...)
	l.openssl(t, "pkey", "-in", name+".key", "-pubout", "-out", name+".pub")
	l.openssl(t, "x509", "-new", "-subj", "/CN="+name, "-days", "2", "-force_pubkey", name+".pub",
		"-key", ca.name+".key", "-out", name+".crt")
	return l.load(t, name)
}

// encrypt returns openssl's DER EnvelopedData of content to recipient,
// with openssl cms -encrypt options (which may name the recipient with
// -recip, followed by its -keyopt).
func (l *lab) encrypt(t *testing.T, to *identity, opts ...string) []byte {
	t.Helper()
	args := []string{"cms", "-encrypt", "-binary", "-in", "content", "-outform", "DER", "-out", "enc.der"}
	args = append(args, opts...)
	if !slices.Contains(opts, "-recip") {
		args = append(args, "-recip", to.name+".crt")
	}
	l.openssl(t, args...)
	return l.read(t, "enc.der")
}

// sign returns openssl's DER SignedData of content by signer, with
// openssl cms -sign options.
func (l *lab) sign(t *testing.T, signer *identity, opts ...string) []byte {
	t.Helper()
	args := []string{"cms", "-sign", "-nodetach", "-binary", "-in", "content", "-outform", "DER", "-out", "sig.der",
		"-signer", signer.name + ".crt", "-inkey", signer.name + ".key"}
	l.openssl(t, append(args, opts...)...)
	return l.read(t, "sig.der")
}

// verify parses a SignedData and verifies its first signer.
func verify(t *testing.T, der []byte) (string, error) {
	t.Helper()
	sd, err := cms.ParseSignedData(der)
	if err != nil {
		t.Fatal(err)
	}
	si := &sd.Signers[0]
	return si.Verify(sd.Content, sd.ContentType, sd.SignerCertificate(si))
}

// wantVerdict checks err against a row's verdict as package cms reports
// it: nil for Accept, ErrRefusedAlgorithm for Refuse, ErrUnsupportedAlgorithm
// for Unsupported.
func wantVerdict(t *testing.T, v dp.Verdict, err error) {
	t.Helper()
	switch v {
	case dp.Accept:
		if err != nil {
			t.Errorf("accepted row: %v", err)
		}
	case dp.Refuse:
		if !errors.Is(err, cms.ErrRefusedAlgorithm) {
			t.Errorf("refused row: got %v, want ErrRefusedAlgorithm", err)
		}
	case dp.Unsupported:
		if !errors.Is(err, cms.ErrUnsupportedAlgorithm) {
			t.Errorf("unsupported row: got %v, want ErrUnsupportedAlgorithm", err)
		}
	default:
		t.Errorf("verdict %v", v)
	}
}

// TestRules: every row cites a rule, and names are unique per table.
func TestRules(t *testing.T) {
	seen := map[string]bool{}
	check := func(table, name, rule string) {
		if !strings.HasPrefix(rule, "AL-") {
			t.Errorf("%s %s: rule %q", table, name, rule)
		}
		if seen[table+name] {
			t.Errorf("%s %s twice", table, name)
		}
		seen[table+name] = true
	}
	for _, r := range dp.Digests {
		check("digest", r.Name, r.Rule)
	}
	for _, r := range dp.Ciphers {
		check("cipher", r.Name, r.Rule)
	}
	for _, r := range dp.KeyTransports {
		check("key transport", r.Name, r.Rule)
	}
	for _, r := range dp.Signatures {
		check("signature", r.Name, r.Rule)
	}
	for _, r := range dp.Keys {
		check("key", r.Name, r.Rule)
	}
	for _, r := range dp.Curves {
		check("curve", r.Name, r.Rule)
	}
}

// opensslCipher is how openssl cms -encrypt makes each cipher it can make.
var opensslCipher = map[string][]string{
	"aes128-cbc": {"-aes-128-cbc"},
	"aes192-cbc": {"-aes-192-cbc"},
	"aes256-cbc": {"-aes-256-cbc"},
	"aes128-gcm": {"-aes-128-gcm"},
	"aes192-gcm": {"-aes-192-gcm"},
	"aes256-gcm": {"-aes-256-gcm"},
	"3DES-CBC":   {"-des3"},
	"DES-CBC":    {"-provider", "legacy", "-provider", "default", "-des"},
	"RC2-CBC":    {"-provider", "legacy", "-provider", "default", "-rc2"},
}

// TestCiphers: openssl encrypts with each cipher (or, for those it cannot
// make, an AES-128-CBC message gets the row's identifier); Decrypt accepts
// or refuses as the row says. The rows hisp sends are the ones an outbound
// profile can name, and what hisp makes with them openssl opens.
func TestCiphers(t *testing.T) {
	l := newLab(t)
	alice := l.selfSigned(t, "alice", []string{"-newkey", "rsa:2048"})
	aes128, _ := dp.CipherByName("aes128-cbc")
	base := l.encrypt(t, alice, "-aes-128-cbc")
	for _, row := range dp.Ciphers {
		t.Run(row.Name, func(t *testing.T) {
			var der []byte
			if opts, ok := opensslCipher[row.Name]; ok {
				der = l.encrypt(t, alice, opts...)
			} else {
				der = swapOID(t, base, aes128.OID, row.OID)
			}
			got, err := cms.Decrypt(der, []cms.KeyPair{alice.keyPair()})
			wantVerdict(t, row.Verdict, err)
			if err == nil && got.Cipher.String() != row.Name {
				t.Errorf("decrypted as %v", got.Cipher)
			}

			c, err := smime.ParseCipher(row.Name)
			if sendable := row.Verdict == dp.Accept && row.Send != dp.Never; (err == nil) != sendable {
				t.Errorf("outbound profile cipher=%s: %v, want sendable %v", row.Name, err, sendable)
			}
			if (smime.DefaultProfile.Cipher.String() == row.Name) != (row.Send == dp.Default) {
				t.Errorf("default cipher %v, row sends %v", smime.DefaultProfile.Cipher, row.Send)
			}
			if err == nil {
				sent, err := cms.Encrypt(rand.Reader, content, c, []cms.Recipient{{Cert: alice.cert}})
				if err != nil {
					t.Fatal(err)
				}
				opensslDecrypts(t, l, alice, sent)
			}
		})
	}
}

// opensslDecrypts checks that openssl opens what hisp sent to id.
func opensslDecrypts(t *testing.T, l *lab, id *identity, der []byte) {
	t.Helper()
	if err := os.WriteFile(l.path("sent.der"), der, 0o600); err != nil {
		t.Fatal(err)
	}
	out := l.openssl(t, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", "sent.der",
		"-recip", id.name+".crt", "-inkey", id.name+".key")
	if !bytes.Equal(out, content) {
		t.Errorf("openssl decrypted %q", out)
	}
}

// opensslKeyTransport is the openssl -keyopt of a key transport row.
func opensslKeyTransport(row dp.KeyTransport) []string {
	if !row.OAEP() {
		return nil
	}
	name := func(h crypto.Hash) string { return strings.ToLower(strings.ReplaceAll(h.String(), "-", "")) }
	return []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:" + name(row.Hash),
		"-keyopt", "rsa_mgf1_md:" + name(row.MGF)}
}

// TestKeyTransports: openssl encrypts the content key with each key
// transport; Decrypt accepts or refuses as the row says. hisp sends the
// rows it may send, openssl opens them; Encrypt refuses the others.
func TestKeyTransports(t *testing.T) {
	l := newLab(t)
	alice := l.selfSigned(t, "alice", []string{"-newkey", "rsa:2048"})
	for _, row := range dp.KeyTransports {
		t.Run(row.Name, func(t *testing.T) {
			args := append([]string{"-aes-128-cbc", "-recip", alice.name + ".crt"}, opensslKeyTransport(row)...)
			der := l.encrypt(t, alice, args...)
			got, err := cms.Decrypt(der, []cms.KeyPair{alice.keyPair()})
			wantVerdict(t, row.Verdict, err)
			if err == nil && got.KeyTransport.String() != row.Name {
				t.Errorf("decrypted as %v", got.KeyTransport)
			}

			kt, err := cms.ParseKeyTransport(row.Name)
			if err != nil {
				t.Fatal(err)
			}
			_, perr := smime.ParseOAEP(smime.OAEPName(kt))
			sendable := row.Verdict == dp.Accept && row.Send != dp.Never
			if (perr == nil) != sendable {
				t.Errorf("outbound profile oaep=%s: %v, want sendable %v", smime.OAEPName(kt), perr, sendable)
			}
			if (smime.DefaultProfile.KeyTransport == kt) != (row.Send == dp.Default) || (cms.DefaultKeyTransport == kt) != (row.Send == dp.Default) {
				t.Errorf("default key transport %v, row sends %v", smime.DefaultProfile.KeyTransport, row.Send)
			}
			sent, err := cms.Encrypt(rand.Reader, content, cms.AES128CBC, []cms.Recipient{{Cert: alice.cert, KeyTransport: kt}})
			if !sendable {
				if err == nil {
					t.Errorf("Encrypt made %v, which hisp never sends", kt)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			opensslDecrypts(t, l, alice, sent)
		})
	}

	// An OAEP hash pair in no row is not supported.
	der := l.encrypt(t, alice, "-aes-128-cbc", "-recip", "alice.crt", "-keyopt", "rsa_padding_mode:oaep",
		"-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha512")
	_, err := cms.Decrypt(der, []cms.KeyPair{alice.keyPair()})
	wantVerdict(t, dp.Unsupported, err)
}

// TestDigests: openssl signs with each digest; Verify accepts or refuses
// as the row says. hisp signs with the rows it may send, and openssl
// verifies what it signed.
func TestDigests(t *testing.T) {
	l := newLab(t)
	alice := l.selfSigned(t, "alice", []string{"-newkey", "rsa:2048"})
	for _, row := range dp.Digests {
		t.Run(row.Name, func(t *testing.T) {
			_, err := verify(t, l.sign(t, alice, "-md", row.Name))
			wantVerdict(t, row.Verdict, err)
			var ua *cms.UnsupportedAlgorithmError
			if err != nil && (!errors.As(err, &ua) || ua.Role != cms.RoleDigest) {
				t.Errorf("%v, want a digest refusal", err)
			}

			d, err := smime.ParseDigest(row.Name)
			sendable := row.Verdict == dp.Accept && row.Send != dp.Never
			if (err == nil) != sendable {
				t.Fatalf("outbound profile digest=%s: %v, want sendable %v", row.Name, err, sendable)
			}
			if (smime.DefaultProfile.Digest == d && err == nil) != (row.Send == dp.Default) {
				t.Errorf("default digest %v, row sends %v", smime.DefaultProfile.Digest, row.Send)
			}
			if err != nil {
				return
			}
			signed, err := smime.Sign(content, smime.Signer{Cert: alice.cert, Key: alice.key.(crypto.Signer)}, smime.SealOptions{Digest: d})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(l.path("signed.eml"), signed, 0o600); err != nil {
				t.Fatal(err)
			}
			// -noverify: the signature, not the certificate's trust.
			out := l.openssl(t, "cms", "-verify", "-noverify", "-in", "signed.eml")
			if !bytes.Equal(out, content) {
				t.Errorf("openssl verified %q", out)
			}
		})
	}
}

// sigRecipe is how a signature row's input is made: which signer, which
// openssl options, and which identifier openssl wrote that the row's
// replaces (nil: openssl writes the row's own).
type sigRecipe struct {
	signer string // "rsa" or "ec"
	opts   []string
	writes string // the name of the Signatures row openssl writes
}

// TestSignatures: for each signature algorithm, a message signed by
// openssl carries it (openssl writes PKCS #1 v1.5 as rsaEncryption, so the
// other PKCS #1 v1.5 and the refused identifiers replace it in the
// SignerInfo, where no signature covers them); Verify accepts or refuses as
// the row says. Then a certificate signed with the row's algorithm, made
// by openssl, meets the same verdict in CheckX509Signature (trust paths,
// CRLs, OCSP responses).
func TestSignatures(t *testing.T) {
	l := newLab(t)
	ids := map[string]*identity{
		"rsa": l.selfSigned(t, "rsa", []string{"-newkey", "rsa:2048"}),
		"ec":  l.selfSigned(t, "ec", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}),
	}
	pss := func(md string) []string { return []string{"-md", md, "-keyopt", "rsa_padding_mode:pss"} }
	recipes := map[string]sigRecipe{
		"SHA256-RSA":    {"rsa", []string{"-md", "sha256"}, "RSA"},
		"SHA384-RSA":    {"rsa", []string{"-md", "sha384"}, "RSA"},
		"SHA512-RSA":    {"rsa", []string{"-md", "sha512"}, "RSA"},
		"RSA":           {"rsa", []string{"-md", "sha256"}, ""},
		"SHA256-RSAPSS": {"rsa", pss("sha256"), ""},
		"SHA384-RSAPSS": {"rsa", pss("sha384"), ""},
		"SHA512-RSAPSS": {"rsa", pss("sha512"), ""},
		"ECDSA-SHA256":  {"ec", []string{"-md", "sha256"}, ""},
		"ECDSA-SHA384":  {"ec", []string{"-md", "sha384"}, ""},
		"ECDSA-SHA512":  {"ec", []string{"-md", "sha512"}, ""},
		"ECDSA":         {"ec", []string{"-md", "sha256"}, "ECDSA-SHA256"},
		"SHA1-RSA":      {"rsa", []string{"-md", "sha256"}, "RSA"},
		"MD5-RSA":       {"rsa", []string{"-md", "sha256"}, "RSA"},
		"MD2-RSA":       {"rsa", []string{"-md", "sha256"}, "RSA"},
		"SHA224-RSA":    {"rsa", []string{"-md", "sha256"}, "RSA"},
		"ECDSA-SHA1":    {"ec", []string{"-md", "sha256"}, "ECDSA-SHA256"},
		"ECDSA-SHA224":  {"ec", []string{"-md", "sha256"}, "ECDSA-SHA256"},
		"DSA-SHA1":      {"rsa", []string{"-md", "sha256"}, "RSA"},
		"DSA-SHA256":    {"rsa", []string{"-md", "sha256"}, "RSA"},
		"Ed25519":       {"rsa", []string{"-md", "sha256"}, "RSA"},
	}
	for _, row := range dp.Signatures {
		t.Run(row.Name, func(t *testing.T) {
			r, ok := recipes[row.Name]
			if !ok {
				t.Fatalf("no recipe for signature row %s", row.Name)
			}
			der := l.sign(t, ids[r.signer], r.opts...)
			if r.writes != "" {
				der = swapLastOID(t, der, signatureOID(t, r.writes), row.OID)
			}
			name, err := verify(t, der)
			wantVerdict(t, row.Verdict, err)
			if err == nil && row.Hash != 0 && name != row.Name {
				t.Errorf("verified as %s", name)
			}
			var ua *cms.UnsupportedAlgorithmError
			if err != nil && (!errors.As(err, &ua) || ua.Role != cms.RoleSignature) {
				t.Errorf("%v, want a signature algorithm refusal", err)
			}
			if row.X509 != x509.UnknownSignatureAlgorithm {
				checkX509Signature(t, l, row)
			}
		})
	}
}

// checkX509Signature makes a certificate signed with row's algorithm and
// checks the profile's verdict on it.
func checkX509Signature(t *testing.T, l *lab, row dp.Signature) {
	t.Helper()
	name := "x509-" + strings.ToLower(row.Name)
	var cert *identity
	switch row.Scheme {
	case dp.PKCS1v15:
		md := strings.ToLower(strings.TrimSuffix(row.Name, "-RSA"))
		if row.Name == "MD2-RSA" {
			t.Log("openssl cannot sign with MD2: certificate not made")
			return
		}
		cert = l.selfSigned(t, name, []string{"-newkey", "rsa:2048", "-" + md})
	case dp.PSS:
		md := strings.ToLower(strings.TrimSuffix(row.Name, "-RSAPSS"))
		cert = l.selfSigned(t, name, []string{"-newkey", "rsa:2048", "-" + md, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"})
	case dp.ECDSA:
		md := strings.ToLower(strings.TrimPrefix(row.Name, "ECDSA-"))
		cert = l.selfSigned(t, name, []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-" + md})
	case dp.DSA:
		l.openssl(t, "genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:1024", "-out", "dsa.param")
		md := strings.ToLower(strings.TrimPrefix(row.Name, "DSA-"))
		cert = l.selfSigned(t, name, []string{"-newkey", "dsa:dsa.param", "-" + md})
	default:
		if row.Name != "Ed25519" {
			t.Fatalf("no certificate recipe for %s", row.Name)
		}
		cert = l.selfSigned(t, name, []string{"-newkey", "ed25519"})
	}
	if cert.cert.SignatureAlgorithm != row.X509 {
		t.Fatalf("openssl made a certificate signed with %v, want %v", cert.cert.SignatureAlgorithm, row.X509)
	}
	err := dp.CheckX509Signature(cert.cert.SignatureAlgorithm)
	if (err == nil) != (row.Verdict == dp.Accept) {
		t.Errorf("certificate signed with %v: %v, want verdict %v", row.X509, err, row.Verdict)
	}
}

// TestKeys: a certificate of each key type, made by openssl, meets its
// row in CheckCertKey for each use, and in the checks that use it: a key
// that may not receive the content-encryption key is refused by Encrypt,
// RSA under MinRSABits is weak for signing and encryption alike.
func TestKeys(t *testing.T) {
	l := newLab(t)
	ca := l.selfSigned(t, "ca", []string{"-newkey", "rsa:2048"})
	recipes := map[string]func() *identity{
		"RSA": func() *identity { return ca },
		"ECDSA": func() *identity {
			return l.selfSigned(t, "ec", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"})
		},
		"RSASSA-PSS": func() *identity { return l.selfSigned(t, "pss", []string{"-newkey", "rsa-pss"}) },
		"Ed25519":    func() *identity { return l.selfSigned(t, "ed25519", []string{"-newkey", "ed25519"}) },
		"X25519":     func() *identity { return l.forcedKey(t, "x25519", ca, "-algorithm", "X25519") },
		"X448":       func() *identity { return l.forcedKey(t, "x448", ca, "-algorithm", "X448") },
		"DSA": func() *identity {
			l.openssl(t, "genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:1024", "-out", "dsa.param")
			return l.forcedKey(t, "dsa", ca, "-paramfile", "dsa.param")
		},
	}
	for _, row := range dp.Keys {
		t.Run(row.Name, func(t *testing.T) {
			mk, ok := recipes[row.Name]
			if !ok {
				t.Fatalf("no recipe for key row %s", row.Name)
			}
			id := mk()
			for use, allowed := range map[dp.Use]bool{
				dp.AnyUse:     row.Verdict == dp.Accept,
				dp.Signing:    row.Verdict == dp.Accept && row.Sign,
				dp.Encryption: row.Verdict == dp.Accept && row.Encrypt,
			} {
				got, _, err := dp.CheckCertKey(id.cert, use)
				if (err == nil) != allowed {
					t.Errorf("for %v: %v, want allowed %v", use, err, allowed)
				}
				var ke *dp.KeyError
				if err != nil && (!errors.As(err, &ke) || ke.Key != row.Name || got.Name != row.Name) {
					t.Errorf("for %v: %v names %q", use, err, got.Name)
				}
			}
			_, err := cms.Encrypt(rand.Reader, content, cms.AES128CBC, []cms.Recipient{{Cert: id.cert}})
			if (err == nil) != (row.Verdict == dp.Accept && row.Encrypt) {
				t.Errorf("Encrypt to a %s key: %v", row.Name, err)
			}
			if row.MinBits > 0 {
				checkMinBits(t, l, row)
			}
		})
	}
}

// checkMinBits: RSA keys of MinBits and one bit less, made by openssl,
// for encryption (Encrypt) and signing (Verify of an openssl signature).
func checkMinBits(t *testing.T, l *lab, row dp.Key) {
	for _, bits := range []int{row.MinBits, row.MinBits - 1} {
		name := fmt.Sprintf("rsa%d", bits)
		id := l.selfSigned(t, name, []string{"-newkey", fmt.Sprintf("rsa:%d", bits)})
		weak := bits < row.MinBits
		_, desc, err := dp.CheckCertKey(id.cert, dp.AnyUse)
		var ke *dp.KeyError
		if weak != (errors.As(err, &ke) && ke.Weak && ke.Bits == bits) || !weak && desc != fmt.Sprintf("RSA %d", bits) {
			t.Errorf("%d bits: %q, %v", bits, desc, err)
		}
		_, err = cms.Encrypt(rand.Reader, content, cms.AES128CBC, []cms.Recipient{{Cert: id.cert}})
		if weak != errors.Is(err, cms.ErrWeakKey) {
			t.Errorf("Encrypt to %d bits: %v", bits, err)
		}
		_, err = verify(t, l.sign(t, id, "-md", "sha256"))
		if weak != errors.Is(err, cms.ErrWeakKey) {
			t.Errorf("signature by %d bits: %v", bits, err)
		}
	}
}

// TestCurves: an ECDSA key on each curve, made by openssl, signs a
// message; Verify accepts the signer or refuses its key as the row says,
// and so does CheckCertKey.
func TestCurves(t *testing.T) {
	l := newLab(t)
	for _, row := range dp.Curves {
		t.Run(row.Name, func(t *testing.T) {
			id := l.selfSigned(t, "ec-"+row.Name, []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + row.Name})
			_, err := verify(t, l.sign(t, id, "-md", "sha256"))
			if accepted := row.Verdict == dp.Accept; accepted != (err == nil) || !accepted && !errors.Is(err, cms.ErrWeakKey) {
				t.Errorf("signature by a %s key: %v, want verdict %v", row.Name, err, row.Verdict)
			}
			_, desc, err := dp.CheckCertKey(id.cert, dp.Signing)
			if (err == nil) != (row.Verdict == dp.Accept) || err == nil && desc != "ECDSA "+row.Name {
				t.Errorf("CheckCertKey: %q, %v", desc, err)
			}
		})
	}
}

func signatureOID(t *testing.T, name string) asn1.ObjectIdentifier {
	t.Helper()
	for _, s := range dp.Signatures {
		if s.Name == name {
			return s.OID
		}
	}
	t.Fatalf("no signature row %s", name)
	return nil
}
