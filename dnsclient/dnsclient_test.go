package dnsclient

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hisp-project/hisp/internal/testnet"

	"github.com/miekg/dns"
)

// startServer serves h on UDP and TCP of one loopback port.
func startServer(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, l := testnet.ListenDNS(t)
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

func TestQuery(t *testing.T) {
	var tcp, tcpAll atomic.Int32
	addr := startServer(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if w.LocalAddr().Network() == "tcp" {
			tcpAll.Add(1)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case strings.HasPrefix(q.Name, "big."):
			if w.LocalAddr().Network() == "udp" {
				m.Truncated = true
			} else {
				tcp.Add(1)
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"whole"}})
			}
		case strings.HasPrefix(q.Name, "gone."):
			m.Rcode = dns.RcodeNameError
		case strings.HasPrefix(q.Name, "broken."):
			m.Rcode = dns.RcodeServerFailure
		case strings.HasPrefix(q.Name, "liar."):
			m.Question[0].Name = "other.example."
		}
		if opt := r.IsEdns0(); opt == nil {
			m.Rcode = dns.RcodeFormatError // EDNS0 must be sent
		}
		w.WriteMsg(m)
	})
	c := Client{Server: addr}
	ctx := context.Background()
	r, _, err := c.Query(ctx, "big.example", dns.TypeTXT)
	if err != nil || len(r.Answer) != 1 || tcp.Load() != 1 {
		t.Fatalf("truncated answer not retried over TCP: %v %v", r, err)
	}
	if r, _, err := c.Query(ctx, "gone.example", dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("NXDOMAIN is an answer: %v %v", r, err)
	}
	if _, _, err := c.Query(ctx, "broken.example", dns.TypeA); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("SERVFAIL: %v", err)
	}
	if _, _, err := c.Query(ctx, "liar.example", dns.TypeA); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched answer: %v", err)
	}
	// TCP only, for an answer UDP would have given whole.
	before := tcpAll.Load()
	if r, _, err := (Client{Server: addr, TCP: true}).Query(ctx, "gone.example", dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError || tcpAll.Load() != before+1 {
		t.Fatalf("TCP query: %v %v, %d TCP queries", r, err, tcpAll.Load()-before)
	}
}

func TestSameName(t *testing.T) {
	if !SameName(`john\.doe.b.example.`, `JOHN\046DOE.b.example`) || SameName("a.example", "b.example") {
		t.Fatal("SameName")
	}
}
