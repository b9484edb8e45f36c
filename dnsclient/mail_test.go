package dnsclient

import (
	"context"
	"net"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func mxAnswer(records ...*dns.MX) *dns.Msg {
	m := new(dns.Msg)
	for _, r := range records {
		r.Hdr = dns.RR_Header{Name: "b.example.", Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}
		m.Answer = append(m.Answer, r)
	}
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "mx1.b.example.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(192, 0, 2, 1)})
	return m
}

// TestMX: records by preference (equal ones in the answer's order), hosts
// lower case once each; a null MX is one or more records naming no host;
// no record at all is the implicit MX, not a null one.
func TestMX(t *testing.T) {
	mxs := MXRecords(mxAnswer(&dns.MX{Preference: 20, Mx: "MX2.b.example."}, &dns.MX{Preference: 10, Mx: "mx1.b.example."},
		&dns.MX{Preference: 20, Mx: "mx3.b.example."}, &dns.MX{Preference: 30, Mx: "mx1.b.example."}))
	if got := MXHosts(mxs); !slices.Equal(got, []string{"mx1.b.example", "mx2.b.example", "mx3.b.example"}) || NullMX(mxs) {
		t.Errorf("hosts %v, null %v", got, NullMX(mxs))
	}
	for _, null := range [][]*dns.MX{{{Mx: "."}}, {{Mx: "."}, {Preference: 5, Mx: ""}}} {
		if mxs := MXRecords(mxAnswer(null...)); !NullMX(mxs) || len(MXHosts(mxs)) != 0 {
			t.Errorf("null MX %v: not null", null)
		}
	}
	if mxs := MXRecords(mxAnswer()); len(mxs) != 0 || NullMX(mxs) {
		t.Errorf("no MX record: %v, null %v", mxs, NullMX(mxs))
	}
}

// TestLookupAddrs: IPv4 then IPv6 addresses; an IP literal is its own;
// a name that does not exist says so; a failing server is an error.
func TestLookupAddrs(t *testing.T) {
	addr := startServer(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch q.Name {
		case "host.b.example.":
			hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 60}
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(192, 0, 2, 7)})
			} else {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP("2001:db8::7")})
			}
		case "broken.b.example.":
			m.Rcode = dns.RcodeServerFailure
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	c := Client{Server: addr}
	ctx := context.Background()
	if a := c.LookupAddrs(ctx, "host.b.example"); a.Err != nil || len(a.IPs) != 2 || a.IPs[0].String() != "192.0.2.7" || a.IPs[1].String() != "2001:db8::7" {
		t.Errorf("host: %+v", a)
	}
	if a := c.LookupAddrs(ctx, "[2001:db8::1]"); len(a.IPs) != 1 || a.IPs[0].String() != "2001:db8::1" {
		t.Errorf("literal: %+v", a)
	}
	if a := c.LookupAddrs(ctx, "gone.b.example"); !a.NXDomain || a.Err != nil || len(a.IPs) != 0 {
		t.Errorf("nonexistent: %+v", a)
	}
	if a := c.LookupAddrs(ctx, "broken.b.example"); a.Err == nil || a.NXDomain {
		t.Errorf("SERVFAIL: %+v", a)
	}
}
