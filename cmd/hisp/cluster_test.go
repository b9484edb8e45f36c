package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to watch the claims

	"github.com/hisp-project/hisp/internal/pgtest"
	"github.com/hisp-project/hisp/loadgen"
	"github.com/hisp-project/hisp/store"
)

// The cluster tests (issue 14): hisp nodes sharing one PostgreSQL store,
// as real `hisp serve` processes over real sockets. pgtest gives each test
// a fresh database on a PostgreSQL server started for this test binary
// (they skip without the PostgreSQL binaries, except in CI).

// clusterLease is [store] lease of the cluster nodes: how long a dead
// node's claims keep its messages from the others. Renewed every second.
const clusterLease = "3s"

// clusterPassword is every test user's password.
const clusterPassword = "cluster test password"

// newClusterNode is a node of hospital.example on the PostgreSQL store at
// url, with its own data directory, ports and host name, the master key
// file shared by all nodes; admin commands reach the store with --config.
func newClusterNode(bin, tmp, name, url, lease string, ports []int) *crashInstance {
	return &crashInstance{name: name, domain: "hospital.example", user: "alice@hospital.example", bin: bin,
		dir: filepath.Join(tmp, strings.ToLower(name)), ports: ports, byConfig: true,
		host: strings.ToLower(name) + ".hospital.example",
		extra: fmt.Sprintf("[store]\nurl = %q\nmaster_key_file = %q\nlease = %q\n",
			url, filepath.Join(tmp, "master.key"), lease)}
}

// clusterPair is nodes A1 and A2 of hospital.example on a new PostgreSQL
// store (url), sharing the master key file in tmp, with their claims'
// lease; extra are free loopback ports for the test's other servers.
type clusterPair struct {
	a1, a2        *crashInstance
	url, bin, tmp string
	extra         []int
}

// newClusterPair makes a clusterPair; it skips the test with -short.
func newClusterPair(t *testing.T, lease string, extraPorts int) clusterPair {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test runs hisp processes and PostgreSQL")
	}
	c := clusterPair{url: pgtest.URL(t), bin: clusterBinary(t), tmp: t.TempDir()}
	ports := crashFreePorts(t, 10+extraPorts)
	c.a1 = newClusterNode(c.bin, c.tmp, "A1", c.url, lease, ports[:5])
	c.a2 = newClusterNode(c.bin, c.tmp, "A2", c.url, lease, ports[5:10])
	c.extra = ports[10:]
	return c
}

