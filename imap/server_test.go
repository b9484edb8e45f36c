package imap

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/testnet"
	"github.com/hisp-project/hisp/store"
)

func TestLoginNeedsTLS(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	rc := dialRaw(t, e.addr)
	caps := rc.ok("CAPABILITY")
	if !contains(caps, "STARTTLS") || !contains(caps, "LOGINDISABLED") || contains(caps, "AUTH=PLAIN") {
		t.Fatalf("capabilities before TLS: %q", caps)
	}
	if st := rc.no("LOGIN %s %s", quote(alice), quote(alicePW)); !strings.Contains(st, "PRIVACYREQUIRED") {
		t.Fatalf("LOGIN before STARTTLS: %s", st)
	}
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + alice + "\x00" + alicePW))
	if st := rc.no("AUTHENTICATE PLAIN %s", plain); !strings.Contains(st, "PRIVACYREQUIRED") {
		t.Fatalf("AUTHENTICATE before STARTTLS: %s", st)
	}
	rc.startTLS(&tls.Config{InsecureSkipVerify: true})
	caps = rc.ok("CAPABILITY")
	if contains(caps, "STARTTLS") || contains(caps, "LOGINDISABLED") || !contains(caps, "AUTH=PLAIN") {
		t.Fatalf("capabilities after TLS: %q", caps)
	}
	rc.ok("AUTHENTICATE PLAIN %s", plain)
	rc.ok("SELECT INBOX")

	// Implicit TLS on a second listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- e.srv.ServeTLS(ctx, ln) }()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	tcheck(t, err, "dial TLS")
	tlsConn := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	if g := tlsConn.readResponse(); !strings.HasPrefix(g, "* OK") || strings.Contains(g, "STARTTLS") {
		t.Fatalf("greeting on TLS: %q", g)
	}
	tlsConn.login(bob, bobPW)
	c.Close()
	cancel()
	tcheck(t, <-done, "ServeTLS")
}

func TestLoopbackRule(t *testing.T) {
	// Loopback set, listener on 127.0.0.1: login without TLS works.
	e := newTestEnv(t, envOptions{loopback: true})
	rc := dialRaw(t, e.addr)
	if caps := rc.ok("CAPABILITY"); !contains(caps, "AUTH=PLAIN") {
		t.Fatalf("capabilities on loopback: %q", caps)
	}
	rc.login(alice, alicePW)

	// Loopback set, but the listener is not on a loopback address.
	e = newTestEnv(t, envOptions{loopback: true, isLoopback: func(net.Addr) bool { return false }})
	rc = dialRaw(t, e.addr)
	if st := rc.no("LOGIN %s %s", quote(alice), quote(alicePW)); !strings.Contains(st, "PRIVACYREQUIRED") {
		t.Fatalf("LOGIN on a non-loopback listener: %s", st)
	}

	// Loopback not set: TLS even on 127.0.0.1 (the default).
	e = newTestEnv(t, envOptions{})
	rc = dialRaw(t, e.addr)
	rc.no("LOGIN %s %s", quote(alice), quote(alicePW))

	for addr, want := range map[string]bool{"127.0.0.1:1143": true, "[::1]:1143": true, "127.1.2.3:1": true,
		"10.0.0.1:1143": false, "0.0.0.0:1143": false, "[::]:1143": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		tcheck(t, err, "resolve")
		if got := isLoopbackAddr(a); got != want {
			t.Errorf("isLoopbackAddr(%s) = %v", addr, got)
		}
	}
	if isLoopbackAddr(&net.UnixAddr{Name: "/tmp/x", Net: "unix"}) {
		t.Error("unix socket counted as loopback")
	}
}

