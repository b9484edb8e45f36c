package imap

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/store"
)

// fuzzSeeds are commands of every kind, the starting points of FuzzServer
// (the committed corpus in testdata/fuzz/FuzzServer holds more).
var fuzzSeeds = []string{
	"CAPABILITY", "NOOP", "CHECK", "LOGOUT", "STARTTLS", "ENABLE IMAP4rev2", "NAMESPACE",
	`LOGIN alice@clinic.example secret`, `LOGIN "bob@clinic.example" "wrong"`,
	"AUTHENTICATE PLAIN AGFsaWNlQGNsaW5pYy5leGFtcGxlAHNlY3JldA==", "AUTHENTICATE PLAIN\r\n*",
	"SELECT INBOX", "EXAMINE Sent", "SELECT &AMQ-rzte", "CREATE a/b/c", `CREATE "x" (USE (\Trash))`, "DELETE a/b/c",
	"RENAME INBOX Old", "RENAME a z/a", "SUBSCRIBE INBOX", "UNSUBSCRIBE Sent",
	`LIST "" *`, `LIST "" %`, `LIST (SUBSCRIBED RECURSIVEMATCH) "" ("*" "INBOX") RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES SIZE))`,
	`LSUB "" *`, "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT APPENDLIMIT)",
	"APPEND INBOX (\\Seen kw) {21+}\r\nSubject: x\r\n\r\nhello\r\n", "APPEND Sent {0+}\r\n", "APPEND INBOX UTF8 (~{5+}\r\nhello)",
	"IDLE\r\nDONE", "CLOSE", "UNSELECT", "EXPUNGE", "UID EXPUNGE 1:*",
	"SEARCH ALL", "SEARCH CHARSET UTF-8 TEXT é", "SEARCH RETURN (MIN MAX COUNT SAVE) OR SEEN NOT DELETED",
	"UID SEARCH UID 1:* BODY x HEADER Subject a SENTSINCE 1-Jan-2000 LARGER 1 SMALLER 99999", "SEARCH $", "SEARCH 2:* 1,3",
	"FETCH 1:* (FLAGS BODY.PEEK[] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE)", "FETCH 1 FULL", "FETCH * ALL",
	"UID FETCH * (BINARY[1] BINARY.SIZE[1] BODY[1.MIME] BODY[HEADER.FIELDS (Subject)]<0.10> BODY[2.TEXT])",
	"FETCH $ (UID)", "FETCH 4294967295 BODY[]", "FETCH 1 BODY[1.2.3.4.5]<4294967295.1>",
	"STORE 1 +FLAGS (\\Deleted kw)", "UID STORE 1:* -FLAGS.SILENT (\\Seen)", "STORE * FLAGS ()",
	"COPY 1:* Sent", "UID MOVE 1 Sent", "MOVE * INBOX", "COPY 1 Nowhere",
	// Malformed arguments (BAD, malformed.go).
	"SEARCH 1:0", "SEARCH BEFORE 32-Jan-2020", "SEARCH MODSEQ x", "FETCH 1,,2 FLAGS", "STORE 0 +FLAGS (x)",
	"UID EXPUNGE 0", `APPEND INBOX "bad date" {3+}` + "\r\nabc",
}

// pipeListener hands out connections given to it.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// notifyConn closes done when the server closes the connection, which it
// does after logging any panic of the session.
type notifyConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// fuzzServer is a server on a store with messages, serving pipes; logins
// take the password "secret" without bcrypt.
type fuzzServer struct {
	ln    *pipeListener
	store *store.Store
	msg   []byte

	mu     sync.Mutex
	panics []string
}