// TestClusterFailover: nodes A1 and A2 of hospital.example share one
// PostgreSQL store and one master key file; the partner B (clinic.example,
// and lab.example, SQLite) is a separate hisp.
//
//   - A node dies with messages claimed: 500 messages are submitted to A1
//     while B's backbone port is a black hole (it takes connections and
//     never greets, so both nodes' attempts hang holding their claims);
//     every one is answered 250. A1 is killed (SIGKILL) while it holds
//     claims, the black hole closes and B's real backbone comes up: A2
//     takes over A1's claims once their lease runs out and delivers every
//     message to bob exactly once (counted by Message-ID over IMAP at B).
//     B took no message while A1 lived, so SMTP's at-least-once window (a
//     delivery B answered 250 that A1 died before recording) is empty
//     here: no duplicate is allowed.
//   - A message filed by one node is read over IMAP at the other: alice
//     waits in IDLE at A2 while B delivers bob's message to A1's backbone
//     port; A2's IDLE wakes and A2 serves the message.
//   - An anchor added with the CLI through A1's config is used by A2 within
//     seconds: alice's message to carol@lab.example (lab's CA not anchored)
//     is refused at A2's submission, then accepted once `hisp anchor add
//     --config A1.toml` has added lab's CA, and reaches carol.
func TestClusterFailover(t *testing.T) {
	c := newClusterPair(t, clusterLease, 5)
	url, bin, tmp, a1, a2 := c.url, c.bin, c.tmp, c.a1, c.a2
	b := &crashInstance{name: "B", domain: "clinic.example", user: "bob@clinic.example", bin: bin,
		dir: filepath.Join(tmp, "b"), ports: c.extra}
	const carol = "carol@lab.example"
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s\n%s\n%s", a1.logTail(), a2.logTail(), b.logTail())
		}
	})
	pwFile := filepath.Join(tmp, "pw")
	if err := os.WriteFile(pwFile, []byte(clusterPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A1 and A2: the same configuration but for their listeners, data
	// directories and host names; both resolve through B's DNS and route
	// B's domains to B's backbone port. B resolves through A2's DNS (either
	// node publishes the shared certificates) and delivers to A1's
	// backbone port.
	for _, a := range []*crashInstance{a1, a2} {
		a.writeConfigTo(t, b.addr("dns"), map[string]string{"clinic.example": b.addr("smtp"), "lab.example": b.addr("smtp")})
	}
	b.writeConfigTo(t, a2.addr("dns"), map[string]string{"hospital.example": a1.addr("smtp")})

	// The store is made through A1's config; the CRLs are served by A2.
	a1.admin(t, "domain", "add", "hospital.example")
	a1.admin(t, "address", "add", a1.user, "--password-file", pwFile)
	a1.admin(t, "cert", "issue", a1.user, "--crl-url", "http://"+a2.addr("admin"))
	b.admin(t, "domain", "add", "clinic.example")
	b.admin(t, "address", "add", b.user, "--password-file", pwFile)
	b.admin(t, "cert", "issue", b.user, "--crl-url", "http://"+b.addr("admin"))
	b.admin(t, "domain", "add", "lab.example")
	b.admin(t, "address", "add", carol, "--password-file", pwFile)
	b.admin(t, "cert", "issue", carol, "--crl-url", "http://"+b.addr("admin"))
	caFile := func(in *crashInstance, domain string) string {
		f := filepath.Join(tmp, domain+"-ca.pem")
		if err := os.WriteFile(f, []byte(in.admin(t, "cert", "ca", domain)), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	hospitalCA, clinicCA, labCA := caFile(a1, "hospital.example"), caFile(b, "clinic.example"), caFile(b, "lab.example")
	a1.admin(t, "anchor", "add", "hospital.example", hospitalCA, "--direction", "both")
	a2.admin(t, "anchor", "add", "hospital.example", clinicCA, "--direction", "both") // either node's config
	for _, d := range []string{"clinic.example", "lab.example"} {
		b.admin(t, "anchor", "add", d, hospitalCA, "--direction", "both")
		b.admin(t, "anchor", "add", d, clinicCA, "--direction", "both")
		b.admin(t, "anchor", "add", d, labCA, "--direction", "both")
	}
	if fi, err := os.Stat(filepath.Join(tmp, "master.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("shared master key file: %v, %v; want mode 0600", fi, err)
	}

	// B down: its backbone port a black hole; B itself serves only DNS
	// (bob's and carol's certificates) and its CRLs, as a partner whose
	// mail server is down while its DNS still answers.
	hole := newBlackHole(t, b.addr("smtp"))
	upConfig := b.config
	b.config = filepath.Join(tmp, "B-down.toml")
	writeWithoutSMTP(t, upConfig, b.config, b.addr("smtp"))
	b.start(t)
	a1.start(t)
	a2.start(t)

	// (a) 500 messages submitted to A1, each answered 250.
	const messages = 500
	start := time.Now()
	var mu sync.Mutex
	accepted := map[string]int{}
	r, err := loadgen.Run(context.Background(), loadgen.Options{Addr: a1.addr("submission"), User: a1.user,
		Password: clusterPassword, To: []string{b.user}, Concurrency: 8, Messages: messages, Size: 4 << 10,
		Reuse: true, NoCeiling: true, OnResult: func(id string, err error) {
			if err == nil {
				mu.Lock()
				accepted[msgID(id)]++
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if r.Failed > 0 || len(accepted) != messages {
		t.Fatalf("A1 accepted %d of %d messages; %d failed, first: %s\n%s", len(accepted), messages, r.Failed, r.FirstError, a1.logTail())
	}
	t.Logf("A1 answered 250 to %d messages in %s", len(accepted), r.Elapsed.Round(time.Millisecond))

	// Kill A1 while it holds claims (attempts hanging at the black hole).
	claims := nodeClaims(t, url)
	a1Node := store.DefaultNode(a1.dir)
	for deadline := time.Now().Add(time.Minute); claims(a1Node) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("A1 claimed nothing within a minute\n%s", a1.logTail())
		}
	}
	a1.kill(t, func() {})
	heldAtKill := claims(a1Node) // a dead node's claims stay until they expire
	hole.close()                 // A2's hanging attempts fail: retried
	b.stop(t)
	b.config = upConfig
	b.start(t)
	killed := time.Now()

	// A2 alone drains the queue.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		if a2.pending(t) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained by A2 within 2 minutes of A1's death: %v\n%s", a2.queueStates(t), a2.logTail())
		}
	}
	drained := time.Since(killed)
	takenOver := sumLogged(a2.stderr.String(), `claimed by a node whose lease ran out are due again.*recipients=(\d+)`)
	if takenOver < heldAtKill {
		t.Errorf("A1 held %d claims when it died; A2 took over %d", heldAtKill, takenOver)
	}
	states := a2.queueStates(t)
	inbox := imapMessageIDs(t, b.addr("imap"), b.user, "INBOX")
	var lost, dupCopies int
	for id := range accepted {
		switch n := inbox[id]; {
		case n == 0:
			lost++
			if lost <= 10 {
				t.Errorf("lost: %s answered 250 by A1, not in bob's INBOX", id)
			}
		case n > 1:
			dupCopies += n - 1
			t.Errorf("duplicate: %s is in bob's INBOX %d times", id, n)
		}
	}
	for id := range inbox {
		if accepted[id] == 0 {
			t.Errorf("bob has %s, which A1 never accepted", id)
		}
	}
	t.Logf("A1 killed holding %d claims; A2 took over %d; queue drained %s after the kill; queue: %v; "+
		"bob's INBOX: %d distinct of %d accepted, %d lost, %d duplicate copies",
		heldAtKill, takenOver, drained.Round(time.Millisecond), states, len(inbox), len(accepted), lost, dupCopies)

	// (b) Filed by A1, read and awaited (IDLE) at A2.
	a1.start(t) // the dead node comes back on its data directory
	idle := newIMAPWatch(t, a2.addr("imap"), a1.user, "INBOX")
	var bobID string
	_, err = loadgen.Run(context.Background(), loadgen.Options{Addr: b.addr("submission"), User: b.user,
		Password: clusterPassword, To: []string{a1.user}, Concurrency: 1, Messages: 1, Size: 2 << 10,
		Reuse: true, NoCeiling: true, OnResult: func(id string, err error) {
			if err != nil {
				t.Errorf("bob's message to alice at B: %v", err)
			}
			bobID = msgID(id)
		}})
	if err != nil || bobID == "" {
		t.Fatalf("bob's message to alice: %v\n%s", err, b.logTail())
	}
	sent := time.Now()
	came, others := idle.waitFor(bobID, time.Minute)
	if !came {
		t.Errorf("alice's IDLE at A2 was not told of bob's message to A1 within a minute")
	}
	woke := time.Since(sent)
	idle.idle = nil
	idle.close()
	var found bool
	for deadline := time.Now().Add(time.Minute); !found && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		found = imapMessageIDs(t, a2.addr("imap"), a1.user, "INBOX")[bobID] == 1
	}
	if !found {
		t.Fatalf("bob's message %s is not in alice's INBOX at A2\n%s\n%s", bobID, a1.logTail(), b.logTail())
	}
	t.Logf("bob's message to alice, delivered to A1, announced in IDLE at A2 %s after its submission at B (%d other new messages first)",
		woke.Round(time.Millisecond), others)

	// (c) An anchor added through A1's config, used by A2.
	submit := func() error {
		var out error
		_, err := loadgen.Run(context.Background(), loadgen.Options{Addr: a2.addr("submission"), User: a1.user,
			Password: clusterPassword, To: []string{carol}, Concurrency: 1, Messages: 1, Size: 1 << 10,
			Reuse: true, NoCeiling: true, OnResult: func(id string, err error) { out = err }})
		if err != nil {
			return err
		}
		return out
	}
	var se *gosmtp.SMTPError
	if err := submit(); !errors.As(err, &se) || se.Code < 500 {
		t.Fatalf("alice to %s at A2 before lab's anchor: %v, want a permanent refusal", carol, err)
	}
	t.Logf("before the anchor, A2 refused alice's message to %s: %v", carol, se)
	a1.admin(t, "anchor", "add", "hospital.example", labCA, "--direction", "out")
	added := time.Now()
	var tries int
	for {
		tries++
		err := submit()
		if err == nil {
			break
		}
		if time.Since(added) > 30*time.Second {
			t.Fatalf("A2 still refuses alice's message to %s 30 s after the anchor was added at A1: %v", carol, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	usedAfter := time.Since(added)
	var carolGot int
	for deadline := time.Now().Add(time.Minute); carolGot == 0 && time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		carolGot = len(imapMessageIDs(t, b.addr("imap"), carol, "INBOX"))
	}
	if carolGot == 0 {
		t.Errorf("alice's message accepted at A2 never reached %s\n%s", carol, a2.logTail())
	}
	t.Logf("lab's anchor, added through A1's config, used by A2 after %s (%d submissions)", usedAfter.Round(time.Millisecond), tries)

	a1.stop(t)
	a2.stop(t)
	b.stop(t)
	for _, in := range []*crashInstance{a1, a2, b} {
		logErrors(t, in)
	}
	t.Logf("TestClusterFailover took %s", time.Since(start).Round(time.Millisecond))
}

// TestClusterDrainOnce: two nodes draining one queue of 2,000 messages
// deliver each exactly once. The messages are put in the shared queue
// through the store (not submitted: signing and sealing 2,000 messages on
// a small machine would take most of a minute, and the claims are what is
// tested), then both nodes start at once and deliver to a partner that is
// a plain SMTP sink in this test (go-smtp, no S/MIME), which counts the
// Message-IDs it is given and which node (EHLO name) gave each. The sink
// answers 250 to every message, so a second copy could only come from two
// nodes holding one recipient at once: none is allowed.
//
// Midway A1 is drained (SIGTERM, as before maintenance): it must exit
// cleanly having recorded its attempts in flight and given back every
// recipient it had claimed (no claim of A1 left in the store, with a lease
// of ten minutes that cannot have run out), and A2 delivers the rest.
func TestClusterDrainOnce(t *testing.T) {
	const messages = 2000
	// A lease far longer than the test: A1's claims can only pass to A2
	// by A1 giving them back.
	c := newClusterPair(t, "10m", 1)
	url, tmp, a1, a2 := c.url, c.tmp, c.a1, c.a2
	sink := newIDSink(t)
	for _, a := range []*crashInstance{a1, a2} {
		// No DNS is needed: the messages are sealed already.
		a.writeConfigTo(t, fmt.Sprintf("127.0.0.1:%d", c.extra[0]), map[string]string{"clinic.example": sink.addr})
	}
	a1.admin(t, "domain", "add", "hospital.example")

	ctx := context.Background()
	st, err := store.OpenExistingAt(ctx, store.Location{URL: url, MasterKeyFile: filepath.Join(tmp, "master.key")})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ids := make([]string, messages)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < messages; i += 4 {
				ids[i] = fmt.Sprintf("drain-%d@hospital.example", i)
				data := fmt.Sprintf("From: alice@hospital.example\r\nTo: bob@clinic.example\r\nMessage-ID: <%s>\r\n"+
					"Subject: drain %d\r\n\r\nmessage %d\r\n", ids[i], i, i)
				if _, err := st.Enqueue(ctx, store.QueuedMessage{MessageID: "<" + ids[i] + ">", MailFrom: "alice@hospital.example",
					Origin: "cluster test", Data: []byte(data), Recipients: []store.QueuedRecipient{{Address: "bob@clinic.example"}}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	st.Close()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	enqueued := time.Since(start)

	// Both nodes start at once and drain the queue together.
	a1.launch(t)
	a2.launch(t)
	a1.waitReady(t)
	a2.waitReady(t)
	drainStart := time.Now()
	for deadline := time.Now().Add(90 * time.Second); sink.distinct() < messages/4; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s the sink has %d of %d messages\n%s\n%s", sink.distinct(), messages, a1.logTail(), a2.logTail())
		}
	}
	claims := nodeClaims(t, url)
	held := claims(store.DefaultNode(a1.dir))
	a1.stop(t) // drained: SIGTERM, a clean exit
	atDrain := sink.distinct()
	if left := claims(store.DefaultNode(a1.dir)); left > 0 {
		t.Errorf("A1 stopped (SIGTERM) still holding %d claims: A2 would wait for its lease", left)
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if sink.distinct() == messages && a2.pending(t) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s the sink has %d of %d messages; queue: %v\n%s\n%s",
				sink.distinct(), messages, a2.queueStates(t), a1.logTail(), a2.logTail())
		}
	}
	drained := time.Since(drainStart)
	states := a2.queueStates(t)
	a2.stop(t)

	got, byNode := sink.counts()
	var dupCopies int
	for _, id := range ids {
		switch n := got[id]; {
		case n == 0:
			t.Errorf("%s never reached the partner", id)
		case n > 1:
			dupCopies += n - 1
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if len(got) != messages {
		t.Errorf("the partner got %d distinct messages, want %d", len(got), messages)
	}
	if states[string(store.StateDelivered)] != messages {
		t.Errorf("queue states %v, want %d delivered", states, messages)
	}
	for _, a := range []*crashInstance{a1, a2} {
		if byNode[a.host] == 0 {
			t.Errorf("%s delivered nothing: the queue was not drained by two nodes (%v)", a.name, byNode)
		}
	}
	t.Logf("%d messages enqueued in %s, delivered by two nodes in %s: %v (A1 drained with SIGTERM holding %d claims, after %d had arrived); %d duplicate copies",
		messages, enqueued.Round(time.Millisecond), drained.Round(time.Millisecond), byNode, held, atDrain, dupCopies)
}

// TestClusterFirstNode: the first admin command of a new node on a
// PostgreSQL store, through a config that names only [store] url, makes
// the store, the data directory (0700) and the master key in it (0600),
// and a second node's config with its own data directory but without a
// copy of that key is told to copy it.
func TestClusterFirstNode(t *testing.T) {
	url := pgtest.URL(t)
	tmp := t.TempDir()
	write := func(name, data string) string {
		f := filepath.Join(tmp, name+".toml")
		cfg := fmt.Sprintf("data = %q\n[store]\nurl = %q\n", data, url)
		if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	data := filepath.Join(tmp, "node1", "data")
	if code, _, stderr := runCLI(t, nil, "domain", "add", "hospital.example", "--config", write("node1", data)); code != 0 {
		t.Fatalf("domain add on a new PostgreSQL store: exit %d\n%s", code, stderr)
	}
	for path, want := range map[string]os.FileMode{data: 0o700 | os.ModeDir, filepath.Join(data, store.MasterKeyFile): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v, %v; want mode %v", path, fi, err, want)
		}
	}
	code, _, stderr := runCLI(t, nil, "domain", "list", "--config", write("node2", filepath.Join(tmp, "node2")))
	if code == 0 || !strings.Contains(stderr, "copy") {
		t.Errorf("a node without the master key: exit %d, %q; want an error telling to copy the key", code, stderr)
	}
}

// clusterBinaries caches the hisp binary built for the cluster tests.
var clusterBinaries struct {
	once sync.Once
	path string
	err  error
}

// removeClusterBinary removes the binary clusterBinary built (TestMain).
func removeClusterBinary() {
	if clusterBinaries.path != "" {
		os.RemoveAll(filepath.Dir(clusterBinaries.path))
	}
}

// clusterBinary builds hisp once for this test binary.
func clusterBinary(t *testing.T) string {
	t.Helper()
	clusterBinaries.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			clusterBinaries.err = err
			return
		}
		dir, err := os.MkdirTemp("", "hisp-cluster-bin-")
		if err != nil {
			clusterBinaries.err = err
			return
		}
		clusterBinaries.path = filepath.Join(dir, "hisp")
		if b, err := exec.Command(goBin, "build", "-o", clusterBinaries.path, ".").CombinedOutput(); err != nil {
			clusterBinaries.err = fmt.Errorf("go build: %v\n%s", err, b)
		}
	})
	if clusterBinaries.err != nil {
		t.Fatal(clusterBinaries.err)
	}
	return clusterBinaries.path
}

// logErrors logs the error lines of an instance's runs (the connection
// errors of A1's kill and B's outage are expected; others are worth a look).
func logErrors(t *testing.T, in *crashInstance) {
	t.Helper()
	var errs []string
	for _, run := range append(in.logs, in.stderr.String()) {
		for _, l := range strings.Split(run, "\n") {
			if strings.Contains(l, "level=ERROR") {
				errs = append(errs, l)
			}
		}
	}
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Sprintf("... %d more", len(errs)-5))
	}
	if len(errs) > 0 {
		t.Logf("%s logged errors:\n%s", in.name, strings.Join(errs, "\n"))
	}
}

// msgID is a Message-ID without its angle brackets.
func msgID(id string) string { return strings.Trim(strings.TrimSpace(id), "<>") }

// sumLogged adds up the numbers a log line pattern captures.
func sumLogged(log, pattern string) int {
	n := 0
	for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// writeWithoutSMTP copies a config with its backbone listener turned off.
func writeWithoutSMTP(t *testing.T, from, to, smtpAddr string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), fmt.Sprintf("smtp = %q", smtpAddr), `smtp = ""`, 1)
	if err := os.WriteFile(to, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// blackHole takes TCP connections and never answers.
type blackHole struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newBlackHole(t *testing.T, addr string) *blackHole {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &blackHole{l: l, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(h.close)
	return h
}

// close stops listening and breaks every connection taken.
func (h *blackHole) close() {
	h.l.Close()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}

// imapMessageIDs logs in over IMAP and counts the messages of a mailbox
// by Message-ID (without angle brackets).
func imapMessageIDs(t *testing.T, addr, user, mailbox string) map[string]int {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatalf("imap %s: %v", addr, err)
	}
	defer c.Close()
	if err := c.Login(user, clusterPassword).Wait(); err != nil {
		t.Fatalf("imap %s: login %s: %v", addr, user, err)
	}
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("imap %s: select %s: %v", addr, mailbox, err)
	}
	out := map[string]int{}
	if sel.NumMessages == 0 {
		return out
	}
	var all imap.SeqSet
	all.AddRange(1, sel.NumMessages)
	msgs, err := c.Fetch(all, &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil {
		t.Fatalf("imap %s: fetch %s of %s: %v", addr, mailbox, user, err)
	}
	for _, m := range msgs {
		if m.Envelope == nil || m.Envelope.MessageID == "" {
			t.Errorf("imap %s: message %d of %s's %s has no Message-ID", addr, m.SeqNum, user, mailbox)
			continue
		}
		out[msgID(m.Envelope.MessageID)]++
	}
	c.Logout().Wait()
	return out
}

// imapWatch is an IMAP client in IDLE on a mailbox, told of new messages.
type imapWatch struct {
	t     *testing.T
	c     *imapclient.Client
	idle  *imapclient.IdleCommand
	seen  uint32        // messages in the mailbox when last looked at
	grown chan struct{} // a message came (EXISTS)
}

func newIMAPWatch(t *testing.T, addr, user, mailbox string) *imapWatch {
	t.Helper()
	w := &imapWatch{t: t, grown: make(chan struct{}, 1)}
	opts := &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case w.grown <- struct{}{}:
				default:
				}
			}
		},
	}}
	c, err := imapclient.DialInsecure(addr, opts)
	if err != nil {
		t.Fatalf("imap %s: %v", addr, err)
	}
	w.c = c
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, clusterPassword).Wait(); err != nil {
		t.Fatalf("imap %s: login %s: %v", addr, user, err)
	}
	sel, err := c.Select(mailbox, nil).Wait()
	if err != nil {
		t.Fatalf("imap %s: select %s: %v", addr, mailbox, err)
	}
	w.seen = sel.NumMessages
	w.startIdle()
	return w
}

