package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// mailTest is a store with a domain and two addresses.
func mailTest(t *testing.T) (*Store, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	_, err := s.AddDomain(ctx, "clinic.example")
	tcheck(t, err, "add domain")
	for _, a := range []string{"alice@clinic.example", "bob@clinic.example"} {
		_, err := s.AddAddress(ctx, a)
		tcheck(t, err, "add address")
	}
	return s, dir
}

func testMail(subject string, n int) []byte {
	return []byte(fmt.Sprintf("From: a@b.example\r\nTo: alice@clinic.example\r\nSubject: %s\r\n\r\n%s\r\n", subject, strings.Repeat("x", n)))
}

func TestMailboxNames(t *testing.T) {
	good := map[string]string{
		"INBOX": "INBOX", "inbox": "INBOX", "InBoX/Sub": "INBOX/Sub", "Sent": "Sent", "a/b/c/": "a/b/c",
		"Ärzte/Befunde": "Ärzte/Befunde", "inboxes": "inboxes",
	}
	for in, want := range good {
		got, err := NormalizeMailboxName(in)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/", "/a", "a//b", "a/../b", "..", ".", "a*", "%", "a\x00b", "a\r\nb", " a", "a /b",
		"\xff", strings.Repeat("x", 256)} {
		if got, err := NormalizeMailboxName(in); !errors.Is(err, ErrBadMailboxName) {
			t.Errorf("%q: got %q, %v; want ErrBadMailboxName", in, got, err)
		}
	}
}

func TestHeaderSize(t *testing.T) {
	for in, want := range map[string]int64{
		"A: b\r\n\r\nbody": 8, "A: b\n\nbody": 6, "A: b\r\n": 6, "\r\nbody": 2, "": 0, "A: b": 4,
	} {
		if got := mailHeaderSize([]byte(in)); got != want {
			t.Errorf("%q: %d, want %d", in, got, want)
		}
	}
}

