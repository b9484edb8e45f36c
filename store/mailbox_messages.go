package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// System flags of messages (RFC 3501, 2.3.2). \Recent is not kept.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

// systemFlags are the system flags in the order the store lists them.
var systemFlags = [...]string{FlagSeen, FlagAnswered, FlagFlagged, FlagDeleted, FlagDraft}

// SystemFlags returns the system flags a message can carry, in the order
// the store lists them.
func SystemFlags() []string { return slices.Clone(systemFlags[:]) }

// Limits on keywords (user-defined flags).
const (
	MaxKeywordLength = 100
	MaxKeywords      = 64 // per message
)

// flagSet is the flags of one message as stored.
type flagSet struct {
	seen, answered, flagged, deleted, draft bool
	keywords                                []string // sorted, unique ignoring case
}

// parseFlags checks flags and returns them as a set: system flags in any
// case; \Recent and other unknown backslash flags are dropped; keywords
// are atoms (RFC 3501 flag-keyword), kept as given, unique ignoring case.
func parseFlags(flags []string) (flagSet, error) {
	var f flagSet
	for _, fl := range flags {
		if strings.HasPrefix(fl, `\`) {
			switch strings.ToLower(fl) {
			case `\seen`:
				f.seen = true
			case `\answered`:
				f.answered = true
			case `\flagged`:
				f.flagged = true
			case `\deleted`:
				f.deleted = true
			case `\draft`:
				f.draft = true
			}
			continue
		}
		if err := checkKeyword(fl); err != nil {
			return flagSet{}, err
		}
		f.keywords = addKeyword(f.keywords, fl)
	}
	if len(f.keywords) > MaxKeywords {
		return flagSet{}, fmt.Errorf("%w: more than %d keywords", ErrBadFlag, MaxKeywords)
	}
	return f, nil
}

func checkKeyword(k string) error {
	if k == "" || len(k) > MaxKeywordLength {
		return fmt.Errorf("%w: keyword %q empty or longer than %d bytes", ErrBadFlag, k, MaxKeywordLength)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return fmt.Errorf("%w: keyword %q: character %q", ErrBadFlag, k, c)
		}
	}
	return nil
}

func addKeyword(l []string, k string) []string {
	for _, e := range l {
		if strings.EqualFold(e, k) {
			return l
		}
	}
	l = append(l, k)
	slices.SortFunc(l, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	return l
}

// list returns the flags, system flags first.
func (f flagSet) list() []string {
	out := make([]string, 0, 5+len(f.keywords))
	for i, on := range []bool{f.seen, f.answered, f.flagged, f.deleted, f.draft} {
		if on {
			out = append(out, systemFlags[i])
		}
	}
	return append(out, f.keywords...)
}

func (f flagSet) equal(g flagSet) bool {
	return f.seen == g.seen && f.answered == g.answered && f.flagged == g.flagged &&
		f.deleted == g.deleted && f.draft == g.draft && slices.Equal(f.keywords, g.keywords)
}

// FlagOp says how StoreFlags changes flags.
type FlagOp int

// Flag operations: replace, add, remove.
const (
	FlagsSet FlagOp = iota
	FlagsAdd
	FlagsRemove
)

func (f flagSet) apply(op FlagOp, g flagSet) flagSet {
	switch op {
	case FlagsSet:
		return g
	case FlagsAdd:
		f.seen = f.seen || g.seen
		f.answered = f.answered || g.answered
		f.flagged = f.flagged || g.flagged
		f.deleted = f.deleted || g.deleted
		f.draft = f.draft || g.draft
		kw := slices.Clone(f.keywords)
		for _, k := range g.keywords {
			kw = addKeyword(kw, k)
		}
		f.keywords = kw
	case FlagsRemove:
		f.seen = f.seen && !g.seen
		f.answered = f.answered && !g.answered
		f.flagged = f.flagged && !g.flagged
		f.deleted = f.deleted && !g.deleted
		f.draft = f.draft && !g.draft
		var kw []string
		for _, k := range f.keywords {
			if !slices.ContainsFunc(g.keywords, func(r string) bool { return strings.EqualFold(r, k) }) {
				kw = append(kw, k)
			}
		}
		f.keywords = kw
	}
	return f
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// MailMessage is the metadata of a stored message.
type MailMessage struct {
	UID    uint32
	Flags  []string  // system flags first, then keywords
	Date   time.Time // internal date: when it was filed, unless given
	Size   int64     // bytes, as stored
	ModSeq int64     // of the newest change of its flags, or its filing
}

const mailColumns = `m.uid, m.size, m.internal_date, m.modseq, m.seen, m.answered, m.flagged, m.deleted, m.draft, m.keywords`

func scanMail(r rowScanner) (MailMessage, flagSet, error) {
	var m MailMessage
	var uid, date int64
	var seen, answered, flagged, deleted, draft int
	var keywords string
	if err := r.Scan(&uid, &m.Size, &date, &m.ModSeq, &seen, &answered, &flagged, &deleted, &draft, &keywords); err != nil {
		return MailMessage{}, flagSet{}, err
	}
	f := flagSet{seen: seen != 0, answered: answered != 0, flagged: flagged != 0, deleted: deleted != 0, draft: draft != 0}
	if keywords != "" {
		f.keywords = strings.Split(keywords, " ")
	}
	m.UID = uint32(uid)
	m.Date = fromMillis(date)
	m.Flags = f.list()
	return m, f, nil
}

// mailHeaderSize returns the length of the header of a message, up to and
// including the empty line that ends it; the whole message if there is
// none.
func mailHeaderSize(msg []byte) int64 {
	off := 0
	for off < len(msg) {
		i := bytes.IndexByte(msg[off:], '\n')
		if i < 0 {
			break
		}
		line := msg[off : off+i]
		off += i + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return int64(off)
		}
	}
	return int64(len(msg))
}

// AppendResult says where a message was filed.
type AppendResult struct {
	MailboxID   int64
	UIDValidity uint32
	UID         uint32
}

// Deliver files a message in a mailbox of a local address: mailbox ""
// is INBOX, a missing mailbox is made (the mail account too, on first use).
// The message is stored as given, with the flags (system flags such as
// `\Seen`, and keywords) and internal date (zero: now). It returns the
// message's UID; an error wrapping ErrNotFound if the address does not
// exist, ErrOverQuota if the message would take the account over its
// quota. The message is durable when Deliver returns.
func (s *Store) Deliver(ctx context.Context, address, mailbox string, msg []byte, flags []string, date time.Time) (uint32, error) {
	f, err := prepareFiling(Filing{Address: address, Mailbox: mailbox, Message: msg, Flags: flags, Date: date})
	if err != nil {
		return 0, err
	}
	var res AppendResult
	err = s.tx(ctx, func(tx *txn) error {
		res, err = f.file(ctx, tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("deliver to %s %s: %w", f.addr, f.mailbox, err)
	}
	return res.UID, nil
}

// Delivery is a filing for DeliverEach, with the messages to queue when it
// is made (the MDNs that report it).
type Delivery struct {
	Filing
	Then []QueuedMessage
}

// DeliverEach makes every delivery in one transaction: each filing as
// Deliver would, and the messages it queues when the filing is made. One
// commit for all the local recipients of a message and their notices, and
// all or nothing when the store fails. A filing refused for its account
// (errs[i] wrapping ErrNotFound or ErrOverQuota) is left out alone, with
// its Then; any other error fails the whole call (err) and nothing is
// filed or queued.
func (s *Store) DeliverEach(ctx context.Context, ds []Delivery) (res []AppendResult, errs []error, err error) {
	prepared := make([]*preparedFiling, len(ds))
	then := make([][]preparedMessage, len(ds))
	now := time.Now()
	for i, d := range ds {
		if prepared[i], err = prepareFiling(d.Filing); err != nil {
			return nil, nil, err
		}
		for _, m := range d.Then {
			p, err := prepareEnqueue(m, now, nil)
			if err != nil {
				return nil, nil, err
			}
			then[i] = append(then[i], p)
		}
	}
	res, errs = make([]AppendResult, len(ds)), make([]error, len(ds))
	err = s.tx(ctx, func(tx *txn) error {
		for i, f := range prepared {
			res[i], errs[i] = AppendResult{}, nil
			err := savepoint(ctx, tx, func() error {
				var err error
				res[i], err = f.file(ctx, tx)
				return err
			})
			switch {
			case errors.Is(err, ErrNotFound) || errors.Is(err, ErrOverQuota):
				errs[i] = fmt.Errorf("deliver to %s %s: %w", f.addr, f.mailbox, err)
				continue
			case err != nil:
				return fmt.Errorf("deliver to %s %s: %w", f.addr, f.mailbox, err)
			}
			for _, p := range then[i] {
				if _, err := insertQueued(ctx, tx, p); err != nil {
					return fmt.Errorf("enqueue after delivery to %s: %w", f.addr, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return res, errs, nil
}

// Filing is a message to file in a mailbox of a local address, as Deliver
// does: see Queue.EnqueueWith, which files it in the transaction that
// queues another message.
type Filing struct {
	Address string
	Mailbox string // "": INBOX; made when missing
	Message []byte
	Flags   []string
	Date    time.Time // zero: now
}

// preparedFiling is a Filing checked and normalized.
type preparedFiling struct {
	addr, mailbox string
	msg           []byte
	flags         flagSet
	date          time.Time
}

func prepareFiling(f Filing) (*preparedFiling, error) {
	addr, _, err := NormalizeAddress(f.Address)
	if err != nil {
		return nil, fmt.Errorf("deliver: %w", err)
	}
	if f.Mailbox == "" {
		f.Mailbox = Inbox
	}
	name, err := NormalizeMailboxName(f.Mailbox)
	if err != nil {
		return nil, fmt.Errorf("deliver to %s: %w", addr, err)
	}
	fs, err := parseFlags(f.Flags)
	if err != nil {
		return nil, fmt.Errorf("deliver to %s: %w", addr, err)
	}
	return &preparedFiling{addr: addr, mailbox: name, msg: f.Message, flags: fs, date: f.Date}, nil
}

// file files the message in tx, making the mail account on first use.
func (f *preparedFiling) file(ctx context.Context, tx *txn) (AppendResult, error) {
	a, err := ensureMailAccount(ctx, tx, f.addr)
	if err != nil {
		return AppendResult{}, err
	}
	return appendMessage(ctx, tx, a.ID, f.mailbox, true, f.msg, f.flags, f.date)
}

// Append files a message in an existing mailbox of an account, like
// Deliver; an error wrapping ErrNotFound if there is no such mailbox.
func (s *Store) Append(ctx context.Context, account int64, mailbox string, msg []byte, flags []string, date time.Time) (AppendResult, error) {
	name, err := NormalizeMailboxName(mailbox)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append: %w", err)
	}
	fs, err := parseFlags(flags)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", name, err)
	}
	var res AppendResult
	err = s.tx(ctx, func(tx *txn) error {
		res, err = appendMessage(ctx, tx, account, name, false, msg, fs, date)
		return err
	})
	if err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", name, err)
	}
	return res, nil
}

func appendMessage(ctx context.Context, tx *txn, account int64, name string, create bool, msg []byte, fs flagSet, date time.Time) (AppendResult, error) {
	if len(msg) == 0 {
		return AppendResult{}, errors.New("empty message")
	}
	if err := lockMail(ctx, tx); err != nil {
		return AppendResult{}, err
	}
	m, err := getMailbox(ctx, tx, account, name)
	if errors.Is(err, ErrNotFound) && create {
		m, err = createMailbox(ctx, tx, account, name, "")
	}
	if err != nil {
		return AppendResult{}, err
	}
	if m.UIDNext == math.MaxUint32 { // no UID left (scanMailbox)
		return AppendResult{}, fmt.Errorf("mailbox %s: UIDs exhausted", name)
	}
	if err := checkQuota(ctx, tx, account, int64(len(msg))); err != nil {
		return AppendResult{}, err
	}
	if date.IsZero() {
		date = time.Now()
	}
	modSeq, err := nextModSeq(ctx, tx)
	if err != nil {
		return AppendResult{}, err
	}
	var bodyID int64
	if bodyID, err = insertID(ctx, tx, `INSERT INTO mail_bodies (header_size, data) VALUES (?, ?)`,
		mailHeaderSize(msg), msg); err != nil {
		return AppendResult{}, fmt.Errorf("store message body: %w", err)
	}
	if err := insertMessage(ctx, tx, m.ID, m.UIDNext, bodyID, int64(len(msg)), date, modSeq, fs); err != nil {
		return AppendResult{}, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET uidnext = uidnext + 1, size = size + ?, modseq = ? WHERE id = ?`,
		len(msg), modSeq, m.ID); err != nil {
		return AppendResult{}, fmt.Errorf("update mailbox %s: %w", name, err)
	}
	return AppendResult{MailboxID: m.ID, UIDValidity: m.UIDValidity, UID: m.UIDNext}, nil
}

func insertMessage(ctx context.Context, tx *txn, mailboxID int64, uid uint32, bodyID, size int64, date time.Time, modSeq int64, fs flagSet) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO messages (mailbox_id, uid, body_id, size, internal_date, modseq,
		seen, answered, flagged, deleted, draft, keywords) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		mailboxID, int64(uid), bodyID, size, millis(date), modSeq,
		b2i(fs.seen), b2i(fs.answered), b2i(fs.flagged), b2i(fs.deleted), b2i(fs.draft), strings.Join(fs.keywords, " "))
	if err != nil {
		return fmt.Errorf("store message: %w", err)
	}
	return nil
}

