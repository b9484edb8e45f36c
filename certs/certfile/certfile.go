// Package certfile reads certificates and private keys from the files admins
// hand to hisp: PEM (certificates; PKCS#1, PKCS#8 and SEC 1 EC keys) and
// PKCS#12 archives.
package certfile

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hisp-project/hisp/smime/directprofile"
	"software.sslmate.com/src/go-pkcs12"
)

// ErrNoCertificate is returned when a file holds no certificate.
var ErrNoCertificate = errors.New("no certificate found")

// ErrNoKey is returned when a file holds no private key.
var ErrNoKey = errors.New("no private key found")

// ParseCertificates returns every certificate in data, which is PEM
// ("CERTIFICATE" blocks, other blocks ignored) or a single DER certificate.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, fmt.Errorf("parse DER certificate: %w", err)
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" && b.Type != "X509 CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, ErrNoCertificate
	}
	return out, nil
}

// ParsePrivateKey returns the first private key in data: PEM ("PRIVATE KEY",
// "RSA PRIVATE KEY", "EC PRIVATE KEY") or DER (PKCS#8, PKCS#1 or SEC 1).
// Encrypted PEM keys are refused with a clear error.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		return parseDERKey(data)
	}
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, ErrNoKey
		}
		switch b.Type {
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PEM private keys are not supported: decrypt it with openssl pkey, or use a PKCS#12 file with a password file")
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
				return nil, errors.New("encrypted PEM private keys are not supported")
			}
			return parseDERKey(b.Bytes)
		}
	}
}

func parseDERKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return asSigner(k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("unrecognized private key: want PKCS#8, PKCS#1 or SEC 1 EC")
}

func asSigner(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		// Refused by the profile's Keys table (AL-12).
		_, _, err := directprofile.CheckKey(k.Public(), directprofile.AnyUse)
		return nil, err
	default:
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
}

// Identity is a certificate with its private key and the chain that came
// with it (leaf excluded).
type Identity struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// ParsePKCS12 decodes a PKCS#12 archive holding one private key, its
// certificate and optionally CA certificates.
func ParsePKCS12(data []byte, password string) (*Identity, error) {
	key, cert, cas, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		return nil, fmt.Errorf("decode PKCS#12: %w", err)
	}
	signer, err := asSigner(key)
	if err != nil {
		return nil, err
	}
	return &Identity{Cert: cert, Key: signer, Chain: cas}, nil
}

// LoadPEM reads a certificate file (its first certificate is the leaf, the
// rest the chain) and a key file, and checks that they belong together.
func LoadPEM(certFile, keyFile string) (*Identity, error) {
	cdata, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(cdata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	kdata, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(kdata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	id := &Identity{Cert: certs[0], Key: key, Chain: certs[1:]}
	if err := id.Check(); err != nil {
		return nil, err
	}
	return id, nil
}

// LoadPKCS12 reads a PKCS#12 file; the password is the first line of
// passwordFile ("" for none).
func LoadPKCS12(file, passwordFile string) (*Identity, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	password := ""
	if passwordFile != "" {
		password, err = ReadPasswordFile(passwordFile)
		if err != nil {
			return nil, err
		}
	}
	id, err := ParsePKCS12(data, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return id, nil
}

// ReadPasswordFile returns the first line of a file, without its line end.
func ReadPasswordFile(name string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSuffix(line, "\r"), nil
}

// LoadCertificates reads every certificate in a PEM or DER file.
func LoadCertificates(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return certs, nil
}

// Check reports whether the identity's key matches its certificate.
func (id *Identity) Check() error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := id.Key.Public().(equaler)
	if !ok || !pub.Equal(id.Cert.PublicKey) {
		return errors.New("private key does not match the certificate")
	}
	return nil
}
