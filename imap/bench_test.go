package imap

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/store"
)

// benchEnv is a loopback server whose logins skip bcrypt, with alice's
// INBOX holding at least n messages (copies of a few, made by doubling).
func benchEnv(b *testing.B, n int) *testEnv {
	e := newTestEnv(b, envOptions{loopback: true})
	e.srv.checkPassword = func(ctx context.Context, username, password string) (string, error) {
		return alice, nil
	}
	for i := range 8 {
		msg, _ := directMessage(b, fmt.Sprintf("Referral %d", i))
		_, err := e.store.Deliver(e.ctx, alice, "", msg, nil, time.Time{})
		tcheck(b, err, "deliver")
	}
	a, err := e.store.MailAccount(e.ctx, alice)
	tcheck(b, err, "account")
	inbox, err := e.store.Mailbox(e.ctx, a.ID, store.Inbox)
	tcheck(b, err, "inbox")
	for {
		uids, err := e.store.MessageUIDs(e.ctx, a.ID, inbox.ID)
		tcheck(b, err, "uids")
		if len(uids) >= n {
			break
		}
		_, err = e.store.CopyMessages(e.ctx, a.ID, inbox.ID, uids[:min(len(uids), n-len(uids))], store.Inbox, false)
		tcheck(b, err, "copy")
	}
	return e
}

// BenchmarkFetchHeaders fetches the headers of 1,000 messages.
func BenchmarkFetchHeaders(b *testing.B) {
	e := benchEnv(b, 1000)
	rc := dialRaw(b, e.addr)
	rc.login(alice, "x")
	rc.ok("EXAMINE INBOX")
	b.ResetTimer()
	for range b.N {
		if u := rc.ok("FETCH 1:1000 (UID FLAGS BODY.PEEK[HEADER])"); len(u) != 1000 {
			b.Fatalf("%d responses", len(u))
		}
	}
}

// BenchmarkSearch searches 10,000 messages by flag (metadata only) and by
// subject (reading each header).
func BenchmarkSearch(b *testing.B) {
	e := benchEnv(b, 10000)
	rc := dialRaw(b, e.addr)
	rc.login(alice, "x")
	rc.ok("EXAMINE INBOX")
	for _, q := range []string{"UNSEEN", "SUBJECT \"Referral 3\""} {
		b.Run(strings.Fields(q)[0], func(b *testing.B) {
			for range b.N {
				if u := rc.ok("UID SEARCH %s", q); len(u) != 1 || len(u[0]) < 20 {
					b.Fatalf("search: %.100q", u)
				}
			}
		})
	}
}

// BenchmarkIdleMemory holds connections in IDLE and reports the memory
// (heap and stacks, client side included) per connection.
func BenchmarkIdleMemory(b *testing.B) {
	e := benchEnv(b, 10)
	const n = 1000
	measure := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for range b.N {
		before := measure()
		conns := make([]net.Conn, 0, n)
		for range n {
			c, err := net.Dial("tcp", e.addr)
			tcheck(b, err, "dial")
			conns = append(conns, c)
			r := bufio.NewReaderSize(c, 16)
			fmt.Fprintf(c, "a LOGIN x y\r\nb SELECT INBOX\r\nc IDLE\r\n")
			for {
				l, err := r.ReadString('\n')
				tcheck(b, err, "read")
				if strings.HasPrefix(l, "+ ") {
					break
				}
			}
		}
		after := measure()
		b.ReportMetric(float64(after-before)/n, "B/idle-conn")
		b.ReportMetric(math.Round(float64(runtime.NumGoroutine())/n), "goroutines/conn")
		for _, c := range conns {
			c.Close()
		}
		// Let the server's goroutines end before the next round.
		for i := 0; i < 100 && runtime.NumGoroutine() > 50; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
}