// checkQuota returns an error wrapping ErrOverQuota if adding bytes would
// take the account over its quota (its own, else the default).
func checkQuota(ctx context.Context, tx *txn, account, add int64) error {
	var quota, used int64
	err := tx.QueryRowContext(ctx, `SELECT a.quota, (SELECT COALESCE(SUM(b.size), 0) FROM mailboxes b WHERE b.account_id = a.id)
		FROM mail_accounts a WHERE a.id = ?`, account).Scan(&quota, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("mail account %d: %w", account, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("read quota: %w", err)
	}
	quota = effectiveQuota(quota, tx.defaultQuota)
	if quota > 0 && used+add > quota {
		return fmt.Errorf("%w: %d of %d bytes used, %d more", ErrOverQuota, used, quota, add)
	}
	return nil
}

// checkMailbox returns the mailbox of an account by id, ErrNotFound if the
// account has no such mailbox.
func checkMailbox(ctx context.Context, q queryer, account, mailboxID int64) (Mailbox, error) {
	return getMailboxByID(ctx, q, account, mailboxID)
}

// MessageUIDs returns the UIDs of the messages of a mailbox, in order.
func (s *Store) MessageUIDs(ctx context.Context, account, mailboxID int64) ([]uint32, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT m.uid FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
		WHERE m.mailbox_id = ? AND b.account_id = ? ORDER BY m.uid`, mailboxID, account)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return scanUIDs(rows)
}

func scanUIDs(rows *sql.Rows) ([]uint32, error) {
	defer rows.Close()
	out := []uint32{}
	for rows.Next() {
		var uid int64
		if err := rows.Scan(&uid); err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		out = append(out, uint32(uid))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return out, nil
}

// Messages returns the metadata of the messages of a mailbox with UIDs from
// first to last (inclusive), in order.
func (s *Store) Messages(ctx context.Context, account, mailboxID int64, first, last uint32) ([]MailMessage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+mailColumns+` FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
		WHERE m.mailbox_id = ? AND b.account_id = ? AND m.uid >= ? AND m.uid <= ? ORDER BY m.uid`,
		mailboxID, account, int64(first), int64(last))
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer rows.Close()
	var out []MailMessage
	for rows.Next() {
		m, _, err := scanMail(rows)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return out, nil
}

// MessageBody returns a message as stored; an error wrapping ErrNotFound if
// it is not (any more) there.
func (s *Store) MessageBody(ctx context.Context, account, mailboxID int64, uid uint32) ([]byte, error) {
	return s.messageData(ctx, `b.data`, account, mailboxID, uid)
}

// MessageHeader returns the header of a message as stored, with the empty
// line that ends it.
func (s *Store) MessageHeader(ctx context.Context, account, mailboxID int64, uid uint32) ([]byte, error) {
	return s.messageData(ctx, `substr(b.data, 1, CAST(b.header_size AS INTEGER))`, account, mailboxID, uid)
}

// MessageHeaders returns the headers of the messages of a mailbox with
// UIDs from first to last (inclusive), by UID, in one query.
func (s *Store) MessageHeaders(ctx context.Context, account, mailboxID int64, first, last uint32) (map[uint32][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT m.uid, substr(b.data, 1, CAST(b.header_size AS INTEGER)) FROM messages m
		JOIN mailboxes x ON x.id = m.mailbox_id JOIN mail_bodies b ON b.id = m.body_id
		WHERE m.mailbox_id = ? AND x.account_id = ? AND m.uid >= ? AND m.uid <= ?`,
		mailboxID, account, int64(first), int64(last))
	if err != nil {
		return nil, fmt.Errorf("read message headers: %w", err)
	}
	defer rows.Close()
	out := make(map[uint32][]byte)
	for rows.Next() {
		var uid int64
		var h []byte
		if err := rows.Scan(&uid, &h); err != nil {
			return nil, fmt.Errorf("read message headers: %w", err)
		}
		out[uint32(uid)] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read message headers: %w", err)
	}
	return out, nil
}

