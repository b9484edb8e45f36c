package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestBenchDatabaseCPU: hisp bench --db-pid reports the CPU per message of
// a database server's process tree beside the server's (here both are this
// test process, whose SMTP sink takes the messages).
func TestBenchDatabaseCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the RSA ceiling for seconds")
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	sink := newIDSink(t)
	pid := strconv.Itoa(os.Getpid())
	// The kernel accounts CPU time in ticks (10 ms): the load must last
	// several (the sink takes 40 small messages in 5 ms), and a goroutine
	// keeps this process busy meanwhile, so that both CPU figures have
	// something to report.
	done := make(chan struct{})
	defer close(done)
	go func() {
		for x := 0; ; x++ {
			select {
			case <-done:
				return
			default:
			}
			if x%1024 == 0 {
				runtime.Gosched()
			}
		}
	}()
	code, stdout, stderr := runCLI(t, nil, "bench", "--addr", sink.addr, "--to", "bob@clinic.example", "--starttls", "off",
		"--messages", "1500", "--concurrency", "2", "--size", "1024", "--server-pid", pid, "--db-pid", pid)
	if code != 0 {
		t.Fatalf("hisp bench: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"server CPU:", "database CPU:", "RSA-2048 signatures; server and database"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("hisp bench output lacks %q:\n%s", want, stdout)
		}
	}
	if n := sink.distinct(); n != 1500 {
		t.Errorf("the sink got %d messages, want 1500", n)
	}
}