func TestBadLogins(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	rc := dialRaw(t, e.addr)
	rc.startTLS(&tls.Config{InsecureSkipVerify: true})
	for i, c := range [][2]string{
		{alice, "wrong password"},
		{alice, ""},
		{"ALICE@clinic.example", "wrong again"},
		{"admin", "admin password"}, // admin accounts are no IMAP users
		{"nobody@clinic.example", alicePW},
		{"alice", alicePW},
	} {
		if st := rc.no("LOGIN %s %s", quote(c[0]), quote(c[1])); !strings.Contains(st, "AUTHENTICATIONFAILED") {
			t.Fatalf("login %d: %s", i, st)
		}
	}
	// Each failure waited longer: the address and the IP count up. A
	// further guess at an address waits its earned delay before the check;
	// after loginlimit.IPGateFailures failures from the IP, a guess at any
	// name not known-good there waits the IP's turn too.
	b := loginlimit.DelayBase
	want := []time.Duration{
		b,        // alice, failure 1
		b, 2 * b, // alice again: the wait before the check, failure 2
		2 * b, 4 * b, // ALICE: before, failure 3
		8 * b,     // admin: a new name; the IP's fourth failure
		16 * b,    // nobody: the fifth
		b, 32 * b, // alice without a domain: the IP's gentler turn, then the sixth
	}
	if sleeps := e.recordedSleeps(); !slices.Equal(sleeps, want) {
		t.Fatalf("delays %v, want %v", sleeps, want)
	}
	// The right password waits its turn too (a guesser learns nothing
	// sooner: the address's turn, later than the IP's), then forgets the
	// failures of the address from this IP, which is now known-good for
	// it; not those of the address from elsewhere, nor those of the IP.
	rc.login(alice, alicePW)
	if sleeps := e.recordedSleeps(); len(sleeps) != len(want)+1 || sleeps[len(want)] != 4*b {
		t.Fatalf("good login: delays %v", sleeps)
	}
	if tk, err := e.srv.logins.Book(loginlimit.Attempt{Name: alice, IP: "127.0.0.1"}); err != nil || tk.Wait != 0 {
		t.Fatalf("the owner's IP after the good login: %v, %v", tk, err)
	}
	if d := e.srv.logins.Fail(alice, "192.0.2.1"); d != 8*loginlimit.DelayBase {
		t.Fatalf("a guess from elsewhere after the owner's login: delay %v, want the address's fourth failure's", d)
	}
	if d := e.srv.logins.Fail("other@clinic.example", "127.0.0.1"); d <= 32*loginlimit.DelayBase {
		t.Fatalf("failures of the IP forgotten: %v", d)
	}
}

// A hundred failed logins at once from one IP are refused, each held in
// its delay or its turn, or answered busy at once when too many wait, while
// a user who logged in from that IP before logs in without waiting.
func TestParallelFailedLogins(t *testing.T) {
	release := make(chan struct{})
	var blocked atomic.Int32
	e := newTestEnv(t, envOptions{loopback: true, sleep: func(ctx context.Context, d time.Duration) {
		blocked.Add(1)
		defer blocked.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
		}
	}})
	// The password check of the store costs a bcrypt comparison each; the
	// failing guesses skip it here to keep the test light on CPU. Alice's
	// login takes the real path.
	check := e.srv.checkPassword
	e.srv.checkPassword = func(ctx context.Context, username, password string) (string, error) {
		if username == alice {
			return check(ctx, username, password)
		}
		return "", store.ErrBadCredentials
	}
	e.loggedIn(alice, alicePW).cmd("LOGOUT") // 127.0.0.1 is now known-good for alice
	const n = 100
	var wg sync.WaitGroup
	var answered atomic.Int32
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A hundred names from one address.
			rc := dialRaw(t, e.addr)
			_, st := rc.cmd("LOGIN %s %s", quote(fmt.Sprintf("guess%d@clinic.example", i)), quote("not the password"))
			answered.Add(1)
			errs <- st
		}()
	}
	// Wait until every guess is answered or held.
	for answered.Load()+blocked.Load() < n {
		time.Sleep(10 * time.Millisecond)
	}
	rc := dialRaw(t, e.addr)
	rc.login(alice, alicePW)
	rc.ok("SELECT INBOX")
	close(release)
	wg.Wait()
	close(errs)
	failed, busy := 0, 0
	for st := range errs {
		switch {
		case strings.Contains(st, "AUTHENTICATIONFAILED"):
			failed++
		case strings.Contains(st, "Too many login attempts"):
			busy++
		default:
			t.Fatalf("failed login answered %q", st)
		}
	}
	if failed < loginlimit.IPGateFailures || busy == 0 {
		t.Fatalf("%d failed, %d busy", failed, busy)
	}
}