func TestDeliverListFlagsExpunge(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)

	// Deliver makes the account with INBOX and Sent on first use.
	msg := testMail("one", 10)
	date := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	uid, err := s.Deliver(ctx, "Alice@Clinic.example", "", msg, []string{`\flagged`, "$Label1", "$label1", `\Recent`}, date)
	tcheck(t, err, "deliver")
	if uid != 1 {
		t.Fatalf("first uid %d", uid)
	}
	a, err := s.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "mail account")
	boxes, err := s.Mailboxes(ctx, a.ID)
	tcheck(t, err, "mailboxes")
	var names []string
	for _, b := range boxes {
		names = append(names, b.Name+":"+b.SpecialUse)
	}
	if !slices.Equal(names, []string{"INBOX:", `Sent:\Sent`}) {
		t.Fatalf("mailboxes %v", names)
	}
	uid2, err := s.Deliver(ctx, "alice@clinic.example", "inbox", testMail("two", 20), nil, time.Time{})
	tcheck(t, err, "deliver 2")
	if uid2 != 2 {
		t.Fatalf("second uid %d", uid2)
	}
	inbox, err := s.Mailbox(ctx, a.ID, "INBOX")
	tcheck(t, err, "inbox")
	msgs, err := s.Messages(ctx, a.ID, inbox.ID, 1, math.MaxUint32)
	tcheck(t, err, "messages")
	if len(msgs) != 2 || msgs[0].UID != 1 || !slices.Equal(msgs[0].Flags, []string{FlagFlagged, "$Label1"}) ||
		!msgs[0].Date.Equal(date) || msgs[0].Size != int64(len(msg)) || len(msgs[1].Flags) != 0 {
		t.Fatalf("messages %+v", msgs)
	}
	if time.Since(msgs[1].Date) > time.Minute {
		t.Fatalf("zero date not now: %v", msgs[1].Date)
	}
	body, err := s.MessageBody(ctx, a.ID, inbox.ID, 1)
	tcheck(t, err, "body")
	if !bytes.Equal(body, msg) {
		t.Fatalf("body differs")
	}
	hdr, err := s.MessageHeader(ctx, a.ID, inbox.ID, 1)
	tcheck(t, err, "header")
	if !bytes.HasSuffix(hdr, []byte("Subject: one\r\n\r\n")) || !bytes.HasPrefix(msg, hdr) {
		t.Fatalf("header %q", hdr)
	}

	hdrs, err := s.MessageHeaders(ctx, a.ID, inbox.ID, 1, 2)
	tcheck(t, err, "headers")
	if len(hdrs) != 2 || !bytes.Equal(hdrs[1], hdr) || !bytes.HasSuffix(hdrs[2], []byte("Subject: two\r\n\r\n")) {
		t.Fatalf("headers %v", hdrs)
	}
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, []string{"bad keyword"}, time.Time{}); !errors.Is(err, ErrBadFlag) {
		t.Fatalf("bad keyword: %v", err)
	}
	if _, err := s.Deliver(ctx, "alice@clinic.example", "a//b", msg, nil, time.Time{}); !errors.Is(err, ErrBadMailboxName) {
		t.Fatalf("bad mailbox name: %v", err)
	}

	// Another account cannot read the message through the mailbox id.
	b, err := s.MailAccount(ctx, "bob@clinic.example")
	tcheck(t, err, "bob")
	if _, err := s.MessageBody(ctx, b.ID, inbox.ID, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob reads alice's message: %v", err)
	}
	if h, err := s.MessageHeaders(ctx, b.ID, inbox.ID, 1, 2); err != nil || len(h) != 0 {
		t.Fatalf("bob reads alice's headers: %v %v", h, err)
	}
	if _, err := s.MailboxStatusByID(ctx, b.ID, inbox.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob reads alice's mailbox status: %v", err)
	}
	if ch, err := s.MailboxChanges(ctx, b.ID, inbox.ID, 0, 0, 0); err != nil || !ch.Gone {
		t.Fatalf("bob reads alice's mailbox changes: %+v %v", ch, err)
	}
	if m, err := s.Messages(ctx, b.ID, inbox.ID, 1, math.MaxUint32); err != nil || len(m) != 0 {
		t.Fatalf("bob lists alice's messages: %v %v", m, err)
	}
	if _, err := s.StoreFlags(ctx, b.ID, inbox.ID, []uint32{1}, FlagsAdd, []string{FlagDeleted}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob flags alice's message: %v", err)
	}
	if _, err := s.CopyMessages(ctx, b.ID, inbox.ID, []uint32{1}, "INBOX", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob copies alice's message: %v", err)
	}

	// Flags.
	before, err := s.MailChanged(ctx)
	tcheck(t, err, "mail changed")
	changed, err := s.StoreFlags(ctx, a.ID, inbox.ID, []uint32{1, 2, 99}, FlagsAdd, []string{`\Seen`, "Junk"})
	tcheck(t, err, "store flags")
	if len(changed) != 2 || !slices.Equal(changed[0].Flags, []string{FlagSeen, FlagFlagged, "$Label1", "Junk"}) ||
		!slices.Equal(changed[1].Flags, []string{FlagSeen, "Junk"}) || changed[0].ModSeq <= before {
		t.Fatalf("after add: %+v", changed)
	}
	changed, err = s.StoreFlags(ctx, a.ID, inbox.ID, []uint32{1}, FlagsRemove, []string{"junk", `\Flagged`})
	tcheck(t, err, "remove flags")
	if !slices.Equal(changed[0].Flags, []string{FlagSeen, "$Label1"}) {
		t.Fatalf("after remove: %+v", changed)
	}
	changed, err = s.StoreFlags(ctx, a.ID, inbox.ID, []uint32{2}, FlagsSet, []string{`\Deleted`})
	tcheck(t, err, "set flags")
	if !slices.Equal(changed[0].Flags, []string{FlagDeleted}) {
		t.Fatalf("after set: %+v", changed)
	}
	if _, err := s.StoreFlags(ctx, a.ID, inbox.ID, []uint32{1}, FlagsAdd, []string{"bad keyword"}); err == nil {
		t.Fatal("keyword with a space accepted")
	}
	kw, err := s.MailboxKeywords(ctx, a.ID, inbox.ID)
	tcheck(t, err, "keywords")
	if !slices.Equal(kw, []string{"$Label1"}) {
		t.Fatalf("keywords %v", kw)
	}
	st, err := s.MailboxStatus(ctx, a.ID, "INBOX")
	tcheck(t, err, "status")
	if st.Messages != 2 || st.Unseen != 1 || st.Deleted != 1 || st.FirstUnseenUID != 2 || st.Size != int64(len(msg)+len(testMail("two", 20))) {
		t.Fatalf("status %+v", st)
	}

	// Expunge: only \Deleted, only the given UIDs.
	gone, err := s.Expunge(ctx, a.ID, inbox.ID, []uint32{1})
	tcheck(t, err, "expunge 1")
	if len(gone) != 0 {
		t.Fatalf("expunged %v", gone)
	}
	gone, err = s.Expunge(ctx, a.ID, inbox.ID, nil)
	tcheck(t, err, "expunge")
	if !slices.Equal(gone, []uint32{2}) {
		t.Fatalf("expunged %v", gone)
	}
	st, err = s.MailboxStatus(ctx, a.ID, "INBOX")
	tcheck(t, err, "status")
	if st.Messages != 1 || st.Size != int64(len(msg)) || st.UIDNext != 3 {
		t.Fatalf("status after expunge %+v", st)
	}
	var bodies int
	tcheck(t, s.db.QueryRow(`SELECT COUNT(*) FROM mail_bodies`).Scan(&bodies), "count bodies")
	if bodies != 1 {
		t.Fatalf("%d bodies after expunge, want 1", bodies)
	}

	// The Sent mailbox, filled by the submission path.
	uid, err = s.Deliver(ctx, "alice@clinic.example", "Sent", testMail("sent", 5), []string{`\Seen`}, time.Time{})
	tcheck(t, err, "deliver to Sent")
	if uid != 1 {
		t.Fatalf("sent uid %d", uid)
	}
	// Unknown addresses.
	if _, err := s.Deliver(ctx, "nobody@clinic.example", "", msg, nil, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deliver to unknown address: %v", err)
	}
	if _, err := s.Deliver(ctx, "nobody@elsewhere.example", "", msg, nil, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deliver to unknown domain: %v", err)
	}
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", nil, nil, time.Time{}); err == nil {
		t.Fatal("empty message delivered")
	}
}

