package gateway

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/hisp-project/hisp/certs"
)

// startLDAP hosts the local certificates over LDAP when [listen] ldap is
// set (Certificate Discovery for Direct, CD-05..CD-07), and returns the SRV
// target and port the DNS publisher announces as _ldap._tcp.DOMAIN; "" and 0
// when off.
func (s *server) startLDAP(run func(string, func(context.Context) error), out io.Writer) (string, uint16, error) {
	addr := s.cfg.Listen.LDAP
	if addr == "" {
		return "", 0, nil
	}
	nl, err := net.Listen("tcp", addr)
	if err != nil {
		return "", 0, fmt.Errorf("listen ldap %s: %w", addr, err)
	}
	addr = nl.Addr().String()
	srv, err := certs.NewLDAPServer(storeCerts{s.st}, s.log.With("listener", "ldap"))
	if err != nil {
		nl.Close()
		return "", 0, err
	}
	// The SRV record names this listener, the public one; the library's
	// own loopback port, behind the relay, is never announced.
	target, port, err := certs.LDAPTarget(addr, s.cfg.Hostname)
	if err != nil {
		nl.Close()
		return "", 0, err
	}
	l := s.limits.wrap("ldap", nl, ldapBusy)
	run("ldap", func(ctx context.Context) error { return srv.Serve(ctx, l) })
	fmt.Fprintf(out, "  ldap (certificate hosting, anonymous bind, SRV published by the DNS listener): %s\n", addr)
	return target, port, nil
}