func (w *imapWatch) startIdle() {
	var err error
	if w.idle, err = w.c.Idle(); err != nil {
		w.t.Fatalf("imap: idle: %v", err)
	}
}

// waitFor waits in IDLE until a message with Message-ID id is announced,
// looking at each new message when IDLE reports one, for at most d. It
// reports whether it came, and how many other new messages came first.
func (w *imapWatch) waitFor(id string, d time.Duration) (bool, int) {
	timeout := time.After(d)
	others := 0
	for {
		select {
		case <-w.grown:
		case <-timeout:
			return false, others
		}
		if err := w.idle.Close(); err != nil {
			w.t.Fatalf("imap: end idle: %v", err)
		}
		if err := w.idle.Wait(); err != nil {
			w.t.Fatalf("imap: idle: %v", err)
		}
		n := w.c.Mailbox().NumMessages
		if n > w.seen {
			var fresh imap.SeqSet
			fresh.AddRange(w.seen+1, n)
			msgs, err := w.c.Fetch(fresh, &imap.FetchOptions{Envelope: true}).Collect()
			if err != nil {
				w.t.Fatalf("imap: fetch new messages: %v", err)
			}
			w.seen = n
			for _, m := range msgs {
				if m.Envelope != nil && msgID(m.Envelope.MessageID) == id {
					return true, others
				}
				if others == 0 && m.Envelope != nil {
					w.t.Logf("IDLE at A2: first other new message: %q", m.Envelope.Subject)
				}
				others++
			}
		}
		w.startIdle()
	}
}

