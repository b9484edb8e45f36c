package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/loadgen"
	"github.com/hisp-project/hisp/store"
)

// TestCrash: two `hisp serve` processes, A (hospital.example, alice) and B
// (clinic.example, bob). Several clients submit Direct messages to A for
// bob; A is killed with SIGKILL in the middle of the load, restarted on the
// same data directory and left to drain its queue into B, and a second
// load goes through the restarted A. Then every message A answered 250 to
// must be in bob's INBOX exactly once, by Message-ID (or bounced to alice
// with a DSN); a second copy is allowed only for SMTP's at-least-once
// window, a delivery B had taken when A died before recording it, so there
// may be no more duplicates than deliveries A can have in flight. No
// message A refused may arrive. Messages that got no reply because of the
// kill may or may not arrive.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs two hisp processes under load")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "hisp")
	if b, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}

	// The deliverer's limits (smtp.DelivererConfig defaults): at most
	// deliveryWorkers deliveries from their start until their outcome is
	// recorded (its attempt slots).
	const deliveryWorkers = 8
	const (
		firstLoad  = 500 // messages offered before and during the kill
		killAfter  = 200 // 250 replies before A is killed
		secondLoad = 300 // messages submitted to the restarted A
		clients    = 8
	)

	ports := crashFreePorts(t, 10)
	a := &crashInstance{name: "A", domain: "hospital.example", user: "alice@hospital.example", bin: bin,
		dir: filepath.Join(tmp, "a"), ports: ports[:5]}
	b := &crashInstance{name: "B", domain: "clinic.example", user: "bob@clinic.example", bin: bin,
		dir: filepath.Join(tmp, "b"), ports: ports[5:]}
	pwFile := filepath.Join(tmp, "pw")
	const password = "crash test password"
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*crashInstance{a, b} {
		in.admin(t, "domain", "add", in.domain)
		in.admin(t, "address", "add", in.user, "--password-file", pwFile)
		in.admin(t, "cert", "issue", in.user, "--crl-url", "http://"+in.addr("admin"))
		in.caFile = filepath.Join(tmp, in.domain+"-ca.pem")
		if err := os.WriteFile(in.caFile, []byte(in.admin(t, "cert", "ca", in.domain)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Each domain anchors its own CA (its own users) and the other's.
	for _, in := range []*crashInstance{a, b} {
		in.admin(t, "anchor", "add", in.domain, a.caFile, "--direction", "both")
		in.admin(t, "anchor", "add", in.domain, b.caFile, "--direction", "both")
	}
	// Each finds the other's certificates in the other's DNS and delivers
	// to the other's backbone port; retries come quickly.
	a.writeConfig(t, b)
	b.writeConfig(t, a)
	b.start(t)
	a.start(t)

	var (
		mu       sync.Mutex
		accepted = map[string]int{} // Message-ID → 250 replies (must be 1)
		refused  = map[string]string{}
		noReply  = map[string]bool{}
	)
	record := func(id string, err error) {
		mu.Lock()
		defer mu.Unlock()
		var se *gosmtp.SMTPError
		switch {
		case err == nil:
			accepted[id]++
		case errors.As(err, &se):
			refused[id] = se.Error()
		default:
			noReply[id] = true
		}
	}
	countAccepted := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
	load := func(ctx context.Context, n int, onResult func(string, error)) *loadgen.Report {
		r, err := loadgen.Run(ctx, loadgen.Options{Addr: a.addr("submission"), User: a.user, Password: password,
			To: []string{b.user}, Concurrency: clients, Messages: n, Size: 4 << 10, Reuse: true, NoCeiling: true,
			OnResult: onResult})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("load: %v", err)
		}
		return r
	}

	// First load; SIGKILL once killAfter messages are accepted.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kill := make(chan struct{})
	var once sync.Once
	done := make(chan *loadgen.Report, 1)
	go func() {
		done <- load(ctx, firstLoad, func(id string, err error) {
			record(id, err)
			if countAccepted() >= killAfter {
				once.Do(func() { close(kill) })
			}
		})
	}()
	var r1 *loadgen.Report
	select {
	case <-kill:
		a.kill(t, cancel) // clients stop offering; those in a transaction see it break
		<-done            // the interrupted load's report is not needed
	case r1 = <-done:
		t.Fatalf("first load ended before %d messages were accepted: %d sent, %d failed, first error %q\n%s",
			killAfter, r1.Messages, r1.Failed, r1.FirstError, a.logTail())
	}
	acceptedBeforeKill := countAccepted()
	atKill := a.queueStates(t)
	t.Logf("first load: %d accepted, %d no reply, %d refused; A's queue at the kill: %v",
		acceptedBeforeKill, len(noReply), len(refused), atKill)

	// Restart on the same data directory, then a second load.
	a.start(t)
	r2 := load(context.Background(), secondLoad, record)
	if r2.Failed > 0 {
		t.Errorf("second load: %d of %d failed: %s", r2.Failed, secondLoad, r2.FirstError)
	}
	if n := countAccepted(); n < 500 {
		t.Fatalf("only %d messages accepted in all, want at least 500", n)
	}

	// Drain: every recipient in A's queue final (delivered or bounced).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		pending := a.pending(t)
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's queue still has %d recipients not final after 3 minutes: %v\n%s", pending, a.queueStates(t), a.logTail())
		}
		time.Sleep(500 * time.Millisecond)
	}
	recovered := a.recovered()
	b.stop(t)
	a.stop(t)

	// What B filed for bob, and what A bounced.
	inbox := crashInbox(t, b.dir, b.user)
	bounced := map[string]bool{}
	for _, m := range a.queue(t, "--all") {
		for _, r := range m.Recipients {
			if r.State == string(store.StateBounced) {
				bounced[m.MessageID] = true
			}
		}
	}
	var lost, dup, dupCopies, bouncedN, noReplyArrived int
	var dups []string
	for id, n := range accepted {
		if n != 1 {
			t.Errorf("%s answered 250 %d times", id, n)
		}
		switch got := inbox[id]; {
		case got == 1:
		case got > 1:
			dup++
			dupCopies += got - 1
			dups = append(dups, id)
		case bounced[id]:
			bouncedN++
		default:
			lost++
			if lost <= 10 {
				t.Errorf("lost: %s got 250 from A and is neither in bob's INBOX nor bounced", id)
			}
		}
	}
	for id, why := range refused {
		if inbox[id] > 0 {
			t.Errorf("%s was refused (%s) and still delivered", id, why)
		}
	}
	for id := range noReply {
		if inbox[id] > 0 {
			noReplyArrived++
		}
	}
	for id := range inbox {
		if accepted[id] == 0 && !noReply[id] {
			t.Errorf("bob has %s, which the load never offered or A refused", id)
		}
	}
	sort.Strings(dups)
	t.Logf("accepted %d (%d before the kill); in bob's INBOX: %d distinct, %d duplicated (%d extra copies) %v; bounced %d; lost %d; "+
		"no reply at the kill: %d, of which %d arrived; refused: %d; recovered after restart: %s recipients",
		len(accepted), acceptedBeforeKill, len(inbox), dup, dupCopies, dups, bouncedN, lost, len(noReply), noReplyArrived, len(refused), recovered)
	if lost > 0 {
		t.Errorf("%d accepted messages lost", lost)
	}
	// One kill: at most one delivery per attempt slot was in flight, B
	// having answered 250 and A not having recorded it.
	if dupCopies > deliveryWorkers {
		t.Errorf("%d duplicate copies: more than the %d deliveries A can have in flight at a kill", dupCopies, deliveryWorkers)
	}
}