func TestMailboxChangesAndCopy(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	a, err := s.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "account")
	inbox, err := s.Mailbox(ctx, a.ID, "INBOX")
	tcheck(t, err, "inbox")
	for i := range 5 {
		_, err := s.Deliver(ctx, "alice@clinic.example", "", testMail(fmt.Sprint(i), i), nil, time.Time{})
		tcheck(t, err, "deliver")
	}
	uids, err := s.MessageUIDs(ctx, a.ID, inbox.ID)
	tcheck(t, err, "uids")
	if !slices.Equal(uids, []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("uids %v", uids)
	}
	inbox, _ = s.Mailbox(ctx, a.ID, "INBOX")
	ch, err := s.MailboxChanges(ctx, a.ID, inbox.ID, inbox.ModSeq, 5, 5)
	tcheck(t, err, "changes")
	if ch.ModSeq != inbox.ModSeq || ch.Expunged || len(ch.New)+len(ch.Flags) != 0 {
		t.Fatalf("no changes: %+v", ch)
	}
	since := ch.ModSeq

	_, err = s.CreateMailbox(ctx, a.ID, "Clinical/Referrals", "")
	tcheck(t, err, "create")
	if _, err := s.CreateMailbox(ctx, a.ID, "clinical/referrals", ""); err != nil {
		t.Fatalf("names other than INBOX are case-sensitive: %v", err)
	}
	if _, err := s.CreateMailbox(ctx, a.ID, "Clinical", ""); !errors.Is(err, ErrExists) {
		t.Fatalf("parent not made: %v", err)
	}
	if _, err := s.CreateMailbox(ctx, a.ID, "inbox", ""); !errors.Is(err, ErrExists) {
		t.Fatalf("second INBOX: %v", err)
	}
	res, err := s.CopyMessages(ctx, a.ID, inbox.ID, []uint32{4, 2, 2, 77}, "Clinical/Referrals", false)
	tcheck(t, err, "copy")
	if !slices.Equal(res.SourceUIDs, []uint32{2, 4}) || !slices.Equal(res.DestUIDs, []uint32{1, 2}) {
		t.Fatalf("copy %+v", res)
	}
	res, err = s.CopyMessages(ctx, a.ID, inbox.ID, []uint32{1, 3}, "Clinical", true)
	tcheck(t, err, "move")
	if !slices.Equal(res.SourceUIDs, []uint32{1, 3}) || !slices.Equal(res.DestUIDs, []uint32{1, 2}) {
		t.Fatalf("move %+v", res)
	}
	if _, err := s.CopyMessages(ctx, a.ID, inbox.ID, []uint32{2}, "INBOX", true); !errors.Is(err, ErrMailboxRule) {
		t.Fatalf("move to itself: %v", err)
	}
	if _, err := s.CopyMessages(ctx, a.ID, inbox.ID, []uint32{2}, "Nowhere", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("copy to missing mailbox: %v", err)
	}
	_, err = s.StoreFlags(ctx, a.ID, inbox.ID, []uint32{5}, FlagsAdd, []string{FlagAnswered})
	tcheck(t, err, "flag")
	_, err = s.Deliver(ctx, "alice@clinic.example", "", testMail("new", 1), nil, time.Time{})
	tcheck(t, err, "deliver")

	ch, err = s.MailboxChanges(ctx, a.ID, inbox.ID, since, 5, 5)
	tcheck(t, err, "changes")
	if !ch.Expunged || !slices.Equal(ch.Present, []uint32{2, 4, 5}) || !slices.Equal(ch.New, []uint32{6}) ||
		len(ch.Flags) != 1 || ch.Flags[0].UID != 5 || ch.ModSeq <= since {
		t.Fatalf("changes %+v", ch)
	}
	// Copies share bodies; a body goes with its last message.
	var bodies int
	tcheck(t, s.db.QueryRow(`SELECT COUNT(*) FROM mail_bodies`).Scan(&bodies), "count")
	if bodies != 6 {
		t.Fatalf("%d bodies, want 6", bodies)
	}
	ref, _ := s.Mailbox(ctx, a.ID, "Clinical/Referrals")
	_, err = s.StoreFlags(ctx, a.ID, inbox.ID, []uint32{2}, FlagsAdd, []string{FlagDeleted})
	tcheck(t, err, "flag")
	_, err = s.Expunge(ctx, a.ID, inbox.ID, nil)
	tcheck(t, err, "expunge")
	tcheck(t, s.db.QueryRow(`SELECT COUNT(*) FROM mail_bodies`).Scan(&bodies), "count")
	if bodies != 6 {
		t.Fatalf("shared body removed: %d bodies", bodies)
	}
	if body, err := s.MessageBody(ctx, a.ID, ref.ID, 1); err != nil || !bytes.Contains(body, []byte("Subject: 1")) {
		t.Fatalf("copy lost its body: %v", err)
	}

	// Rename, delete.
	tcheck(t, s.RenameMailbox(ctx, a.ID, "Clinical", "Archive/Clinical"), "rename")
	boxes, _ := s.Mailboxes(ctx, a.ID)
	var names []string
	for _, b := range boxes {
		names = append(names, b.Name)
	}
	if !slices.Equal(names, []string{"Archive", "Archive/Clinical", "Archive/Clinical/Referrals", "INBOX", "Sent", "clinical", "clinical/referrals"}) {
		t.Fatalf("after rename: %v", names)
	}
	moved, _ := s.Mailbox(ctx, a.ID, "Archive/Clinical/Referrals")
	if moved.ID != ref.ID || moved.UIDValidity != ref.UIDValidity {
		t.Fatalf("renamed mailbox changed identity")
	}
	if err := s.RenameMailbox(ctx, a.ID, "Archive", "Archive/x"); !errors.Is(err, ErrMailboxRule) {
		t.Fatalf("rename into itself: %v", err)
	}
	if err := s.RenameMailbox(ctx, a.ID, "Sent", "Archive"); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto existing: %v", err)
	}
	if err := s.RenameMailbox(ctx, a.ID, "Nope", "Other"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename missing: %v", err)
	}
	if _, err := s.DeleteMailbox(ctx, a.ID, "Archive"); !errors.Is(err, ErrMailboxRule) {
		t.Fatalf("delete with children: %v", err)
	}
	if _, err := s.DeleteMailbox(ctx, a.ID, "inbox"); !errors.Is(err, ErrMailboxRule) {
		t.Fatalf("delete INBOX: %v", err)
	}
	before, _ := s.MailChanged(ctx)
	id, err := s.DeleteMailbox(ctx, a.ID, "Archive/Clinical/Referrals")
	tcheck(t, err, "delete")
	if after, _ := s.MailChanged(ctx); after <= before {
		t.Fatal("delete did not move the modification sequence")
	}
	if ch, err := s.MailboxChanges(ctx, a.ID, id, 0, 0, 0); err != nil || !ch.Gone {
		t.Fatalf("deleted mailbox: %+v %v", ch, err)
	}
	again, err := s.CreateMailbox(ctx, a.ID, "Archive/Clinical/Referrals", "")
	tcheck(t, err, "re-create")
	if again.ID == ref.ID || again.UIDValidity <= ref.UIDValidity {
		t.Fatalf("re-created mailbox reuses id or UIDVALIDITY: %+v %+v", again, ref)
	}

	// Renaming INBOX moves its messages and leaves it empty.
	tcheck(t, s.RenameMailbox(ctx, a.ID, "INBOX", "Old Inbox"), "rename INBOX")
	old, _ := s.MailboxStatus(ctx, a.ID, "Old Inbox")
	in, _ := s.MailboxStatus(ctx, a.ID, "INBOX")
	if old.Messages != 3 || in.Messages != 0 || in.Size != 0 || old.UIDNext != 7 || in.UIDNext != 7 {
		t.Fatalf("after INBOX rename: old %+v, inbox %+v", old, in)
	}

	// Subscriptions.
	tcheck(t, s.SubscribeMailbox(ctx, a.ID, "Sent", false), "unsubscribe")
	if m, _ := s.Mailbox(ctx, a.ID, "Sent"); m.Subscribed {
		t.Fatal("still subscribed")
	}
	if err := s.SubscribeMailbox(ctx, a.ID, "Nope", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("subscribe missing: %v", err)
	}
}