// User A cannot reach user B's mailboxes by any name.
func TestIsolation(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	msg, _ := directMessage(t, "For bob only")
	_, err := e.store.Deliver(e.ctx, bob, "", msg, nil, time.Time{})
	tcheck(t, err, "deliver")
	_, err = e.store.Deliver(e.ctx, bob, "Bob's Folder", msg, nil, time.Time{})
	tcheck(t, err, "deliver to folder")
	_, err = e.store.Deliver(e.ctx, bob, "bob", msg, nil, time.Time{})
	tcheck(t, err, "deliver to folder bob")

	a := dialRaw(t, e.addr)
	a.login(alice, alicePW)
	names := []string{
		"Bob's Folder", "bob", "BOB", "bob@clinic.example", "bob@clinic.example/INBOX", "../bob@clinic.example/INBOX",
		"/bob@clinic.example/INBOX", "INBOX/../../bob@clinic.example/INBOX", "~bob/INBOX", "#shared/bob", "%", "*",
		"Bob%", "&AGIAbwBi-", "&AEIAbwBi-'s Folder", "bob\x00", "Other Users/bob", "..", "../..",
	}
	for _, name := range names {
		for _, cmd := range []string{"SELECT %s", "EXAMINE %s", "STATUS %s (MESSAGES)", "DELETE %s", "SUBSCRIBE %s", `RENAME %s "mine"`} {
			if strings.Contains(name, "\x00") {
				continue
			}
			u, st := a.cmd(cmd, quote(name))
			if strings.HasPrefix(st, "OK") || contains(u, "EXISTS") {
				t.Fatalf("alice: %s: %s %q", fmt.Sprintf(cmd, quote(name)), st, u)
			}
		}
	}
	// LIST shows only alice's mailboxes, whatever the pattern.
	for _, pat := range []string{"*", "%", "bob*", "*bob*", "../*", "/*", "Bob's Folder", "%/%", "*/*"} {
		u := a.ok("LIST %s %s", quote(""), quote(pat))
		for _, l := range u {
			if !strings.HasSuffix(l, " INBOX") && !strings.HasSuffix(l, ` "Sent"`) {
				t.Fatalf("LIST %q: %q", pat, l)
			}
		}
	}
	u := a.ok("LIST %s %s", quote("bob@clinic.example"), quote("*"))
	if len(u) != 0 {
		t.Fatalf("LIST with reference: %q", u)
	}
	// Alice's own INBOX is empty: no FETCH reaches bob's message.
	u = a.ok("SELECT INBOX")
	if !contains(u, "* 0 EXISTS") {
		t.Fatalf("alice's INBOX: %q", u)
	}
	for _, cmd := range []string{"FETCH 1:* (BODY.PEEK[])", "UID FETCH 1:* (BODY.PEEK[])", "FETCH * (BODY.PEEK[])", "UID FETCH 1 BODY[]",
		"SEARCH ALL", "UID SEARCH BODY Discharge"} {
		u, st := a.cmd(cmd)
		if contains(u, "FETCH") || contains(u, "Discharge") || contains(u, "SEARCH 1") {
			t.Fatalf("alice: %s: %s %q", cmd, st, u)
		}
	}
	// COPY, MOVE and APPEND into bob's folder are refused.
	_, err = e.srv.Deliver(e.ctx, alice, "", msg, nil, time.Time{})
	tcheck(t, err, "deliver to alice")
	a.ok("NOOP")
	for _, name := range []string{"Bob's Folder", "../bob@clinic.example/INBOX", "bob@clinic.example/INBOX", "bob"} {
		if st := a.no("COPY 1 %s", quote(name)); !strings.Contains(st, "TRYCREATE") && !strings.Contains(st, "CANNOT") {
			t.Fatalf("COPY to %q: %s", name, st)
		}
		if st := a.no("MOVE 1 %s", quote(name)); !strings.Contains(st, "TRYCREATE") && !strings.Contains(st, "CANNOT") {
			t.Fatalf("MOVE to %q: %s", name, st)
		}
		a.no("APPEND %s {5+}\r\nHi!\r\n", quote(name))
	}
	// Alice may have a folder called "bob" of her own; it is hers.
	a.ok(`CREATE "bob"`)
	a.ok(`COPY 1 "bob"`)
	st, err := e.store.MailAccount(e.ctx, bob)
	tcheck(t, err, "bob's account")
	bobFolder, err := e.store.MailboxStatus(e.ctx, st.ID, "bob")
	tcheck(t, err, "bob's folder")
	if bobFolder.Messages != 1 {
		t.Fatalf("bob's folder has %d messages", bobFolder.Messages)
	}
}

