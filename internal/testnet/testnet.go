// Package testnet opens loopback listeners for tests of hisp's network
// servers.
package testnet

import (
	"net"
	"os"
	"runtime"
	"testing"
	"time"
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

// Resources is what a process holds for its connections: open file
// descriptors (-1 where /proc is missing) and goroutines.
type Resources struct{ FDs, Goroutines int }

// Held counts the process's descriptors and goroutines.
func Held() Resources {
	fds := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = len(ents)
	}
	return Resources{FDs: fds, Goroutines: runtime.NumGoroutine()}
}

// WaitReleased waits up to within for the process to hold no more than
// base plus slack descriptors and goroutines, and fails the test if it
// does not.
func WaitReleased(t testing.TB, base Resources, slack int, within time.Duration) Resources {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		now := Held()
		if now.FDs <= base.FDs+slack && now.Goroutines <= base.Goroutines+slack {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v still holding %d descriptors and %d goroutines (before: %d and %d)",
				within, now.FDs, now.Goroutines, base.FDs, base.Goroutines)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
