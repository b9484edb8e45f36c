// Package clientip says which client a remote address counts as, for every
// per-client limit (connections, logins, DNS answers): its IPv4 address,
// or the /64 of an IPv6 one, since one host usually holds a whole /64 and
// could otherwise take a fresh allowance per address.
package clientip

import (
	"net"
	"net/netip"
)

// Key returns the client ip counts as: ip itself (IPv4-mapped addresses
// unmapped), or for IPv6 its /64's first address.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// Of returns the client a remote address counts as (TCP, UDP, or any
// address printed as host:port); ok is false when it holds no IP address.
func Of(remote net.Addr) (key netip.Addr, ok bool) {
	var ip netip.Addr
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if remote == nil {
			return netip.Addr{}, false
		}
		ap, err := netip.ParseAddrPort(remote.String())
		if err != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	key = Key(ip)
	return key, key.IsValid()
}
