package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/store"
)

// TestMDN: two HISPs that route to each other. Every message bob's HISP
// accepts earns alice a processed MDN from bob's address, and a dispatched
// one with the X-DIRECT-FINAL-DESTINATION-DELIVERY field when she asked for
// timely and reliable delivery; a recipient over quota earns processed then
// failed, with the request or without (the Delivery Notification IG's
// sequence for a failure after processing). The notices are Direct messages: the hospital's agent decrypts
// and verifies them before they reach alice's INBOX. Notices and refused
// messages earn none, so nothing loops.
func TestMDN(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	carol, _ := b.addUser(t, "carol") // over quota below
	dave, _ := a.addUser(t, "dave")   // alice's colleague
	a.trust(t, b)
	b.trust(t, a)
	c := newInstance(t, "stranger.example", "carl") // trusted by nobody
	c.trust(t, b)
	dns := publishBoth(t, a, b, c)

	// The clinic routes to the hospital through a proxy whose target is
	// known once the hospital runs.
	toA := newTCPProxy(t)
	b.start(t, dns, map[string]string{"hospital.example": toA.addr()}, nil)
	// Alice sees every notice: none withheld by the hospital's tracker.
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, func(c *config.Config) {
		c.Notifications.WithholdProcessed = false
	})
	toA.setTarget(a.addrs["smtp"])
	c.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)
	must(t, func() error { return b.st.SetQuota(ctx, carol, 1) })

	const good = "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
	type want struct {
		disp mdn.Disposition
		ext  bool
	}
	processed := want{mdn.DispositionProcessed, false}
	for _, tc := range []struct {
		name, to, options string
		want              []want
	}{
		{"timely and reliable", b.user, good, []want{processed, {mdn.DispositionDispatched, true}}},
		{"request in other case and spacing", b.user, " x-direct-final-destination-delivery = Optional , TRUE ", []want{processed, {mdn.DispositionDispatched, true}}},
		{"no request", b.user, "", []want{processed}},
		{"malformed request", b.user, "X-DIRECT-FINAL-DESTINATION-DELIVERY=true", []want{processed}},
		{"request not true", b.user, "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,false", []want{processed}},
		{"over quota with request", carol, good, []want{processed, {mdn.DispositionFailed, false}}},
		{"over quota without request", carol, "", []want{processed, {mdn.DispositionFailed, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := strings.ReplaceAll(tc.name, " ", "-") + "@hospital.example"
			if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{tc.to},
				requestMessage(a.user, tc.to, id, tc.options)); r != "" {
				t.Fatalf("submission refused: %s", r)
			}
			// The clinic queues its notices before it answers the
			// message, so once the hospital's queue has the answer, the
			// clinic's queue holds every notice it will send.
			mdnWait(t, "the hospital's queue done with "+id, func() bool { return queueFinal(t, a, "<"+id+">") })
			sent := mdnsQueued(t, b, "<"+id+">")
			if len(sent) != len(tc.want) {
				t.Fatalf("the clinic queued %d notices for %s, want %d: %+v", len(sent), id, len(tc.want), sent)
			}
			for i, q := range sent {
				if !strings.HasPrefix(q.Origin, "mdn "+string(tc.want[i].disp)+" ") {
					t.Errorf("notice %d queued as %q, want %s (in this order)", i, q.Origin, tc.want[i].disp)
				}
				if !strings.EqualFold(q.MailFrom, tc.to) || len(q.Recipients) != 1 || !strings.EqualFold(q.Recipients[0].Address, a.user) {
					t.Errorf("notice %d envelope: MAIL FROM %s to %+v", i, q.MailFrom, q.Recipients)
				}
			}

			// What reaches alice, through the hospital's agent.
			var got []*mdn.MDN
			var raw [][]byte
			mdnWait(t, fmt.Sprintf("%d notices for %s in alice's INBOX", len(tc.want), id), func() bool {
				got, raw = mdnsFiled(t, a, a.user, "<"+id+">")
				return len(got) >= len(tc.want)
			})
			if len(got) != len(tc.want) {
				t.Fatalf("alice has %d notices for %s, want %d", len(got), id, len(tc.want))
			}
			for i, w := range tc.want {
				var n *mdn.MDN
				for j, g := range got {
					if g.Disposition == w.disp {
						n = g
						if !bytes.HasPrefix(raw[j], []byte("X-Hisp-Verification: pass")) {
							t.Errorf("%s notice not verified by the hospital's agent:\n%.300s", w.disp, raw[j])
						}
						if bytes.Contains(bytes.ToLower(raw[j]), []byte("disposition-notification-to")) {
							t.Errorf("%s notice asks for a notice itself:\n%s", w.disp, raw[j])
						}
					}
				}
				if n == nil {
					t.Fatalf("notice %d (%s) missing: %+v", i, w.disp, got)
				}
				if !strings.EqualFold(n.From, tc.to) || !strings.EqualFold(n.FinalRecipient, tc.to) || !strings.EqualFold(n.To, a.user) ||
					n.FinalDestination != w.ext || n.ActionMode != mdn.AutomaticAction || n.SendingMode != mdn.MDNSentAutomatically ||
					!strings.Contains(n.ReportingUA, "hisp") {
					t.Errorf("%s notice: %+v", w.disp, n)
				}
				if w.disp == mdn.DispositionFailed && !strings.Contains(n.Failure, "quota") {
					t.Errorf("failed notice's Failure %q", n.Failure)
				}
			}
			if tc.to == carol {
				// The failed MDN is the final outcome, even after a
				// processed one.
				waitFor(t, "the hospital's tracking of "+id+" failed", func() bool {
					m := trkTracked(t, a, "<"+id+">")
					return m != nil && m.Recipients[0].Outcome == store.OutcomeFailure && strings.Contains(m.Recipients[0].Reason, "quota")
				})
			}
		})
	}
	if n := len(b.mailbox(t, carol, "INBOX")); n != 0 {
		t.Errorf("carol's INBOX over quota holds %d messages", n)
	}

	if q := mdnsQueued(t, b, ""); len(q) == 0 {
		t.Fatal("no notices queued")
	}

	t.Run("local recipient", func(t *testing.T) {
		// A colleague in the hospital: the message and its notice take
		// the local delivery path, through the same agent checks.
		const id = "local-1@hospital.example"
		if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{dave},
			requestMessage(a.user, dave, id, good)); r != "" {
			t.Fatalf("submission refused: %s", r)
		}
		var got []*mdn.MDN
		mdnWait(t, "2 notices from dave in alice's INBOX", func() bool {
			got, _ = mdnsFiled(t, a, a.user, "<"+id+">")
			return len(got) >= 2
		})
		if q := mdnsQueued(t, a, "<"+id+">"); len(q) != 2 || !q[0].Recipients[0].Local {
			t.Fatalf("the hospital queued %+v", q)
		}
		for _, n := range got {
			if !strings.EqualFold(n.From, dave) || (n.Disposition != mdn.DispositionProcessed && n.Disposition != mdn.DispositionDispatched) {
				t.Errorf("notice %+v", n)
			}
		}
	})

	t.Run("no notice for a notice", func(t *testing.T) {
		// The hospital received every notice above and answered none:
		// the only ones it queued are dave's.
		for _, q := range mdnsQueued(t, a, "") {
			if !strings.EqualFold(q.MailFrom, dave) {
				t.Fatalf("the hospital queued a notice: %+v", q)
			}
		}
		// An edge's own read receipt (MDN-06) from alice to bob: relayed
		// and filed, never answered.
		const id = "<receipt-1@hospital.example>"
		n, err := mdn.BuildMDN(mdn.MDN{From: a.user, To: b.user, MessageID: id, Disposition: mdn.DispositionDisplayed,
			ActionMode: "manual-action", SendingMode: "MDN-sent-manually", OriginalMessageID: "<earlier@clinic.example>"})
		if err != nil {
			t.Fatal(err)
		}
		if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user}, n); r != "" {
			t.Fatalf("submission refused: %s", r)
		}
		mdnWait(t, "the hospital's queue done with the receipt", func() bool { return queueFinal(t, a, id) })
		filed := false
		for _, m := range b.mailbox(t, b.user, "INBOX") {
			filed = filed || bytes.Contains(m, []byte("Message-ID: "+id))
		}
		if !filed {
			t.Error("bob's INBOX lacks the receipt")
		}
		if q := mdnsQueued(t, b, id); len(q) != 0 {
			t.Fatalf("the clinic answered a notice: %+v", q)
		}
	})

	t.Run("no notice for a refused message", func(t *testing.T) {
		const id = "untrusted-1@stranger.example"
		if r := submitPython(t, c.addrs["submission"], c.user, c.password, c.user, []string{b.user},
			requestMessage(c.user, b.user, id, good)); r != "" {
			t.Fatalf("the stranger's HISP refused the submission: %s", r)
		}
		mdnWait(t, "the stranger's message bounced", func() bool {
			for _, q := range c.queued(t) {
				if q.MessageID == "<"+id+">" {
					return q.Recipients[0].State == store.StateBounced
				}
			}
			return false
		})
		if q := mdnsQueued(t, b, "<"+id+">"); len(q) != 0 {
			t.Fatalf("the clinic answered a refused message: %+v", q)
		}
		for _, m := range c.mailbox(t, c.user, "INBOX") {
			if _, err := mdn.ParseMDN(m); err == nil {
				t.Fatalf("the stranger got a notice:\n%s", m)
			}
		}
	})
}