func TestQuota(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	msg := testMail("q", 1000)
	tcheck(t, s.SetQuota(ctx, "alice@clinic.example", int64(2*len(msg)+20)), "set quota")
	for i := range 2 {
		_, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{})
		tcheck(t, err, fmt.Sprint("deliver ", i))
	}
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("third message: %v", err)
	}
	a, err := s.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "account")
	if a.Used != int64(2*len(msg)) || a.Quota != int64(2*len(msg)+20) {
		t.Fatalf("account %+v", a)
	}
	inbox, _ := s.Mailbox(ctx, a.ID, "INBOX")
	if _, err := s.CopyMessages(ctx, a.ID, inbox.ID, []uint32{1}, "Sent", false); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("copy over quota: %v", err)
	}
	if _, err := s.CopyMessages(ctx, a.ID, inbox.ID, []uint32{1}, "Sent", true); err != nil {
		t.Fatalf("move within quota: %v", err)
	}
	// A small message still fits; other accounts are not limited.
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", []byte("Subject: s\r\n\r\n"), nil, time.Time{}); err != nil {
		t.Fatalf("small message: %v", err)
	}
	if _, err := s.Deliver(ctx, "bob@clinic.example", "", msg, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Lifting the quota.
	tcheck(t, s.SetQuota(ctx, "alice@clinic.example", QuotaNone), "no quota")
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); err != nil {
		t.Fatalf("without quota: %v", err)
	}
	if err := s.SetQuota(ctx, "nobody@clinic.example", 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("quota of unknown address: %v", err)
	}
}

