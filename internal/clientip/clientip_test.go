package clientip

import (
	"net"
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 25}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 25}, "192.0.2.7"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 53}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 25}, "2001:db8:1:2::"},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, ""},
	} {
		got, ok := Of(c.addr)
		if c.want == "" {
			if ok {
				t.Errorf("%v: %v, want none", c.addr, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(c.want) {
			t.Errorf("%v: %v %v, want %s", c.addr, got, ok, c.want)
		}
	}
}
