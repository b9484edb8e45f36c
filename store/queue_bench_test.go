package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkQueueSubmission measures what the store does for a submitted
// message, as the gateway asks it: a sealed copy (15 KB, incompressible)
// queued already claimed for its first attempt, the plain message (10 KB)
// filed in the sender's Sent folder and its delivery tracking, from 16
// concurrent submissions. cpu-µs/msg is the process's CPU time (user and
// system, the commits' writes and fsyncs included) per message: the
// figure `hisp bench` counts for the store, without the rest of the
// server.
func BenchmarkQueueSubmission(b *testing.B) {
	ctx := context.Background()
	s, err := testOpen(b, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddDomain(ctx, "a.example"); err != nil {
		b.Fatal(err)
	}
	if _, err := s.AddAddress(ctx, "alice@a.example"); err != nil {
		b.Fatal(err)
	}
	q := NewQueue(s, QueueOptions{})
	defer q.Close()
	sealed := make([]byte, 15<<10)
	rand.Read(sealed)
	plain := append([]byte("Subject: load\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef\r\n"), 10<<10/18)...)
	backoff := DefaultBackoff()
	var n atomic.Int64
	cpu0 := processCPU(b)
	b.SetParallelism(8) // 8 × GOMAXPROCS (2 here) goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			m := testMessage(int(i), "bob@b.example")
			m.Data = sealed
			now := time.Now()
			_, err := q.EnqueueWith(ctx, m, EnqueueExtras{
				Filing: &Filing{Address: "alice@a.example", Mailbox: "Sent", Message: plain, Flags: []string{`\Seen`}},
				Tracking: &TrackedMessage{MessageID: m.MessageID, Sender: "alice@a.example", Sent: now,
					Recipients: []TrackedRecipient{{Address: "bob@b.example", ProcessedDeadline: now.Add(time.Hour)}}},
				Claim: &backoff,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := q.Stats()
	b.ReportMetric(float64(st.Messages)/float64(max(st.Commits, 1)), "msgs/commit")
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/msg")
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(fmt.Errorf("getrusage: %w", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
