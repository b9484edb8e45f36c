package imap

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The real clients: Python's imaplib and curl.

const pythonSession = `
import email, imaplib, re, ssl, sys
host, port, user, pw, ccda_path, raw_out = sys.argv[1:7]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

def ok(res, what):
    typ, data = res
    if typ != 'OK':
        sys.exit('%s: %s %r' % (what, typ, data))
    return data

M = imaplib.IMAP4(host, int(port))
ok(M.starttls(ssl_context=ctx), 'starttls')
ok(M.login(user, pw), 'login')
boxes = [b.decode() for b in ok(M.list(), 'list')]
assert any(b.endswith(' INBOX') for b in boxes), boxes
assert any(b.endswith(('Sent', 'Sent"')) and '\\Sent' in b for b in boxes), boxes
n = ok(M.select('INBOX'), 'select')
assert int(n[0]) == 2, n

# The delivered message, byte for byte, and its C-CDA attachment.
data = ok(M.uid('FETCH', '1', '(FLAGS BODY.PEEK[])'), 'fetch')
raw = data[0][1]
assert b'\\Seen' not in data[0][0], data[0][0]
open(raw_out, 'wb').write(raw)
msg = email.message_from_bytes(raw)
ccda = [p.get_payload(decode=True) for p in msg.walk() if p.get_filename() == 'ccda.xml']
assert ccda == [open(ccda_path, 'rb').read()], 'C-CDA attachment differs'

# Envelope and structure, partial fetch.
data = ok(M.fetch('1', '(ENVELOPE BODYSTRUCTURE RFC822.SIZE)'), 'fetch envelope')
assert b'Direct message one' in data[0] and b'"MIXED"' in data[0].upper(), data
data = ok(M.fetch('1', '(BODY.PEEK[]<0.4>)'), 'partial')
assert data[0][1] == b'From', data

# \Seen, search.
ok(M.uid('STORE', '1', '+FLAGS', '(\\Seen)'), 'store')
data = ok(M.uid('FETCH', '1', '(FLAGS)'), 'flags')
assert b'\\Seen' in data[0], data
assert ok(M.search(None, 'UNSEEN'), 'search')[0] == b'2'
assert ok(M.uid('SEARCH', 'SUBJECT', '"message two"'), 'search subject')[0] == b'2'

# Move message 1 to a folder; copy message 2 there, delete and expunge it.
ok(M.create('Clinical'), 'create')
ok(M.uid('MOVE', '1', 'Clinical'), 'move')
ok(M.uid('COPY', '2', 'Clinical'), 'copy')
ok(M.uid('STORE', '2', '+FLAGS', '(\\Deleted)'), 'delete')
data = ok(M.expunge(), 'expunge')
# imaplib collects the EXPUNGE of the MOVE (seq 1) and of EXPUNGE (the
# second message, seq 1 since the move).
assert data == [b'1', b'1'], data
assert b'MESSAGES 0' in ok(M.status('INBOX', '(MESSAGES)'), 'status')[0]
n = ok(M.select('Clinical'), 'select Clinical')
assert int(n[0]) == 2, n
data = ok(M.fetch('1:*', '(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])'), 'fetch moved')
assert b'Direct message one' in data[0][1] and b'\\Seen' in data[0][0], data
M.logout()
print('OK')
`

const pythonIdle = `
import imaplib, re, ssl, sys
host, port, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4(host, int(port))
M.starttls(ssl_context=ctx)
M.login(user, pw)
typ, n = M.select('INBOX')
tag = M._new_tag()
M.send(tag + b' IDLE\r\n')
line = M.readline()
assert line.startswith(b'+'), line
print('IDLING', n[0].decode(), flush=True)
while True:
    line = M.readline()
    if not line:
        sys.exit('connection closed')
    m = re.match(rb'\* (\d+) EXISTS', line)
    if m:
        print('EXISTS', m.group(1).decode(), flush=True)
        break
M.send(b'DONE\r\n')
while True:
    line = M.readline()
    if line.startswith(tag):
        assert b' OK' in line, line
        break
M.logout()
print('OK')
`

