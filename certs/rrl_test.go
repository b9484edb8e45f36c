package certs

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestRateLimiter: token buckets per client, the slip pattern, IPv6 /64
// grouping, loopback exempt by default, and the table bound.
func TestRateLimiter(t *testing.T) {
	var slipped, dropped int
	l := newRateLimiter(RateLimit{PerSecond: 3, Slip: 3, Clients: 100, Limited: func(s bool) {
		if s {
			slipped++
		} else {
			dropped++
		}
	}})
	now := time.Unix(1_000_000, 0)
	l.now = func() time.Time { return now }
	a := &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 53}
	var got []rrlVerdict
	for range 9 {
		got = append(got, l.check(a))
	}
	want := []rrlVerdict{rrlAnswer, rrlAnswer, rrlAnswer, rrlDrop, rrlDrop, rrlSlip, rrlDrop, rrlDrop, rrlSlip}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
	}
	if slipped != 2 || dropped != 4 {
		t.Fatalf("counted %d slipped, %d dropped", slipped, dropped)
	}
	// Another client has its own bucket; half a second later the first
	// has one token again (and a half).
	if v := l.check(&net.UDPAddr{IP: net.ParseIP("192.0.2.2")}); v != rrlAnswer {
		t.Fatalf("second client: %v", v)
	}
	now = now.Add(time.Second / 2)
	if v := l.check(a); v != rrlAnswer {
		t.Fatalf("after a refill: %v", v)
	}
	if v := l.check(a); v == rrlAnswer {
		t.Fatal("two answers from one token")
	}
	// One IPv6 /64 is one client.
	for i := range 3 {
		l.check(&net.UDPAddr{IP: net.ParseIP("2001:db8::" + string(rune('1'+i)))})
	}
	if v := l.check(&net.UDPAddr{IP: net.ParseIP("2001:db8::ffff")}); v == rrlAnswer {
		t.Fatal("a fourth address of the same /64 got a fifth answer")
	}
	// Loopback is exempt.
	for range 10 {
		if v := l.check(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); v != rrlAnswer {
			t.Fatal("loopback limited")
		}
	}
	// A flood from many (forged) sources keeps the table bounded.
	for i := range 5000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.check(net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 53)))
		if n := l.size(); n > 100 {
			t.Fatalf("table holds %d clients, bound 100", n)
		}
	}
	if newRateLimiter(RateLimit{PerSecond: -1}) != nil {
		t.Fatal("PerSecond < 0 does not turn it off")
	}
}

// TestPublisherRateLimitFlood: a flood of UDP CERT queries from loopback
// (not exempt here) gets full answers only at the configured rate; of the
// rest every second goes out empty and truncated, the others are dropped,
// and each is counted. TCP is not limited, and dig falls back to it.
func TestPublisherRateLimitFlood(t *testing.T) {
	const rate, flood = 10, 400
	var slipped, dropped atomic.Int64
	env := startPublisherWith(t, PublisherOptions{Hostname: "ns.hisp.example", RateLimit: RateLimit{PerSecond: rate, Slip: 2,
		Exempt: func(netip.Addr) bool { return false },
		Limited: func(s bool) {
			if s {
				slipped.Add(1)
			} else {
				dropped.Add(1)
			}
		}}})
	conn, err := net.Dial("udp", env.addr)
	tcheck(t, err, "dial udp")
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion("bob.b.example.", dns.TypeCERT)
	q.SetEdns0(4096, false)
	wire, err := q.Pack()
	tcheck(t, err, "pack")

	// The reader counts what comes back; the flood goes out in batches,
	// each sent once the previous one is answered or counted as limited,
	// so that the kernel's socket buffers do not drop queries unseen.
	var full, truncated, bytes atomic.Int64
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		buf := make([]byte, 65535)
		for {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			bytes.Add(int64(n))
			switch {
			case m.Truncated && len(m.Answer) == 0:
				truncated.Add(1)
			case len(m.Answer) > 0:
				full.Add(1)
			}
		}
	}()
	const batch = 20
	start := time.Now()
	for i := 0; i < flood; i += batch {
		for j := i; j < i+batch; j++ {
			wire[0], wire[1] = byte(j>>8), byte(j) // query ID
			if _, err := conn.Write(wire); err != nil {
				t.Fatal(err)
			}
		}
		seen := func() int64 { return full.Load() + slipped.Load() + dropped.Load() }
		for wait := time.Now(); seen() < int64(i+batch) && time.Since(wait) < 5*time.Second; {
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	conn.SetReadDeadline(time.Now()) // the reader stops
	<-stop
	r := struct{ full, truncated, bytes int }{int(full.Load()), int(truncated.Load()), int(bytes.Load())}
	t.Logf("%d queries in %v: %d full answers, %d truncated, %d bytes; counted %d slipped, %d dropped",
		flood, elapsed, r.full, r.truncated, r.bytes, slipped.Load(), dropped.Load())
	// The bucket starts full (rate answers) and refills at rate per second
	// while the flood is sent and answered.
	if bound := rate + int(float64(rate)*(elapsed+time.Second).Seconds()) + 1; r.full > bound || r.full < rate {
		t.Errorf("%d full answers, want %d to %d", r.full, rate, bound)
	}
	limited := int(slipped.Load() + dropped.Load())
	if r.full+limited != flood {
		t.Errorf("%d answered + %d limited, of %d queries", r.full, limited, flood)
	}
	// Every second answer over the rate slips; an answer within it (a
	// refilled token) starts the count again.
	if s := int(slipped.Load()); r.truncated != s || s < limited/3 || s > limited/2+1 {
		t.Errorf("%d truncated answers received, %d slipped of %d limited; want about half", r.truncated, s, limited)
	}
	if full := r.full * 1000; r.bytes > full+r.truncated*100 {
		t.Errorf("%d bytes sent for %d full answers and %d truncated ones", r.bytes, r.full, r.truncated)
	}
	// TCP answers in full at once, and dig over UDP gets there too: of
	// two tries at least one is answered or slipped (truncated), and dig
	// goes on over TCP.
	if m := env.ask(t, "tcp", "bob.b.example", dns.TypeCERT, false); len(m.Answer) != 1 {
		t.Fatalf("TCP during the limit: %v", m)
	}
	if out := env.dig(t, "+time=1", "+tries=2", "bob.b.example", "CERT"); !holdsCert(out, env.ab) {
		t.Fatalf("dig after the flood:\n%s", out)
	}
}
