package trust

import (
	"crypto/x509"
	"errors"
)

// Bind says how cert binds to owner, an address or a domain, and why (or
// why not) in words: the binding rule validation applies (AS-02 to AS-05,
// AS-08), for callers outside validation such as importing a certificate.
func Bind(cert *x509.Certificate, owner string) (Binding, string) {
	return bind(cert, owner)
}

// CheckKey checks a certificate's public key against Direct's rule: RSA of
// 2048 bits or more, or ECDSA on P-256 or P-384 (DT-04, TV-09). It is the
// check validation makes of every certificate of a chain.
func CheckKey(cert *x509.Certificate) error {
	if why := checkKey(cert, Signing, false); why != "" {
		return errors.New(why)
	}
	return nil
}