// crashInstance is one `hisp serve` process of TestCrash.
type crashInstance struct {
	name, domain, user string
	bin, dir, caFile   string
	config             string
	ports              []int // smtp, submission, imap, dns, admin
	// host is the config's hostname; "" is hisp.DOMAIN.
	host string
	// extra is TOML added at the end of the config (a [store] table).
	extra string
	// byConfig makes admin commands reach the store through --config
	// (a PostgreSQL store shared by several nodes) instead of --data.
	byConfig bool

	cmd    *exec.Cmd
	stdout *testbuf.Buffer
	stderr *testbuf.Buffer
	exited chan struct{}
	logs   []string // stderr of earlier runs
}

func (in *crashInstance) addr(name string) string {
	i := map[string]int{"smtp": 0, "submission": 1, "imap": 2, "dns": 3, "admin": 4}[name]
	return fmt.Sprintf("127.0.0.1:%d", in.ports[i])
}

// admin runs an admin command of the binary on the instance's data
// directory and returns its standard output.
func (in *crashInstance) admin(t *testing.T, args ...string) string {
	t.Helper()
	where := []string{"--data", in.dir}
	if in.byConfig {
		where = []string{"--config", in.config}
	}
	cmd := exec.Command(in.bin, append(args, where...)...)
	cmd.Env = append(os.Environ(), "HISP_DATA=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: hisp %s: %v\n%s%s", in.name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func (in *crashInstance) writeConfig(t *testing.T, peer *crashInstance) {
	t.Helper()
	in.writeConfigTo(t, peer.addr("dns"), map[string]string{peer.domain: peer.addr("smtp")})
}

// writeConfigTo writes the instance's config: its resolver is the DNS
// server at resolver, routes maps partner domains to backbone addresses.
func (in *crashInstance) writeConfigTo(t *testing.T, resolver string, routes map[string]string) {
	t.Helper()
	in.config = filepath.Join(filepath.Dir(in.dir), in.name+".toml")
	host := in.host
	if host == "" {
		host = "hisp." + in.domain
	}
	cfg := fmt.Sprintf(`data = %q
hostname = %q
[listen]
smtp = %q
submission = %q
imap = %q
dns = %q
admin = %q
[dns]
resolver = %q
[outbound]
retry_first = "1s"
retry_max = "4s"
retry_attempts = 30
[outbound.routes]
`, in.dir, host, in.addr("smtp"), in.addr("submission"), in.addr("imap"), in.addr("dns"), in.addr("admin"), resolver)
	domains := make([]string, 0, len(routes))
	for d := range routes {
		domains = append(domains, d)
	}
	sort.Strings(domains)
	for _, d := range domains {
		cfg += fmt.Sprintf("%q = %q\n", d, routes[d])
	}
	cfg += in.extra
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs `hisp serve` and waits for "hisp ready".
func (in *crashInstance) start(t *testing.T) {
	t.Helper()
	in.launch(t)
	in.waitReady(t)
}

// launch runs `hisp serve` without waiting for it to be ready.
func (in *crashInstance) launch(t *testing.T) {
	t.Helper()
	if in.stderr != nil {
		in.logs = append(in.logs, in.stderr.String())
	}
	in.stdout, in.stderr = &testbuf.Buffer{}, &testbuf.Buffer{}
	in.cmd = exec.Command(in.bin, "serve", "--config", in.config)
	in.cmd.Env = append(os.Environ(), "HISP_DATA=")
	in.cmd.Stdout, in.cmd.Stderr = in.stdout, in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.exited = make(chan struct{})
	cmd, exited := in.cmd, in.exited
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
}

// waitReady waits for the "hisp ready" of the last launch.
func (in *crashInstance) waitReady(t *testing.T) {
	t.Helper()
	cmd, exited := in.cmd, in.exited
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(in.stdout.String(), "hisp ready") {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s: hisp serve ended: %v\n%s%s", in.name, cmd.ProcessState, in.stdout.String(), in.stderr.String())
		default:
		}
	}
	t.Fatalf("%s: hisp serve not ready after a minute\n%s%s", in.name, in.stdout.String(), in.stderr.String())
}

// kill sends SIGKILL, calls then and waits for the process to be gone.
func (in *crashInstance) kill(t *testing.T, then func()) {
	t.Helper()
	if err := in.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	then()
	<-in.exited
}

// stop sends SIGTERM and expects a clean exit.
func (in *crashInstance) stop(t *testing.T) {
	t.Helper()
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("%s: hisp serve did not stop within 90 s of SIGTERM", in.name)
	}
	if !in.cmd.ProcessState.Success() {
		t.Errorf("%s: hisp serve: %v\n%s", in.name, in.cmd.ProcessState, in.logTail())
	}
}

func (in *crashInstance) logTail() string {
	s := in.stderr.String()
	if len(s) > 4000 {
		s = "...\n" + s[len(s)-4000:]
	}
	return in.name + " log:\n" + s
}

// recovered is what the restarted deliverer logged of the recipients it
// found in delivering.
func (in *crashInstance) recovered() string {
	m := regexp.MustCompile(`interrupted run are due again.*recipients=(\d+)`).FindStringSubmatch(in.stderr.String())
	if m == nil {
		return "0"
	}
	return m[1]
}

type crashQueued struct {
	MessageID  string `json:"message_id"`
	Recipients []struct {
		State string `json:"state"`
	} `json:"recipients"`
}

func (in *crashInstance) queue(t *testing.T, args ...string) []crashQueued {
	t.Helper()
	var q []crashQueued
	out := in.admin(t, append([]string{"queue", "list", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &q); err != nil {
		t.Fatalf("queue list --json: %v\n%s", err, out)
	}
	return q
}

// pending counts the recipients in the queue that are not final.
func (in *crashInstance) pending(t *testing.T) int {
	n := 0
	for _, m := range in.queue(t) {
		for _, r := range m.Recipients {
			if !store.RecipientState(r.State).Final() {
				n++
			}
		}
	}
	return n
}

// queueStates counts the recipients in the queue by state.
func (in *crashInstance) queueStates(t *testing.T) map[string]int {
	out := map[string]int{}
	for _, m := range in.queue(t, "--all") {
		for _, r := range m.Recipients {
			out[r.State]++
		}
	}
	return out
}

// crashInbox opens a stopped instance's store and counts the messages in
// an address's INBOX by Message-ID.
func crashInbox(t *testing.T, dir, addr string) map[string]int {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acct, err := st.MailAccount(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := st.Mailbox(ctx, acct.ID, store.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	uids, err := st.MessageUIDs(ctx, acct.ID, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?im)^Message-ID:\s*(<[^>]*>)`)
	out := map[string]int{}
	for _, u := range uids {
		body, err := st.MessageBody(ctx, acct.ID, mb.ID, u)
		if err != nil {
			t.Fatal(err)
		}
		head, _, _ := bytes.Cut(body, []byte("\r\n\r\n"))
		m := re.FindSubmatch(head)
		if m == nil {
			t.Errorf("message %d in %s's INBOX has no Message-ID:\n%.500s", u, addr, body)
			continue
		}
		out[string(m[1])]++
	}
	return out
}

// crashFreePorts returns n loopback ports free for both TCP and UDP (the
// DNS listener needs both).
func crashFreePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var hold []net.Listener
	defer func() {
		for _, l := range hold {
			l.Close()
		}
	}()
	for try := 0; len(ports) < n && try < 100; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", l.Addr().String())
		if err != nil {
			l.Close()
			continue
		}
		pc.Close()
		hold = append(hold, l) // held until all are chosen: no port twice
		ports = append(ports, port)
	}
	if len(ports) < n {
		t.Fatal("no free loopback ports")
	}
	return ports
}