func (w *imapWatch) close() {
	if w.idle != nil {
		w.idle.Close()
		w.idle.Wait()
	}
	w.c.Logout().Wait()
	w.c.Close()
}

// idSink is an SMTP server that takes every message and counts them by
// Message-ID and by the client's EHLO name.
type idSink struct {
	addr   string
	mu     sync.Mutex
	ids    map[string]int
	byHelo map[string]int
}

func newIDSink(t *testing.T) *idSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &idSink{addr: l.Addr().String(), ids: map[string]int{}, byHelo: map[string]int{}}
	srv := gosmtp.NewServer(s)
	srv.Domain = "sink.clinic.example"
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.MaxMessageBytes = 1 << 20
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *idSink) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	return &idSinkSession{s: s, helo: c.Hostname()}, nil
}

func (s *idSink) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *idSink) counts() (map[string]int, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, by := map[string]int{}, map[string]int{}
	for k, v := range s.ids {
		ids[k] = v
	}
	for k, v := range s.byHelo {
		by[k] = v
	}
	return ids, by
}

type idSinkSession struct {
	s    *idSink
	helo string
}

func (ss *idSinkSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (ss *idSinkSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (ss *idSinkSession) Reset()                                 {}
func (ss *idSinkSession) Logout() error                          { return nil }

func (ss *idSinkSession) Data(r io.Reader) error {
	br := bufio.NewReader(r)
	h, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	id := msgID(h.Get("Message-ID"))
	if id == "" {
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "no Message-ID"}
	}
	ss.s.mu.Lock()
	ss.s.ids[id]++
	ss.s.byHelo[ss.helo]++
	ss.s.mu.Unlock()
	return nil
}

// TestClusterNodeNameHeld: two processes given one node name would take
// each other's queue claims as their own; the second is refused at start,
// saying why, and the name is free again once the first has stopped.
func TestClusterNodeNameHeld(t *testing.T) {
	c := newClusterPair(t, clusterLease, 0)
	a1, a2 := c.a1, c.a2
	for _, a := range []*crashInstance{a1, a2} {
		a.extra += "node = \"twin\"\n"
		a.writeConfigTo(t, "127.0.0.1:1", nil)
	}
	a1.admin(t, "domain", "add", "hospital.example")
	// On PostgreSQL the queue's listing has a column for the node that
	// holds each recipient being delivered.
	if out := a1.admin(t, "queue", "list"); !strings.Contains(out, "NODE") {
		t.Errorf("hisp queue list on PostgreSQL:\n%s", out)
	}
	a1.start(t)
	a2.launch(t)
	select {
	case <-a2.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("a second node named twin kept running\n%s", a2.logTail())
	}
	if a2.cmd.ProcessState.Success() || !strings.Contains(a2.stderr.String(), `node name in use by another running node: "twin"`) {
		t.Fatalf("a second node named twin: %v\n%s", a2.cmd.ProcessState, a2.stderr.String())
	}
	a1.stop(t)
	a2.start(t)
	a2.stop(t)
}

// nodeClaims returns a counter of the recipients a node holds claimed (being
// delivered or sealed) in the PostgreSQL store at url.
func nodeClaims(t *testing.T, url string) func(node string) int {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func(node string) int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM queue_recipients
			WHERE claimed_by = $1 AND state IN ('delivering', 'sealing')`, node).Scan(&n); err != nil {
			t.Fatalf("count claims: %v", err)
		}
		return n
	}
}