// TestMDNSendFailure: the clinic cannot find alice's certificate (the
// hospital does not publish it), so its notices cannot be encrypted. The
// message is still accepted and filed; the failure is logged and audited.
func TestMDNSendFailure(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	a.trust(t, b)
	b.trust(t, a)
	dns := publish(t, storeCerts{b.st}) // the clinic's certificates only
	b.start(t, dns, nil, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, nil)

	const id = "unanswerable@hospital.example"
	if r := submitPython(t, a.addrs["submission"], a.user, a.password, a.user, []string{b.user},
		requestMessage(a.user, b.user, id, "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true")); r != "" {
		t.Fatalf("submission refused: %s", r)
	}
	mdnWait(t, "the hospital's queue done", func() bool { return queueFinal(t, a, "<"+id+">") })
	if q := a.queued(t); q[0].Recipients[0].State != store.StateDelivered {
		t.Fatalf("the clinic did not accept the message: %+v", q[0].Recipients[0])
	}
	if got := b.waitMailbox(t, b.user, "INBOX", 1); !bytes.Contains(got[0], []byte("<"+id+">")) {
		t.Fatalf("bob's message: %.300s", got[0])
	}
	for _, disp := range []string{"processed", "dispatched"} {
		b.audited(t, disp+" MDN failure", func(e store.Event) bool {
			return e.Action == "mdn.send" && e.Verdict == "failed" && strings.Contains(e.Subject, "<"+id+">") &&
				strings.HasPrefix(e.Reason, disp+" MDN to "+a.user)
		})
	}
	if q := mdnsQueued(t, b, ""); len(q) != 0 {
		t.Fatalf("the clinic queued %+v", q)
	}
}

