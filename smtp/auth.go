package smtp

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/hisp-project/hisp/store"
)

// StoreAuthenticator checks submission logins against the store: an
// address logs in as itself (store.CheckPassword); a name without "@" is
// a relay account (store.CheckRelayPassword), which must also come from one
// of its networks and present a TLS client certificate issued by one of its
// client CAs, when it has any.
type StoreAuthenticator struct {
	Store AuthStore
}

// AuthStore is the part of the store a StoreAuthenticator asks;
// *store.Store implements it. Failed logins are store.ErrBadCredentials.
type AuthStore interface {
	// CheckPassword checks the login of a local address and returns the
	// normalized address.
	CheckPassword(ctx context.Context, address, password string) (string, error)
	// CheckRelayPassword checks a relay login and returns the account,
	// whose networks and client CAs the caller checks.
	CheckRelayPassword(ctx context.Context, name, password string) (store.Relay, error)
	// Relay returns a relay account without checking a password
	// (TrustedClient); store.ErrNotFound if there is none.
	Relay(ctx context.Context, name string) (store.Relay, error)
}

// Authenticate implements Authenticator.
func (a StoreAuthenticator) Authenticate(ctx context.Context, c Credentials) (Login, error) {
	if strings.Contains(c.Username, "@") {
		addr, err := a.Store.CheckPassword(ctx, c.Username, c.Password)
		if err != nil {
			return Login{}, err
		}
		return Login{Name: addr}, nil
	}
	r, err := a.Store.CheckRelayPassword(ctx, c.Username, c.Password)
	if err != nil {
		return Login{}, err
	}
	if err := checkRelayClient(r, c); err != nil {
		return Login{}, fmt.Errorf("%w: relay %s: %v", store.ErrBadCredentials, r.Name, err)
	}
	return Login{Name: r.Name, RelayDomains: append([]string{}, r.Domains...)}, nil
}

// TrustedClient reports whether the client proved itself before its
// password is checked: a relay login whose TLS client certificate chains to
// one of its client CAs (and which comes from its networks). Such logins
// skip the login limiter's gates shared with other IPs, so guesses at a
// relay's name from elsewhere cannot hold up the EHR itself.
func (a StoreAuthenticator) TrustedClient(ctx context.Context, c Credentials) bool {
	if len(c.PeerCertificates) == 0 || strings.Contains(c.Username, "@") {
		return false
	}
	r, err := a.Store.Relay(ctx, c.Username)
	return err == nil && len(r.ClientCAs) > 0 && checkRelayClient(r, c) == nil
}

// checkRelayClient checks a relay's network and client certificate
// conditions.
func checkRelayClient(r store.Relay, c Credentials) error {
	if len(r.Networks) > 0 {
		in := false
		for _, p := range r.Networks {
			in = in || p.Contains(c.Remote)
		}
		if !in {
			return fmt.Errorf("client address %s is not in its networks", c.Remote)
		}
	}
	if len(r.ClientCAs) == 0 {
		return nil
	}
	if len(c.PeerCertificates) == 0 {
		return fmt.Errorf("no TLS client certificate (it needs one from its client CAs)")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, ca := range r.ClientCAs {
		roots.AddCert(ca)
	}
	for _, ic := range c.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	leaf := c.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("TLS client certificate %q: %v", leaf.Subject, err)
	}
	return nil
}