// Two sessions on one mailbox agree on sequence numbers; flags, expunges
// and new mail of one reach the other.
func TestSessionsAgree(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	for i := range 5 {
		_, err := e.store.Deliver(e.ctx, alice, "", []byte(fmt.Sprintf("Subject: m%d\r\n\r\nbody %d\r\n", i+1, i+1)), nil, time.Time{})
		tcheck(t, err, "deliver")
	}
	a := dialRaw(t, e.addr)
	a.login(alice, alicePW)
	b := dialRaw(t, e.addr)
	b.login(alice, alicePW)
	a.ok("SELECT INBOX")
	if u := b.ok("SELECT INBOX"); !contains(u, "* 5 EXISTS") {
		t.Fatalf("select: %q", u)
	}
	a.ok(`STORE 2,4 +FLAGS.SILENT (\Deleted)`)
	a.ok(`STORE 1 +FLAGS (\Flagged)`)
	u := b.ok("NOOP")
	if !contains(u, `* 1 FETCH (UID 1 FLAGS (\Flagged))`) || !contains(u, `* 2 FETCH (UID 2 FLAGS (\Deleted))`) {
		t.Fatalf("b after a's STORE: %q", u)
	}
	u = a.ok("EXPUNGE")
	if !slices.Equal(u, []string{"* 4 EXPUNGE", "* 2 EXPUNGE"}) {
		t.Fatalf("a's EXPUNGE: %q", u)
	}
	// b has not been told yet: its sequence numbers are the old ones
	// until a command that may send EXPUNGE.
	u = b.ok("FETCH 5 (UID)")
	if !slices.Equal(u, []string{"* 5 FETCH (UID 5)"}) {
		t.Fatalf("b's FETCH before expunges: %q", u)
	}
	u = b.ok("NOOP")
	if !slices.Equal(u, []string{"* 4 EXPUNGE", "* 2 EXPUNGE"}) {
		t.Fatalf("b's NOOP: %q", u)
	}
	u = b.ok("FETCH 3 (UID)")
	if !slices.Equal(u, []string{"* 3 FETCH (UID 5)"}) {
		t.Fatalf("b's FETCH after expunges: %q", u)
	}
	// New mail from outside (the store, found by polling).
	_, err := e.store.Deliver(e.ctx, alice, "", []byte("Subject: m6\r\n\r\nbody 6\r\n"), nil, time.Time{})
	tcheck(t, err, "deliver")
	e.srv.Notify()
	u = a.ok("NOOP")
	if !contains(u, "* 4 EXISTS") {
		t.Fatalf("a after delivery: %q", u)
	}
	// b is told of the new message by its next command; only then does
	// SEARCH include it.
	u = b.ok("UID SEARCH ALL")
	if !slices.Equal(u, []string{"* SEARCH 1 3 5", "* 4 EXISTS"}) {
		t.Fatalf("b search before EXISTS: %q", u)
	}
	u = b.ok("UID SEARCH ALL")
	if !contains(u, "* SEARCH 1 3 5 6") {
		t.Fatalf("b search: %q", u)
	}
	// MOVE by b: both see the expunge once.
	a.ok("CREATE Done")
	u = b.ok("MOVE 1 Done")
	if !contains(u, "COPYUID") || !contains(u, "* 1 EXPUNGE") || len(u) != 2 {
		t.Fatalf("b's MOVE: %q", u)
	}
	u = a.ok("NOOP")
	if !slices.Equal(u, []string{"* 1 EXPUNGE"}) {
		t.Fatalf("a after b's MOVE: %q", u)
	}
	// EXAMINE is read-only.
	c := dialRaw(t, e.addr)
	c.login(alice, alicePW)
	c.ok("EXAMINE INBOX")
	c.no(`STORE 1 +FLAGS (\Seen)`)
	c.no("EXPUNGE")
	c.no("MOVE 1 Done")
	c.ok("FETCH 1 BODY[]")
	if u := c.ok("FETCH 1 FLAGS"); contains(u, `\Seen`) {
		t.Fatalf("EXAMINE set \\Seen: %q", u)
	}
}