// requestMessage is a short message with a Disposition-Notification-Options
// field (none when options is "") and, like the reference implementation
// and the Edge Testing Tool, Disposition-Notification-To.
func requestMessage(from, to, id, options string) []byte {
	var h strings.Builder
	fmt.Fprintf(&h, "From: %s\r\nTo: %s\r\nSubject: Referral %s\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n",
		from, to, id, time.Now().Format(time.RFC1123Z), id)
	if options != "" {
		fmt.Fprintf(&h, "Disposition-Notification-To: %s\r\ndisposition-notification-options: %s\r\n", from, options)
	}
	h.WriteString("Content-Type: text/plain\r\n\r\nPlease see the patient next week.\r\n")
	return []byte(h.String())
}

// mdnWait polls cond until it holds, failing the test after three minutes.
func mdnWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after three minutes, still not: %s", what)
}

// queueFinal reports whether an instance's queue has a message with the
// Message-ID whose recipients are all final.
func queueFinal(t *testing.T, in *instance, msgID string) bool {
	t.Helper()
	q, err := in.st.QueueList(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range q {
		if m.MessageID != msgID {
			continue
		}
		for _, r := range m.Recipients {
			if !r.State.Final() {
				return false
			}
		}
		return true
	}
	return false
}

// mdnsQueued returns the MDNs an instance queued about a message (every
// one when original is ""), in queue order.
func mdnsQueued(t *testing.T, in *instance, original string) []store.QueuedMessage {
	t.Helper()
	q, err := in.st.QueueList(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.QueuedMessage
	for _, m := range q {
		if isNotifyOrigin(m.Origin) && (original == "" || strings.HasSuffix(m.Origin, " for "+original)) {
			out = append(out, m)
		}
	}
	return out
}

// mdnsFiled returns the MDNs about a message in a mailbox of addr, parsed
// and as filed.
func mdnsFiled(t *testing.T, in *instance, addr, original string) ([]*mdn.MDN, [][]byte) {
	t.Helper()
	var out []*mdn.MDN
	var raw [][]byte
	for _, m := range in.mailbox(t, addr, "INBOX") {
		if n, err := mdn.ParseMDN(m); err == nil && n.OriginalMessageID == original {
			out = append(out, n)
			raw = append(raw, m)
		}
	}
	return out, raw
}

// tcpProxy passes TCP connections on to a target set after it listens, so
// that two instances can route to each other.
type tcpProxy struct {
	l      net.Listener
	mu     sync.Mutex
	target string
	conns  []net.Conn
}

func newTCPProxy(t *testing.T) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				p.mu.Lock()
				target := p.target
				p.mu.Unlock()
				if target == "" {
					return
				}
				out, err := net.DialTimeout("tcp", target, 10*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				p.mu.Lock()
				p.conns = append(p.conns, in, out)
				p.mu.Unlock()
				done := make(chan struct{})
				go func() {
					io.Copy(out, in)
					out.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(in, out)
				in.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// queuedNotMDN returns an instance's queued messages other than the MDNs
// it sends on its own for the messages it accepts (notify.go).
func (in *instance) queuedNotMDN(t *testing.T) []store.QueuedMessage {
	t.Helper()
	var out []store.QueuedMessage
	for _, m := range in.queued(t) {
		if !isNotifyOrigin(m.Origin) {
			out = append(out, m)
		}
	}
	return out
}