// TestDefaultQuota: accounts without a quota of their own follow the
// default; their own quota, or QuotaNone, wins over it.
func TestDefaultQuota(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	msg := testMail("q", 1000)
	s.SetDefaultQuota(int64(len(msg) + 10))
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("second message over the default quota: %v", err)
	}
	a, err := s.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "account")
	if !a.QuotaDefault || a.Quota != int64(len(msg)+10) {
		t.Fatalf("account %+v", a)
	}
	tcheck(t, s.SetQuota(ctx, "alice@clinic.example", QuotaNone), "no quota")
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); err != nil {
		t.Fatalf("with no quota: %v", err)
	}
	if a, _ := s.MailAccount(ctx, "alice@clinic.example"); a.QuotaDefault || a.Quota != 0 {
		t.Fatalf("account without quota %+v", a)
	}
	tcheck(t, s.SetQuota(ctx, "alice@clinic.example", 10<<20), "own quota")
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); err != nil {
		t.Fatalf("within its own quota: %v", err)
	}
	tcheck(t, s.SetQuota(ctx, "alice@clinic.example", QuotaDefault), "back to the default")
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("back to the default quota: %v", err)
	}
	s.SetDefaultQuota(0)
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", msg, nil, time.Time{}); err != nil {
		t.Fatalf("default 0 (no limit): %v", err)
	}
}