func newFuzzServer(f *testing.F) *fuzzServer {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, f.TempDir())
	tcheck(f, err, "open store")
	_, err = st.AddDomain(ctx, "clinic.example")
	tcheck(f, err, "add domain")
	_, err = st.AddAddress(ctx, alice)
	tcheck(f, err, "add address")
	msg, _ := directMessage(f, "fuzz")
	fs := &fuzzServer{ln: &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}, store: st, msg: msg}
	tcheck(f, fs.fill(ctx), "fill mailboxes")
	srv, err := New(Options{Store: st, TLSConfig: testTLSConfig(f), Loopback: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	tcheck(f, err, "new server")
	srv.isLoopback = func(net.Addr) bool { return true }
	srv.sleep = func(context.Context, time.Duration) {}
	srv.checkPassword = func(ctx context.Context, username, password string) (string, error) {
		if password != "secret" {
			return "", store.ErrBadCredentials
		}
		a, _, err := store.NormalizeAddress(username)
		if err != nil {
			return "", store.ErrBadCredentials
		}
		return a, nil
	}
	srv.debugLog = func(format string, args ...any) {
		if msg := fmt.Sprintf(format, args...); strings.Contains(msg, "panic") {
			fs.mu.Lock()
			fs.panics = append(fs.panics, msg)
			fs.mu.Unlock()
		}
	}
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx, fs.ln)
		close(done)
	}()
	f.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	return fs
}

// fill delivers the messages the fuzzed commands work on.
func (fs *fuzzServer) fill(ctx context.Context) error {
	for _, m := range [][]byte{fs.msg, []byte("Subject: plain\r\n\r\nplain text\r\n"), []byte("no header at all")} {
		if _, err := fs.store.Deliver(ctx, alice, "", m, []string{"kw"}, time.Time{}); err != nil {
			return err
		}
	}
	_, err := fs.store.Deliver(ctx, alice, "Ärzte", fs.msg, nil, time.Time{})
	return err
}

// reset starts the account over when commands made it grow (COPY 1:*
// doubles a mailbox), so every input runs on a small mailbox.
func (fs *fuzzServer) reset(t *testing.T) {
	ctx := context.Background()
	a, err := fs.store.MailAccount(ctx, alice)
	tcheck(t, err, "mail account")
	boxes, err := fs.store.Mailboxes(ctx, a.ID)
	tcheck(t, err, "mailboxes")
	if a.Used < 64<<10 && len(boxes) < 20 {
		return
	}
	tcheck(t, fs.store.RemoveAddress(ctx, alice), "remove address")
	_, err = fs.store.AddAddress(ctx, alice)
	tcheck(t, err, "add address")
	tcheck(t, fs.fill(ctx), "fill mailboxes")
}

// session runs one connection: the preamble, the command, LOGOUT.
func (fs *fuzzServer) session(t *testing.T, preamble []string, command string) {
	server, client := net.Pipe()
	nc := &notifyConn{Conn: server, done: make(chan struct{})}
	fs.ln.conns <- nc
	client.SetDeadline(time.Now().Add(10 * time.Second))
	var out strings.Builder
	read := make(chan struct{})
	go func() { io.Copy(&out, client); close(read) }()
	var b strings.Builder
	for i, p := range preamble {
		fmt.Fprintf(&b, "p%d %s\r\n", i, p)
	}
	fmt.Fprintf(&b, "f1 %s\r\nf2 LOGOUT\r\n", command)
	io.WriteString(client, b.String())
	// Most commands end with the LOGOUT; those that wait for more (a
	// literal, a SASL response) end when the client goes.
	select {
	case <-nc.done:
	case <-time.After(200 * time.Millisecond):
	}
	client.Close()
	select {
	case <-nc.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("server did not end the connection for %q", command)
	}
	<-read
	// Whatever the client sends, the server has no fault to report: a
	// malformed command is BAD, a refused one NO (malformed.go).
	if strings.Contains(out.String(), "[SERVERBUG]") {
		t.Fatalf("command %q after %q: server bug reported:\n%s", command, preamble, out.String())
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.panics) > 0 {
		t.Fatalf("command %q after %q: %s", command, preamble, fs.panics[0])
	}
}

// FuzzServer feeds each input as a command in every connection state: not
// authenticated, authenticated, selected (read-write and read-only), and
// after IMAP4rev2 was enabled. The server must not panic, and must end
// every connection.
func FuzzServer(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	fs := newFuzzServer(f)
	login := "LOGIN alice@clinic.example secret"
	states := [][]string{
		nil,
		{login},
		{login, "SELECT INBOX"},
		{login, "EXAMINE INBOX"},
		{login, "ENABLE IMAP4rev2", "SELECT INBOX"},
	}
	f.Fuzz(func(t *testing.T, command string) {
		if strings.ContainsAny(command, "\r\n") && len(command) > 4096 {
			return
		}
		for _, p := range states {
			fs.session(t, p, command)
			fs.reset(t)
		}
	})
}
