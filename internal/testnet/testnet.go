// Package testnet opens loopback listeners for tests of hisp's network
// servers.
package testnet

import (
	"net"
	"testing"
)

// ListenDNS opens UDP and TCP on one free loopback port, as a DNS server
// needs. A port free for UDP may be taken for TCP by another test; it
// tries other ports then.
func ListenDNS(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var last error
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
		last = err
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", last)
	return nil, nil
}