func TestMailDurableAcrossReopen(t *testing.T) {
	ctx := context.Background()
	s, dir := mailTest(t)
	msg := testMail("durable", 100000)
	_, err := s.Deliver(ctx, "alice@clinic.example", "", msg, []string{`\Flagged`}, time.Time{})
	tcheck(t, err, "deliver")
	a, _ := s.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, s.Close(), "close")

	s2 := openTest(t, dir)
	a2, err := s2.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "account")
	if a2.ID != a.ID || a2.Used != int64(len(msg)) {
		t.Fatalf("account after reopen %+v", a2)
	}
	inbox, _ := s2.Mailbox(ctx, a2.ID, "INBOX")
	body, err := s2.MessageBody(ctx, a2.ID, inbox.ID, 1)
	tcheck(t, err, "body")
	if !bytes.Equal(body, msg) {
		t.Fatal("body changed across reopen")
	}
	msgs, _ := s2.Messages(ctx, a2.ID, inbox.ID, 1, 1)
	if len(msgs) != 1 || !slices.Equal(msgs[0].Flags, []string{FlagFlagged}) {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestRemovedAccountLeavesNoMail(t *testing.T) {
	ctx := context.Background()
	s, dir := mailTest(t)
	secret := []byte("Subject: secret\r\n\r\nPHI-MARKER-1234567890\r\n")
	_, err := s.Deliver(ctx, "alice@clinic.example", "", secret, nil, time.Time{})
	tcheck(t, err, "deliver")
	old, _ := s.MailAccount(ctx, "alice@clinic.example")
	oldInbox, _ := s.Mailbox(ctx, old.ID, "INBOX")

	tcheck(t, s.RemoveAddress(ctx, "alice@clinic.example"), "remove address")
	if _, err := s.Deliver(ctx, "alice@clinic.example", "", secret, nil, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deliver to removed address: %v", err)
	}
	_, err = s.AddAddress(ctx, "alice@clinic.example")
	tcheck(t, err, "add again")
	nu, err := s.MailAccount(ctx, "alice@clinic.example")
	tcheck(t, err, "new account")
	if nu.ID == old.ID || nu.Used != 0 {
		t.Fatalf("new account %+v reuses %+v", nu, old)
	}
	inbox, _ := s.MailboxStatus(ctx, nu.ID, "INBOX")
	if inbox.Messages != 0 || inbox.ID == oldInbox.ID || inbox.UIDValidity <= oldInbox.UIDValidity {
		t.Fatalf("new INBOX %+v, old %+v", inbox, oldInbox)
	}
	// Neither the new account nor the old account id reach the old mail.
	for _, acct := range []int64{nu.ID, old.ID} {
		if _, err := s.MessageBody(ctx, acct, oldInbox.ID, 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old message readable by account %d: %v", acct, err)
		}
	}
	var n int
	tcheck(t, s.db.QueryRow(`SELECT COUNT(*) FROM mail_bodies`).Scan(&n), "count bodies")
	if n != 0 {
		t.Fatalf("%d bodies left", n)
	}

	// Removing a domain cascades the same way.
	_, err = s.Deliver(ctx, "bob@clinic.example", "", secret, nil, time.Time{})
	tcheck(t, err, "deliver bob")
	_, err = s.RemoveDomain(ctx, "clinic.example")
	tcheck(t, err, "remove domain")
	for _, q := range []string{`SELECT COUNT(*) FROM mail_bodies`, `SELECT COUNT(*) FROM messages`, `SELECT COUNT(*) FROM mailboxes`, `SELECT COUNT(*) FROM mail_accounts`} {
		tcheck(t, s.db.QueryRow(q).Scan(&n), q)
		if n != 0 {
			t.Fatalf("%s: %d left", q, n)
		}
	}
	// The bytes are gone from the database files too (secure_delete), once
	// checkpointed. (PostgreSQL's files are its own: VACUUM's business.)
	if testPostgres() {
		return
	}
	_, err = s.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	tcheck(t, err, "checkpoint")
	data, err := os.ReadFile(filepath.Join(dir, DBFile))
	tcheck(t, err, "read database")
	if bytes.Contains(data, []byte("PHI-MARKER")) {
		t.Fatal("removed mail still in the database file")
	}
}

func TestConcurrentDeliver(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Deliver(ctx, "alice@clinic.example", "", testMail(fmt.Sprint(i), i), nil, time.Time{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tcheck(t, err, "deliver")
	}
	a, _ := s.MailAccount(ctx, "alice@clinic.example")
	inbox, _ := s.Mailbox(ctx, a.ID, "INBOX")
	uids, _ := s.MessageUIDs(ctx, a.ID, inbox.ID)
	if len(uids) != 40 || uids[39] != 40 || inbox.UIDNext != 41 {
		t.Fatalf("uids %v, uidnext %d", uids, inbox.UIDNext)
	}
}

// TestDeliverEach: the copies of one inbound message for several local
// recipients go in one transaction; a recipient over quota or gone is left
// out alone.
func TestDeliverEach(t *testing.T) {
	ctx := context.Background()
	s, _ := mailTest(t)
	tcheck(t, s.SetQuota(ctx, "bob@clinic.example", 10), "quota")
	msg := testMail("referral", 100)
	notice := func(id string) []QueuedMessage {
		return []QueuedMessage{{MessageID: id, MailFrom: "x@clinic.example", Origin: "mdn", Data: []byte("sealed"),
			Recipients: []QueuedRecipient{{Address: "sender@remote.example"}}}}
	}
	res, errs, err := s.DeliverEach(ctx, []Delivery{
		{Filing{Address: "alice@clinic.example", Message: msg}, notice("<for-alice>")},
		{Filing{Address: "bob@clinic.example", Message: msg}, notice("<for-bob>")},
		{Filing: Filing{Address: "nobody@clinic.example", Message: msg}},
	})
	tcheck(t, err, "deliver")
	if errs[0] != nil || res[0].UID != 1 {
		t.Errorf("alice: %+v, %v", res[0], errs[0])
	}
	if !errors.Is(errs[1], ErrOverQuota) {
		t.Errorf("bob over quota: %v", errs[1])
	}
	if !errors.Is(errs[2], ErrNotFound) {
		t.Errorf("no such address: %v", errs[2])
	}
	for addr, want := range map[string]uint32{"alice@clinic.example": 1, "bob@clinic.example": 0} {
		a, err := s.MailAccount(ctx, addr)
		tcheck(t, err, "account")
		st, err := s.MailboxStatus(ctx, a.ID, Inbox)
		tcheck(t, err, "INBOX")
		if st.Messages != want {
			t.Errorf("%s INBOX holds %d, want %d", addr, st.Messages, want)
		}
	}
	// The notice of the copy filed is queued, the other's not.
	q, err := s.QueueList(ctx, true)
	tcheck(t, err, "queue")
	if len(q) != 1 || q[0].MessageID != "<for-alice>" {
		t.Errorf("queued %+v", q)
	}
	// A store failure in the middle (here a trigger refusing one notice)
	// files and queues nothing at all: the sender's retry duplicates nobody.
	boom := `CREATE TRIGGER boom BEFORE INSERT ON queue_messages
		WHEN NEW.message_id = '<boom>' BEGIN SELECT RAISE(ABORT, 'boom'); END`
	if testPostgres() {
		boom = `CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'boom'; END $$;
			CREATE TRIGGER boom BEFORE INSERT ON queue_messages
			FOR EACH ROW WHEN (NEW.message_id = '<boom>') EXECUTE FUNCTION boom()`
	}
	if _, err := s.db.DB.ExecContext(ctx, boom); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.DeliverEach(ctx, []Delivery{
		{Filing{Address: "alice@clinic.example", Message: msg}, notice("<for-alice-2>")},
		{Filing{Address: "alice@clinic.example", Mailbox: "Other", Message: msg}, notice("<boom>")},
	}); err == nil {
		t.Fatal("a failing store gave no error")
	}
	if a, _ := s.MailAccount(ctx, "alice@clinic.example"); a.ID != 0 {
		if st, _ := s.MailboxStatus(ctx, a.ID, Inbox); st.Messages != 1 {
			t.Errorf("alice's INBOX holds %d messages after the failed delivery, want 1", st.Messages)
		}
	}
	if q, _ := s.QueueList(ctx, true); len(q) != 1 {
		t.Errorf("queued after the failed delivery: %+v", q)
	}
	if _, _, err := s.DeliverEach(ctx, []Delivery{{Filing: Filing{Address: "alice@clinic.example", Mailbox: "../x", Message: msg}}}); err == nil {
		t.Error("a bad mailbox name was taken")
	}
}