func (s *Store) messageData(ctx context.Context, expr string, account, mailboxID int64, uid uint32) ([]byte, error) {
	var data []byte
	err := s.db.QueryRowContext(ctx, `SELECT `+expr+` FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id
		JOIN mail_bodies b ON b.id = m.body_id WHERE m.mailbox_id = ? AND x.account_id = ? AND m.uid = ?`,
		mailboxID, account, int64(uid)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("message %d: %w", uid, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read message %d: %w", uid, err)
	}
	return data, nil
}

// MailboxKeywords returns the keywords that messages of a mailbox carry.
func (s *Store) MailboxKeywords(ctx context.Context, account, mailboxID int64) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT m.keywords FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
		WHERE m.mailbox_id = ? AND b.account_id = ? AND m.keywords <> ''`, mailboxID, account)
	if err != nil {
		return nil, fmt.Errorf("list keywords: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var kw string
		if err := rows.Scan(&kw); err != nil {
			return nil, fmt.Errorf("list keywords: %w", err)
		}
		for _, k := range strings.Split(kw, " ") {
			out = addKeyword(out, k)
		}
	}
	return out, rows.Err()
}

// StoreFlags changes the flags of messages of a mailbox and returns those
// messages that exist, with their flags after the change. Messages whose
// flags change get a new modification sequence.
func (s *Store) StoreFlags(ctx context.Context, account, mailboxID int64, uids []uint32, op FlagOp, flags []string) ([]MailMessage, error) {
	fs, err := parseFlags(flags)
	if err != nil {
		return nil, fmt.Errorf("store flags: %w", err)
	}
	var out []MailMessage
	err = s.tx(ctx, func(tx *txn) error {
		if err := lockMail(ctx, tx); err != nil {
			return err
		}
		if _, err := checkMailbox(ctx, tx, account, mailboxID); err != nil {
			return err
		}
		get, err := tx.PrepareContext(ctx, `SELECT `+mailColumns+` FROM messages m WHERE m.mailbox_id = ? AND m.uid = ?`)
		if err != nil {
			return err
		}
		defer get.Close()
		set, err := tx.PrepareContext(ctx, `UPDATE messages SET seen = ?, answered = ?, flagged = ?, deleted = ?, draft = ?,
			keywords = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?`)
		if err != nil {
			return err
		}
		defer set.Close()
		var modSeq int64
		for _, uid := range uids {
			m, old, err := scanMail(get.QueryRowContext(ctx, mailboxID, int64(uid)))
			if errors.Is(err, sql.ErrNoRows) {
				continue
			} else if err != nil {
				return fmt.Errorf("read message %d: %w", uid, err)
			}
			nf := old.apply(op, fs)
			if len(nf.keywords) > MaxKeywords {
				return fmt.Errorf("%w: message %d: more than %d keywords", ErrBadFlag, uid, MaxKeywords)
			}
			if !nf.equal(old) {
				if modSeq == 0 {
					if modSeq, err = nextModSeq(ctx, tx); err != nil {
						return err
					}
				}
				_, err := set.ExecContext(ctx, b2i(nf.seen), b2i(nf.answered), b2i(nf.flagged), b2i(nf.deleted), b2i(nf.draft),
					strings.Join(nf.keywords, " "), modSeq, mailboxID, int64(uid))
				if err != nil {
					return fmt.Errorf("store flags of message %d: %w", uid, err)
				}
				m.Flags, m.ModSeq = nf.list(), modSeq
			}
			out = append(out, m)
		}
		if modSeq != 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET modseq = ? WHERE id = ?`, modSeq, mailboxID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store flags: %w", err)
	}
	return out, nil
}