func TestCommands(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	msg, _ := directMessage(t, "Commands")
	_, err := e.store.Deliver(e.ctx, alice, "", msg, []string{"$Important"}, time.Date(2024, 5, 7, 10, 0, 0, 0, time.UTC))
	tcheck(t, err, "deliver")
	a := dialRaw(t, e.addr)
	a.login(alice, alicePW)

	// Mailboxes.
	a.ok(`CREATE "Clinical/Referrals"`)
	a.ok(`CREATE "Ärzte"`) // UTF-7 on the wire
	u := a.ok(`LIST "" "*"`)
	want := []string{`* LIST (\HasChildren) "/" "Clinical"`, `* LIST (\HasNoChildren) "/" "Clinical/Referrals"`,
		`* LIST (\HasNoChildren) "/" INBOX`, `* LIST (\HasNoChildren \Sent) "/" "Sent"`, `* LIST (\HasNoChildren) "/" "&AMQ-rzte"`}
	if !slices.Equal(u, want) {
		t.Fatalf("LIST:\n%q\nwant\n%q", u, want)
	}
	if u := a.ok(`LIST "" "inbox"`); len(u) != 1 || !strings.HasSuffix(u[0], " INBOX") {
		t.Fatalf("LIST inbox: %q", u)
	}
	if u := a.ok("%s", `LIST "Clinical" "%"`); len(u) != 1 || !strings.HasSuffix(u[0], `"Clinical/Referrals"`) {
		t.Fatalf("LIST with reference: %q", u)
	}
	if u := a.ok(`LIST "" ""`); !slices.Equal(u, []string{`* LIST (\Noselect) "/" ""`}) {
		t.Fatalf("LIST delimiter: %q", u)
	}
	a.no(`CREATE "Clinical"`)
	a.no(`CREATE "INBOX"`)
	a.no("%s", `CREATE "a%b"`)
	a.ok(`CREATE "Bin" (USE (\Trash))`)
	if u := a.ok(`LIST (SPECIAL-USE) "" "*"`); len(u) != 2 {
		t.Fatalf("LIST SPECIAL-USE: %q", u)
	}
	a.ok(`RENAME "Clinical" "Archive/Clinical"`)
	if u := a.ok(`LIST "" "Archive/*"`); len(u) != 2 {
		t.Fatalf("after RENAME: %q", u)
	}
	a.no(`DELETE "Archive"`)
	a.ok(`DELETE "Archive/Clinical/Referrals"`)
	a.ok(`UNSUBSCRIBE "Sent"`)
	if u := a.ok(`LSUB "" "*"`); contains(u, "Sent") || !contains(u, "INBOX") {
		t.Fatalf("LSUB: %q", u)
	}
	a.ok(`SUBSCRIBE "Sent"`)
	u = a.ok(`STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT APPENDLIMIT)`)
	if !contains(u, "MESSAGES 1 UIDNEXT 2 UIDVALIDITY ") || !contains(u, fmt.Sprintf("UNSEEN 1 DELETED 0 SIZE %d APPENDLIMIT %d RECENT 0", len(msg), DefaultMaxMessageSize)) {
		t.Fatalf("STATUS: %q", u)
	}
	u = a.ok(`LIST "" "INBOX" RETURN (STATUS (MESSAGES))`)
	if !contains(u, "* STATUS INBOX (MESSAGES 1)") {
		t.Fatalf("LIST-STATUS: %q", u)
	}
	a.ok(`NAMESPACE`)

	// APPEND to Sent, and its APPENDUID.
	sent := "Subject: sent\r\n\r\nhello\r\n"
	_, st := a.cmd("APPEND Sent (\\Seen) {%d+}\r\n%s", len(sent), sent)
	if !regexp.MustCompile(`^OK \[APPENDUID \d+ 1\]`).MatchString(st) {
		t.Fatalf("APPEND: %s", st)
	}
	if st := a.no("APPEND Nowhere {%d+}\r\n%s", len(sent), sent); !strings.Contains(st, "TRYCREATE") {
		t.Fatalf("APPEND to a missing mailbox: %s", st)
	}

	// FETCH items.
	u, st = a.cmd("SELECT INBOX")
	if !contains(u, "* 1 EXISTS") || !contains(u, `$Important`) || !contains(u, "[UNSEEN 1]") || !strings.Contains(st, "READ-WRITE") {
		t.Fatalf("SELECT: %q %s", u, st)
	}
	u = a.ok("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
	if len(u) != 1 || !strings.Contains(u[0], `FLAGS ($Important)`) || !strings.Contains(u[0], `INTERNALDATE " 7-May-2024 10:00:00 +0000"`) ||
		!strings.Contains(u[0], fmt.Sprintf("RFC822.SIZE %d", len(msg))) || !strings.Contains(u[0], `"Commands"`) {
		t.Fatalf("FETCH: %q", u)
	}
	u = a.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[]<10.20> BODY.PEEK[2.MIME] BODYSTRUCTURE)")
	if !strings.Contains(u[0], "Subject: Commands\r\n\r\n") || !strings.Contains(u[0], "BODY[]<10> {20}\r\n"+string(msg[10:30])) ||
		!strings.Contains(strings.ToUpper(u[0]), `"APPLICATION" "XML"`) || !strings.Contains(u[0], "filename=\"ccda.xml\"") {
		t.Fatalf("FETCH sections: %q", u)
	}
	u = a.ok("FETCH 1 (BODY[TEXT]<0.11>)")
	if !strings.Contains(u[0], "BODY[TEXT]<0> {11}\r\n--b1\r\nConte") || !strings.Contains(u[0], `\Seen`) {
		t.Fatalf("FETCH TEXT: %q", u)
	}
	u = a.ok("UID FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
	if !strings.Contains(u[0], "<ClinicalDocument") {
		t.Fatalf("FETCH BINARY: %q", u)
	}

	// SEARCH.
	for q, want := range map[string]string{
		"SEARCH ALL": "* SEARCH 1", "SEARCH SEEN": "* SEARCH 1", "SEARCH UNSEEN": "* SEARCH",
		"SEARCH KEYWORD $Important": "* SEARCH 1", "SEARCH FROM hospital": "* SEARCH 1", "SEARCH BODY discharge": "* SEARCH 1",
		"SEARCH TEXT nothing-like-this": "* SEARCH", "SEARCH SINCE 1-May-2024 BEFORE 8-May-2024": "* SEARCH 1",
		"SEARCH SENTBEFORE 1-Jan-2024": "* SEARCH", "SEARCH LARGER 100 SMALLER 100000": "* SEARCH 1",
		"SEARCH OR DELETED FLAGGED": "* SEARCH", "SEARCH NOT DELETED": "* SEARCH 1", "UID SEARCH UID 1:*": "* SEARCH 1",
		"SEARCH 2:*": "* SEARCH 1",
		`SEARCH HEADER Message-ID "Commands@hospital"`: "* SEARCH 1",
		"SEARCH RETURN (COUNT) ALL":                    "* ESEARCH (TAG",
	} {
		if u := a.ok("%s", q); len(u) != 1 || !strings.HasPrefix(u[0], want) || (want == "* SEARCH" && u[0] != want) {
			t.Errorf("%s: %q, want %q", q, u, want)
		}
	}
	a.ok("SEARCH RETURN (SAVE) ALL")
	if u := a.ok("FETCH $ (UID)"); !slices.Equal(u, []string{"* 1 FETCH (UID 1)"}) {
		t.Fatalf("FETCH $: %q", u)
	}

	// COPY with COPYUID, UID EXPUNGE of some only.
	_, st = a.cmd("UID COPY 1 Sent")
	if !regexp.MustCompile(`^OK \[COPYUID \d+ 1 2\]`).MatchString(st) {
		t.Fatalf("COPY: %s", st)
	}
	a.ok("SELECT Sent")
	a.ok(`STORE 1:2 +FLAGS.SILENT (\Deleted)`)
	if u := a.ok("UID EXPUNGE 2"); !slices.Equal(u, []string{"* 2 EXPUNGE"}) {
		t.Fatalf("UID EXPUNGE: %q", u)
	}
	if u := a.ok("CLOSE"); len(u) != 0 {
		t.Fatalf("CLOSE: %q", u)
	}
	if u := a.ok("STATUS Sent (MESSAGES)"); !contains(u, "MESSAGES 0") {
		t.Fatalf("after CLOSE: %q", u)
	}
	a.ok("LOGOUT")
}

// Removing an address closes its mailboxes for open sessions, and a new
// account of the same name sees nothing of the old mail.
func TestRemovedAddress(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	msg, _ := directMessage(t, "Old mail")
	_, err := e.store.Deliver(e.ctx, alice, "", msg, nil, time.Time{})
	tcheck(t, err, "deliver")
	old := dialRaw(t, e.addr)
	old.login(alice, alicePW)
	old.ok("SELECT INBOX")

	tcheck(t, e.store.RemoveAddress(e.ctx, alice), "remove address")
	e.srv.Notify()
	if u := old.ok("NOOP"); !contains(u, "* 1 EXPUNGE") {
		t.Fatalf("old session after removal: %q", u)
	}
	if u, _ := old.cmd("FETCH 1:* BODY[]"); len(u) != 0 {
		t.Fatalf("old session fetches %q", u)
	}
	_, err = e.store.AddAddress(e.ctx, alice)
	tcheck(t, err, "add address again")
	tcheck(t, e.store.SetPassword(e.ctx, alice, "new password!"), "password")
	_, err = e.store.Deliver(e.ctx, alice, "", []byte("Subject: new\r\n\r\nnew\r\n"), nil, time.Time{})
	tcheck(t, err, "deliver new")

	// The old session belongs to the old account: it reaches nothing.
	old.no("SELECT INBOX")
	if u := old.ok(`LIST "" "*"`); len(u) != 0 {
		t.Fatalf("old session lists %q", u)
	}
	old.no(`CREATE "x"`)
	// The old password is gone; the new account sees only new mail.
	dialRaw(t, e.addr).no("LOGIN %s %s", quote(alice), quote(alicePW))
	nu := dialRaw(t, e.addr)
	nu.login(alice, "new password!")
	nu.ok("SELECT INBOX")
	if u := nu.ok("FETCH 1:* (BODY.PEEK[])"); len(u) != 1 || strings.Contains(u[0], "Old mail") {
		t.Fatalf("new account sees %q", u)
	}
}

// IDLE learns of mail filed directly in the store by polling.
func TestIdlePolling(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	a := dialRaw(t, e.addr)
	a.login(alice, alicePW)
	a.ok("SELECT INBOX")
	fmt.Fprintf(a.c, "i1 IDLE\r\n")
	if l := a.readResponse(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	_, err := e.store.Deliver(e.ctx, alice, "", []byte("Subject: polled\r\n\r\nx\r\n"), nil, time.Time{})
	tcheck(t, err, "deliver")
	if l := a.readResponse(); l != "* 1 EXISTS" {
		t.Fatalf("in IDLE: %q", l)
	}
	fmt.Fprintf(a.c, "DONE\r\n")
	if l := a.readResponse(); !strings.HasPrefix(l, "i1 OK") {
		t.Fatalf("after DONE: %q", l)
	}
}

func TestQuotaOverIMAP(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	tcheck(t, e.store.SetQuota(e.ctx, alice, 100), "quota")
	a := dialRaw(t, e.addr)
	a.login(alice, alicePW)
	big := strings.Repeat("x", 200)
	if st := a.no("APPEND INBOX {%d+}\r\n%s", len(big), big); !strings.Contains(st, "OVERQUOTA") {
		t.Fatalf("APPEND over quota: %s", st)
	}
	if _, err := e.srv.Deliver(e.ctx, alice, "", []byte(big), nil, time.Time{}); err == nil {
		t.Fatal("delivery over quota")
	}
}

// TestAbandonedLogins: a hundred clients waiting out failed logins for a
// made-up name from one IP close their connections; the server lets go of
// their sockets and goroutines within seconds, and the owner of an address,
// known-good at that IP, logs in from it at once.
func TestAbandonedLogins(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true, realTime: true})
	check := e.srv.checkPassword
	e.srv.checkPassword = func(ctx context.Context, username, password string) (string, error) {
		if username == alice {
			return check(ctx, username, password)
		}
		return "", store.ErrBadCredentials // no bcrypt per guess: light on CPU
	}
	e.loggedIn(alice, alicePW).cmd("LOGOUT")
	// The made-up name has failed from here before: its guesses now wait
	// the longest delay for their turns.
	for range 10 {
		e.srv.logins.Fail("guess@clinic.example", "127.0.0.1")
	}
	base := testnet.Held()
	const n = 100
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", e.addr)
		tcheck(t, err, "dial")
		conns[i] = c
		fmt.Fprintf(c, "a LOGIN guess@clinic.example %q\r\n", fmt.Sprintf("guess %d", i))
	}
	// Every guess is now checked and held in its delay, waiting its turn,
	// or answered busy; the clients leave without waiting for answers.
	time.Sleep(500 * time.Millisecond)
	for _, c := range conns {
		c.Close()
	}
	after := testnet.WaitReleased(t, base, 2, 5*time.Second)
	t.Logf("before %+v, after the clients left %+v", base, after)
	start := time.Now()
	rc := dialRaw(t, e.addr)
	rc.login(alice, alicePW)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the owner's login took %v", d)
	}
}