func needTool(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (make test-deps installs it)", name)
	}
	return p
}

func TestPythonIMAPLib(t *testing.T) {
	python := needTool(t, "python3")
	e := newTestEnv(t, envOptions{})
	msg1, _ := directMessage(t, "Direct message one")
	msg2, _ := directMessage(t, "Direct message two")
	for _, m := range [][]byte{msg1, msg2} {
		_, err := e.srv.Deliver(e.ctx, alice, "", m, nil, time.Time{})
		tcheck(t, err, "deliver")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "session.py")
	tcheck(t, os.WriteFile(script, []byte(pythonSession), 0o600), "write script")
	ccdaPath, err := filepath.Abs("testdata/ccda.xml")
	tcheck(t, err, "abs")
	rawOut := filepath.Join(dir, "raw.eml")

	// The IDLE client waits in INBOX while the first client works.
	idleScript := filepath.Join(dir, "idle.py")
	tcheck(t, os.WriteFile(idleScript, []byte(pythonIdle), 0o600), "write script")
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	idle := exec.CommandContext(ctx, python, idleScript, "127.0.0.1", e.port(), bob, bobPW)
	idleOut, err := idle.StdoutPipe()
	tcheck(t, err, "pipe")
	var idleErr bytes.Buffer
	idle.Stderr = &idleErr
	tcheck(t, idle.Start(), "start idle client")
	idleLines := bufio.NewScanner(idleOut)
	expect := func(prefix string) string {
		t.Helper()
		if !idleLines.Scan() {
			idle.Wait()
			t.Fatalf("idle client ended before %q: %s", prefix, idleErr.String())
		}
		if l := idleLines.Text(); strings.HasPrefix(l, prefix) {
			return l
		}
		t.Fatalf("idle client: %q, want %q", idleLines.Text(), prefix)
		return ""
	}

	out, err := exec.CommandContext(ctx, python, script, "127.0.0.1", e.port(), alice, alicePW, ccdaPath, rawOut).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("imaplib session: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(rawOut)
	tcheck(t, err, "read fetched message")
	if !bytes.Equal(raw, msg1) {
		t.Fatalf("fetched message differs from the delivered one:\n%q\n%q", raw, msg1)
	}

	// IDLE: bob's client waits; a delivery reaches it as EXISTS.
	if l := expect("IDLING"); l != "IDLING 0" {
		t.Fatalf("idle client saw %q", l)
	}
	_, err = e.srv.Deliver(e.ctx, bob, "", msg1, nil, time.Time{})
	tcheck(t, err, "deliver to bob")
	if l := expect("EXISTS"); l != "EXISTS 1" {
		t.Fatalf("idle client: %q", l)
	}
	expect("OK")
	if err := idle.Wait(); err != nil {
		t.Fatalf("idle client: %v: %s", err, idleErr.String())
	}
}

func TestCurl(t *testing.T) {
	curl := needTool(t, "curl")
	e := newTestEnv(t, envOptions{})
	msg, _ := directMessage(t, "Direct message for curl")
	_, err := e.store.Deliver(e.ctx, alice, "", msg, nil, time.Time{})
	tcheck(t, err, "deliver")
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	url := "imap://127.0.0.1:" + e.port() + "/INBOX;UID=1"
	cmd := exec.CommandContext(ctx, curl, "-sS", "-k", "--ssl-reqd", url, "-u", alice+":"+alicePW)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, stderr.String())
	}
	if !bytes.Equal(out, msg) {
		t.Fatalf("curl fetched %q, want %q", out, msg)
	}
	// A wrong password fails.
	cmd = exec.CommandContext(ctx, curl, "-sS", "-k", "--ssl-reqd", url, "-u", alice+":wrong password")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("curl with a wrong password: %s", out)
	}
}