// Expunge removes the messages of a mailbox that carry \Deleted, only those
// among uids unless uids is nil, and returns their UIDs in order.
func (s *Store) Expunge(ctx context.Context, account, mailboxID int64, uids []uint32) ([]uint32, error) {
	var out []uint32
	err := s.tx(ctx, func(tx *txn) error {
		if err := lockMail(ctx, tx); err != nil {
			return err
		}
		if _, err := checkMailbox(ctx, tx, account, mailboxID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT uid, size FROM messages WHERE mailbox_id = ? AND deleted = 1 ORDER BY uid`, mailboxID)
		if err != nil {
			return err
		}
		var size int64
		var want map[uint32]bool
		if uids != nil {
			want = make(map[uint32]bool, len(uids))
			for _, u := range uids {
				want[u] = true
			}
		}
		for rows.Next() {
			var uid, n int64
			if err := rows.Scan(&uid, &n); err != nil {
				rows.Close()
				return err
			}
			if want == nil || want[uint32(uid)] {
				out = append(out, uint32(uid))
				size += n
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		return removeMessages(ctx, tx, mailboxID, out, size)
	})
	if err != nil {
		return nil, fmt.Errorf("expunge: %w", err)
	}
	return out, nil
}

// removeMessages deletes messages (their bodies go with the last of them)
// and updates the mailbox's size and modification sequence.
func removeMessages(ctx context.Context, tx *txn, mailboxID int64, uids []uint32, size int64) error {
	del, err := tx.PrepareContext(ctx, `DELETE FROM messages WHERE mailbox_id = ? AND uid = ?`)
	if err != nil {
		return err
	}
	defer del.Close()
	for _, uid := range uids {
		if _, err := del.ExecContext(ctx, mailboxID, int64(uid)); err != nil {
			return fmt.Errorf("remove message %d: %w", uid, err)
		}
	}
	modSeq, err := nextModSeq(ctx, tx)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE mailboxes SET size = size - ?, modseq = ? WHERE id = ?`, size, modSeq, mailboxID)
	return err
}

// CopyResult says where CopyMessages put messages: SourceUIDs[i] became
// DestUIDs[i] in the destination mailbox.
type CopyResult struct {
	MailboxID   int64
	UIDValidity uint32
	SourceUIDs  []uint32
	DestUIDs    []uint32
}

// CopyMessages copies messages of a mailbox (those of uids that exist) to
// another mailbox of the same account, with their flags and internal
// dates, sharing their stored bodies. With move, the messages leave the
// source mailbox in the same transaction (RFC 6851 MOVE). It returns an
// error wrapping ErrNotFound if the destination does not exist,
// ErrOverQuota if a copy would take the account over its quota.
func (s *Store) CopyMessages(ctx context.Context, account, mailboxID int64, uids []uint32, dest string, move bool) (CopyResult, error) {
	name, err := NormalizeMailboxName(dest)
	if err != nil {
		return CopyResult{}, err
	}
	var res CopyResult
	err = s.tx(ctx, func(tx *txn) error {
		if err := lockMail(ctx, tx); err != nil {
			return err
		}
		if _, err := checkMailbox(ctx, tx, account, mailboxID); err != nil {
			return err
		}
		d, err := getMailbox(ctx, tx, account, name)
		if err != nil {
			return err
		}
		if move && d.ID == mailboxID {
			return fmt.Errorf("move to the same mailbox: %w", ErrMailboxRule)
		}
		get, err := tx.PrepareContext(ctx, `SELECT body_id, size, internal_date, seen, answered, flagged, deleted, draft, keywords
			FROM messages WHERE mailbox_id = ? AND uid = ?`)
		if err != nil {
			return err
		}
		defer get.Close()
		type row struct {
			uid    uint32
			bodyID int64
			size   int64
			date   int64
			fs     flagSet
		}
		var msgs []row
		var size int64
		sorted := slices.Clone(uids)
		slices.Sort(sorted)
		sorted = slices.Compact(sorted)
		for _, uid := range sorted {
			r := row{uid: uid}
			var seen, answered, flagged, deleted, draft int
			var kw string
			err := get.QueryRowContext(ctx, mailboxID, int64(uid)).Scan(&r.bodyID, &r.size, &r.date, &seen, &answered, &flagged, &deleted, &draft, &kw)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			} else if err != nil {
				return fmt.Errorf("read message %d: %w", uid, err)
			}
			r.fs = flagSet{seen: seen != 0, answered: answered != 0, flagged: flagged != 0, deleted: deleted != 0, draft: draft != 0}
			if kw != "" {
				r.fs.keywords = strings.Split(kw, " ")
			}
			msgs = append(msgs, r)
			size += r.size
		}
		res = CopyResult{MailboxID: d.ID, UIDValidity: d.UIDValidity}
		if len(msgs) == 0 {
			return nil
		}
		if uint64(d.UIDNext)+uint64(len(msgs)) >= math.MaxUint32 {
			return fmt.Errorf("mailbox %s: UIDs exhausted", d.Name)
		}
		if !move {
			if err := checkQuota(ctx, tx, account, size); err != nil {
				return err
			}
		}
		modSeq, err := nextModSeq(ctx, tx)
		if err != nil {
			return err
		}
		uid := d.UIDNext
		for _, r := range msgs {
			if err := insertMessage(ctx, tx, d.ID, uid, r.bodyID, r.size, fromMillis(r.date), modSeq, r.fs); err != nil {
				return err
			}
			res.SourceUIDs = append(res.SourceUIDs, r.uid)
			res.DestUIDs = append(res.DestUIDs, uid)
			uid++
		}
		if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET uidnext = ?, size = size + ?, modseq = ? WHERE id = ?`,
			int64(uid), size, modSeq, d.ID); err != nil {
			return err
		}
		if move {
			return removeMessages(ctx, tx, mailboxID, res.SourceUIDs, size)
		}
		return nil
	})
	if err != nil {
		op := "copy"
		if move {
			op = "move"
		}
		return CopyResult{}, fmt.Errorf("%s messages to %s: %w", op, name, err)
	}
	return res, nil
}

// MailboxChanges is what changed in a mailbox after a modification
// sequence, as seen by a reader that knows the mailbox up to a UID.
type MailboxChanges struct {
	ModSeq   int64         // of the mailbox, read before the rest
	Gone     bool          // the mailbox is no more
	Expunged bool          // messages up to the known UID went; Present has those that remain
	Present  []uint32      // with Expunged: the UIDs up to the known UID, in order
	Flags    []MailMessage // messages up to the known UID changed after the modification sequence
	New      []uint32      // UIDs after the known UID, in order
}

// MailboxChanges returns what changed in a mailbox of an account after
// modification sequence since, for a reader that knows count messages with
// UIDs up to lastUID. A reader that applies the changes and then remembers
// the returned ModSeq misses nothing; it may see a change twice.
func (s *Store) MailboxChanges(ctx context.Context, account, mailboxID int64, since int64, lastUID uint32, count int) (MailboxChanges, error) {
	var ch MailboxChanges
	err := s.db.QueryRowContext(ctx, `SELECT modseq FROM mailboxes WHERE id = ? AND account_id = ?`, mailboxID, account).Scan(&ch.ModSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return MailboxChanges{Gone: true}, nil
	} else if err != nil {
		return MailboxChanges{}, fmt.Errorf("read mailbox %d: %w", mailboxID, err)
	}
	if ch.ModSeq == since {
		return ch, nil
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM messages WHERE mailbox_id = ? AND uid <= ?`, mailboxID, int64(lastUID)).Scan(&n); err != nil {
		return MailboxChanges{}, fmt.Errorf("count messages of mailbox %d: %w", mailboxID, err)
	}
	if n != count {
		rows, err := s.db.QueryContext(ctx, `SELECT uid FROM messages WHERE mailbox_id = ? AND uid <= ? ORDER BY uid`, mailboxID, int64(lastUID))
		if err != nil {
			return MailboxChanges{}, fmt.Errorf("list messages of mailbox %d: %w", mailboxID, err)
		}
		if ch.Present, err = scanUIDs(rows); err != nil {
			return MailboxChanges{}, err
		}
		ch.Expunged = true
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+mailColumns+` FROM messages m WHERE m.mailbox_id = ? AND m.modseq > ? AND m.uid <= ? ORDER BY m.uid`,
		mailboxID, since, int64(lastUID))
	if err != nil {
		return MailboxChanges{}, fmt.Errorf("list changed messages of mailbox %d: %w", mailboxID, err)
	}
	defer rows.Close()
	for rows.Next() {
		m, _, err := scanMail(rows)
		if err != nil {
			return MailboxChanges{}, fmt.Errorf("list changed messages of mailbox %d: %w", mailboxID, err)
		}
		ch.Flags = append(ch.Flags, m)
	}
	if err := rows.Err(); err != nil {
		return MailboxChanges{}, fmt.Errorf("list changed messages of mailbox %d: %w", mailboxID, err)
	}
	rows, err = s.db.QueryContext(ctx, `SELECT uid FROM messages WHERE mailbox_id = ? AND uid > ? ORDER BY uid`, mailboxID, int64(lastUID))
	if err != nil {
		return MailboxChanges{}, fmt.Errorf("list new messages of mailbox %d: %w", mailboxID, err)
	}
	if ch.New, err = scanUIDs(rows); err != nil {
		return MailboxChanges{}, err
	}
	return ch, nil
}
