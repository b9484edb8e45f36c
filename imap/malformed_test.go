package imap

import (
	"strings"
	"testing"
)

// malformedCommands are commands with arguments the parser refuses (in
// the selected state), each once answered NO [SERVERBUG] by go-imap's
// imapserver: bad sequence sets, numbers, dates, search keys, mailbox
// names and APPEND date-times.
var malformedCommands = []string{
	"SEARCH FOO", "SEARCH 0", "SEARCH 0:1", "SEARCH 1:0", "SEARCH 4294967296", "SEARCH BEFORE x",
	"SEARCH SENTBEFORE 32-Jan-2020", "SEARCH UID x", "SEARCH UID 0", "SEARCH MODSEQ x", "SEARCH MODSEQ 0",
	"SEARCH YOUNGER 10", "SEARCH OLDER x", "SEARCH SAVEDATESUPPORTED",
	"FETCH 0 FLAGS", "FETCH 1:0 FLAGS", "FETCH x FLAGS", "FETCH 4294967296 FLAGS", "FETCH 1,,2 FLAGS",
	"FETCH 1: FLAGS", "FETCH :1 FLAGS", "FETCH -1 FLAGS",
	`STORE 0 +FLAGS (\Seen)`, "UID FETCH 0 FLAGS", "UID FETCH x FLAGS", "UID MOVE 0 Sent", "UID EXPUNGE x",
	"UID EXPUNGE 0", "COPY x Sent", "COPY 0 Sent", "COPY 1:0 Sent", "MOVE 0 Sent",
	// A synchronizing literal: the server answers before asking for it.
	"CREATE \"a\x01b\"", `APPEND INBOX "bad date" {3}`,
}

// TestMalformedCommandsBAD: malformed commands get BAD [CLIENTBUG] (RFC
// 9051 §7.1.5), not NO [SERVERBUG], and the session goes on.
func TestMalformedCommandsBAD(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	msg, _ := directMessage(t, "hi")
	rc := e.loggedIn(alice, alicePW)
	rc.ok("APPEND INBOX {%d+}\r\n%s", len(msg), msg)
	rc.ok("SELECT INBOX")
	for _, c := range malformedCommands {
		_, status := rc.cmd("%s", c)
		if !strings.HasPrefix(status, "BAD [CLIENTBUG]") {
			t.Errorf("%q: %s, want BAD [CLIENTBUG]", c, status)
		}
		rc.ok("NOOP")
	}
	// Well-formed ones still work, and a real refusal is still NO.
	rc.ok("FETCH 1 FLAGS")
	rc.ok("SEARCH 1:* UNSEEN")
	if st := rc.no("COPY 1 Nowhere"); !strings.HasPrefix(st, "NO [TRYCREATE]") {
		t.Errorf("COPY to a missing mailbox: %s", st)
	}
}