// TestGuessesFromManyIPs: guesses at one address from many client IPs take
// turns at the address's gate, each after the delay its failures earned,
// while its owner, known-good at their own IP, logs in without waiting.
func TestGuessesFromManyIPs(t *testing.T) {
	e := newTestEnv(t, envOptions{loopback: true})
	owner := dialRawFrom(t, "127.0.0.1", e.addr)
	owner.login(alice, alicePW) // 127.0.0.1 is now known-good for alice
	owner.cmd("LOGOUT")
	for i := 2; i <= 4; i++ { // three guessers, one failure each
		rc := dialRawFrom(t, fmt.Sprintf("127.0.0.%d", i), e.addr)
		if st := rc.no("LOGIN %s %s", quote(alice), quote("guess")); !strings.Contains(st, "AUTHENTICATIONFAILED") {
			t.Fatalf("guess from 127.0.0.%d: %s", i, st)
		}
	}
	before := len(e.recordedSleeps())
	// A fourth IP, never seen: it waits the name's turn (3 failures: 4
	// delays) before its password is checked.
	rc := dialRawFrom(t, "127.0.0.5", e.addr)
	rc.no("LOGIN %s %s", quote(alice), quote("another guess"))
	sleeps := e.recordedSleeps()[before:]
	if len(sleeps) != 2 || sleeps[0] != 4*loginlimit.DelayBase {
		t.Fatalf("a guess from a new IP: delays %v, want the name's turn (%v) then its failure delay", sleeps, 4*loginlimit.DelayBase)
	}
	// The owner from their known-good IP: no wait at all.
	before = len(e.recordedSleeps())
	dialRawFrom(t, "127.0.0.1", e.addr).login(alice, alicePW)
	if sleeps := e.recordedSleeps()[before:]; len(sleeps) != 0 {
		t.Fatalf("the owner waited %v", sleeps)
	}
}
