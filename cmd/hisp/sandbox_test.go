package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testbuf"
)

// freePortBase finds ten consecutive free loopback ports (TCP and UDP).
func freePortBase(t *testing.T) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := 20000 + (os.Getpid()*7+try*113)%30000
		ok := true
		for p := base; p < base+10 && ok; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
			} else {
				pc.Close()
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// TestSandbox: on an empty data directory the sandbox sets up two HISPs,
// and a message from alice (submitted with Python's smtplib) reaches bob's
// mailbox through discovery, trust, sealing, the queue, SMTP and opening;
// curl reads it over IMAP. A second start reuses the same set-up.
func TestSandbox(t *testing.T) {
	dir := t.TempDir()
	base := freePortBase(t)
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb testbuf.Buffer
		env := &cliEnv{ctx: ctx, stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		done := make(chan int, 1)
		go func() { done <- run(env, []string{"sandbox", "--data", dir, "--port-base", fmt.Sprint(base)}) }()
		for deadline := time.Now().Add(60 * time.Second); strings.Count(out.String(), "hisp ready") < 2; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("sandbox did not start:\n%s\n%s", out.String(), errb.String())
			}
			select {
			case code := <-done:
				t.Fatalf("sandbox exited %d:\n%s\n%s", code, out.String(), errb.String())
			default:
			}
		}
		alicePW := readLine(t, filepath.Join(dir, "hospital", "password.txt"))
		bobPW := readLine(t, filepath.Join(dir, "clinic", "password.txt"))
		if !strings.Contains(out.String(), alicePW) || !strings.Contains(out.String(), "swaks") {
			t.Fatalf("instructions lack the password or how to send:\n%s", out.String())
		}
		subject := fmt.Sprintf("sandbox round %d", round)
		script := fmt.Sprintf(`
import smtplib, ssl
c = ssl._create_unverified_context()
s = smtplib.SMTP("127.0.0.1", %d, timeout=60)
s.starttls(context=c)
s.login("alice@hospital.localhost", %q)
s.sendmail("alice@hospital.localhost", ["bob@clinic.localhost"], b"From: alice@hospital.localhost\r\nTo: bob@clinic.localhost\r\nSubject: %s\r\n\r\nhello bob\r\n")
s.quit()
`, base+1, alicePW, subject)
		if b, err := exec.Command("python3", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("submit: %v\n%s\n%s", err, b, errb.String())
		}
		var got []byte
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			b, err := exec.Command("curl", "-sk", "--ssl-reqd", fmt.Sprintf("imap://127.0.0.1:%d/INBOX;UID=%d", base+7, round),
				"-u", "bob@clinic.localhost:"+bobPW).Output()
			if err == nil && len(b) > 0 {
				got = b
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bob's message %d did not arrive:\n%s", round, errb.String())
			}
		}
		if !strings.Contains(string(got), "Subject: "+subject) || !strings.Contains(string(got), "X-Hisp-Verification: pass") {
			t.Fatalf("bob got:\n%s", got)
		}
		// The hospital's admin page, with the login the instructions give.
		adminPW := readLine(t, filepath.Join(dir, "hospital", "admin-password.txt"))
		if !strings.Contains(out.String(), adminPW) {
			t.Fatalf("instructions lack the admin password:\n%s", out.String())
		}
		page, err := exec.Command("curl", "-sS", "-u", "admin:"+adminPW, fmt.Sprintf("http://127.0.0.1:%d/", base+4)).Output()
		if err != nil || !strings.Contains(string(page), "alice@hospital.localhost") {
			t.Fatalf("admin page: %v\n%.500s", err, page)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("sandbox exit %d: %s", code, errb.String())
		}
	}
}

func readLine(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
