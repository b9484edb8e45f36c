package store

// Mail storage for IMAP: mail accounts, mailboxes and messages.
//
// A local address gets a mail account on first use (MailAccount, Deliver),
// with an INBOX and a Sent mailbox. Everything else is reached through the
// account id, never through the address alone, so a session of a removed
// address cannot reach the mailboxes of a new account of the same name.
// Mailbox names are UTF-8 with "/" as the hierarchy delimiter; INBOX is
// case-insensitive. Bodies are stored once, byte for byte as given (a BLOB
// in the database, written with the transaction that files the message, so
// a delivered message is durable when Deliver returns).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrOverQuota is returned (wrapped) when a message would take a mail
// account over its quota.
var ErrOverQuota = errors.New("mail quota exceeded")

// ErrBadMailboxName is returned (wrapped) for a mailbox name that is not
// valid: empty, with empty hierarchy levels, wildcards or control
// characters, not UTF-8, or too long.
var ErrBadMailboxName = errors.New("invalid mailbox name")

// ErrMailboxRule is returned (wrapped) for a change the mailbox rules do not
// allow: deleting INBOX or a mailbox with children, renaming a mailbox into
// itself, moving messages to the mailbox they are in.
var ErrMailboxRule = errors.New("not allowed")

// ErrHasChildren is returned (wrapped) when deleting a mailbox that has
// mailboxes inside; it is an ErrMailboxRule.
var ErrHasChildren = fmt.Errorf("mailbox has mailboxes inside: %w", ErrMailboxRule)

// ErrBadFlag is returned (wrapped) for an invalid keyword or too many of
// them.
var ErrBadFlag = errors.New("invalid flag")

// Mailbox names and the hierarchy delimiter.
const (
	Inbox        = "INBOX"
	Sent         = "Sent"
	MailboxDelim = '/'

	// MaxMailboxName is the longest mailbox name, in bytes.
	MaxMailboxName = 255
)

// Special-use attributes of mailboxes (RFC 6154).
var specialUses = []string{`\All`, `\Archive`, `\Drafts`, `\Flagged`, `\Junk`, `\Sent`, `\Trash`}

// defaultMailboxes are made with every mail account.
var defaultMailboxes = []struct{ name, specialUse string }{{Inbox, ""}, {Sent, `\Sent`}}

// NormalizeMailboxName checks a mailbox name and returns it in its stored
// form: INBOX (in any case) as the first level becomes "INBOX", and
// trailing delimiters are dropped.
func NormalizeMailboxName(name string) (string, error) {
	n := strings.TrimRight(name, string(MailboxDelim))
	if n == "" {
		return "", fmt.Errorf("%w: empty", ErrBadMailboxName)
	}
	if len(n) > MaxMailboxName {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadMailboxName, MaxMailboxName)
	}
	if !utf8.ValidString(n) {
		return "", fmt.Errorf("%w: not UTF-8", ErrBadMailboxName)
	}
	for _, c := range n {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || c == '*' || c == '%' || c == utf8.RuneError {
			return "", fmt.Errorf("%w: character %q", ErrBadMailboxName, c)
		}
	}
	levels := strings.Split(n, string(MailboxDelim))
	for _, l := range levels {
		if l == "" || l == "." || l == ".." || strings.TrimSpace(l) != l {
			return "", fmt.Errorf("%w: empty level, \".\", \"..\" or surrounding spaces in %q", ErrBadMailboxName, name)
		}
	}
	if strings.EqualFold(levels[0], Inbox) {
		levels[0] = Inbox
	}
	return strings.Join(levels, string(MailboxDelim)), nil
}

// MailAccount is the mail storage of a local address.
type MailAccount struct {
	ID      int64 // never reused, also not by a later account of the same address
	Address string
	Quota   int64 // bytes over all mailboxes that apply; 0: no limit
	// QuotaDefault is set when the account has no quota of its own and
	// Quota is the default ([limits] mailbox_quota, SetDefaultQuota).
	QuotaDefault bool
	Used         int64 // bytes in all mailboxes
	Created      time.Time
}

// MailAccount returns the mail account of a local address, making it with
// an INBOX and a Sent mailbox on first use. It returns an error wrapping
// ErrNotFound if the address does not exist.
func (s *Store) MailAccount(ctx context.Context, address string) (MailAccount, error) {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		return MailAccount{}, err
	}
	a, err := getMailAccount(ctx, s.db, addr)
	if errors.Is(err, ErrNotFound) {
		err = s.tx(ctx, func(tx *txn) error {
			a, err = ensureMailAccount(ctx, tx, addr)
			return err
		})
	}
	if err != nil {
		return MailAccount{}, fmt.Errorf("mail account: %w", err)
	}
	def := s.defaultQuota.Load()
	a.QuotaDefault = a.Quota == QuotaDefault
	a.Quota = effectiveQuota(a.Quota, def)
	return a, nil
}

// The quota values of SetQuota besides a number of bytes.
const (
	// QuotaDefault: the account follows the default quota.
	QuotaDefault = 0
	// QuotaNone: the account has no quota, whatever the default.
	QuotaNone = -1
)

// SetDefaultQuota sets the quota of every mail account without one of its
// own ([limits] mailbox_quota), in bytes; 0: no limit. Mail already stored
// stays; deliveries, APPEND and COPY over it are refused (ErrOverQuota).
func (s *Store) SetDefaultQuota(bytes int64) {
	s.defaultQuota.Store(max(bytes, 0))
}

// effectiveQuota is the quota that applies to an account whose own quota
// column holds own: own if positive, none for QuotaNone, else the default.
func effectiveQuota(own, def int64) int64 {
	switch {
	case own > 0:
		return own
	case own == QuotaNone:
		return 0
	}
	return def
}

func getMailAccount(ctx context.Context, q queryer, addr string) (MailAccount, error) {
	a := MailAccount{Address: addr}
	var created int64
	err := q.QueryRowContext(ctx, `SELECT a.id, a.quota, a.created,
		(SELECT COALESCE(SUM(b.size), 0) FROM mailboxes b WHERE b.account_id = a.id)
		FROM mail_accounts a WHERE a.address = ?`, addr).Scan(&a.ID, &a.Quota, &created, &a.Used)
	if errors.Is(err, sql.ErrNoRows) {
		return MailAccount{}, fmt.Errorf("mail account of %s: %w", addr, ErrNotFound)
	} else if err != nil {
		return MailAccount{}, fmt.Errorf("read mail account of %s: %w", addr, err)
	}
	a.Created = fromMillis(created)
	return a, nil
}

// ensureMailAccount returns the account of addr, making it if needed.
func ensureMailAccount(ctx context.Context, tx *txn, addr string) (MailAccount, error) {
	a, err := getMailAccount(ctx, tx, addr)
	if !errors.Is(err, ErrNotFound) {
		return a, err
	}
	// Two nodes filing the first mail of an address make one account: the
	// second looks again once the first has committed.
	if err := lockMail(ctx, tx); err != nil {
		return MailAccount{}, err
	}
	if a, err = getMailAccount(ctx, tx, addr); !errors.Is(err, ErrNotFound) {
		return a, err
	}
	if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM addresses WHERE address = ?`, addr); err != nil {
		return MailAccount{}, err
	} else if !ok {
		return MailAccount{}, fmt.Errorf("address %s: %w", addr, ErrNotFound)
	}
	now := time.Now()
	a = MailAccount{Address: addr, Created: fromMillis(millis(now))}
	err = tx.QueryRowContext(ctx, `INSERT INTO mail_accounts (address, quota, created) VALUES (?, 0, ?) RETURNING id`,
		addr, millis(now)).Scan(&a.ID)
	if err != nil {
		return MailAccount{}, fmt.Errorf("add mail account of %s: %w", addr, err)
	}
	for _, m := range defaultMailboxes {
		if _, err := createMailbox(ctx, tx, a.ID, m.name, m.specialUse); err != nil {
			return MailAccount{}, err
		}
	}
	return a, nil
}

// SetQuota sets the quota of the mail account of an address in bytes over
// all its mailboxes; QuotaDefault (0) makes it follow the default
// (SetDefaultQuota), QuotaNone (-1) gives it no limit. Mail already stored
// stays.
func (s *Store) SetQuota(ctx context.Context, address string, bytes int64) error {
	addr, _, err := NormalizeAddress(address)
	if err != nil {
		return err
	}
	if bytes < QuotaNone {
		return fmt.Errorf("quota of %s: negative", addr)
	}
	err = s.tx(ctx, func(tx *txn) error {
		a, err := ensureMailAccount(ctx, tx, addr)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE mail_accounts SET quota = ? WHERE id = ?`, bytes, a.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	return nil
}

// Mailbox is one mailbox of a mail account.
type Mailbox struct {
	ID          int64 // never reused
	Account     int64
	Name        string
	UIDValidity uint32
	UIDNext     uint32
	ModSeq      int64 // of the newest change to the mailbox or its messages
	Size        int64 // bytes of its messages
	Subscribed  bool
	SpecialUse  string // "" or an RFC 6154 attribute such as `\Sent`
}

const mailboxColumns = `id, account_id, name, uidvalidity, uidnext, modseq, size, subscribed, special_use`

func scanMailbox(r rowScanner) (Mailbox, error) {
	var m Mailbox
	var uidValidity, uidNext int64
	var subscribed int
	if err := r.Scan(&m.ID, &m.Account, &m.Name, &uidValidity, &uidNext, &m.ModSeq, &m.Size, &subscribed, &m.SpecialUse); err != nil {
		return Mailbox{}, err
	}
	m.UIDValidity = uint32(uidValidity)
	// The UID after the last one a mailbox can give (RFC 9051: UIDs are
	// 32-bit) reads as the largest, which refuses the next append.
	m.UIDNext = uint32(min(uidNext, math.MaxUint32))
	m.Subscribed = subscribed != 0
	return m, nil
}

// getMailbox reads a mailbox by its normalized name.
func getMailbox(ctx context.Context, q queryer, account int64, name string) (Mailbox, error) {
	m, err := scanMailbox(q.QueryRowContext(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? AND name = ?`, account, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Mailbox{}, fmt.Errorf("mailbox %s: %w", name, ErrNotFound)
	} else if err != nil {
		return Mailbox{}, fmt.Errorf("read mailbox %s: %w", name, err)
	}
	return m, nil
}

// getMailboxByID reads a mailbox of an account by id.
func getMailboxByID(ctx context.Context, q queryer, account, id int64) (Mailbox, error) {
	m, err := scanMailbox(q.QueryRowContext(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? AND id = ?`, account, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Mailbox{}, fmt.Errorf("mailbox %d: %w", id, ErrNotFound)
	} else if err != nil {
		return Mailbox{}, fmt.Errorf("read mailbox %d: %w", id, err)
	}
	return m, nil
}

// Mailbox returns a mailbox of an account by name; an error wrapping
// ErrNotFound if there is none.
func (s *Store) Mailbox(ctx context.Context, account int64, name string) (Mailbox, error) {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return Mailbox{}, err
	}
	return getMailbox(ctx, s.db, account, n)
}

// MailboxByID returns a mailbox of an account by id; an error wrapping
// ErrNotFound if the account has no such mailbox (any more).
func (s *Store) MailboxByID(ctx context.Context, account, id int64) (Mailbox, error) {
	return getMailboxByID(ctx, s.db, account, id)
}

// Mailboxes returns the mailboxes of an account, by name.
func (s *Store) Mailboxes(ctx context.Context, account int64) ([]Mailbox, error) {
	return queryAll(ctx, s.db, "list mailboxes", scanMailbox, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? ORDER BY name`, account)
}

// MailboxStatus is a mailbox with counts of its messages.
type MailboxStatus struct {
	Mailbox
	Messages       uint32
	Unseen         uint32 // without \Seen
	Deleted        uint32 // with \Deleted
	FirstUnseenUID uint32 // 0: none
}

// MailboxStatus returns a mailbox of an account by name with counts of its
// messages.
func (s *Store) MailboxStatus(ctx context.Context, account int64, name string) (MailboxStatus, error) {
	m, err := s.Mailbox(ctx, account, name)
	if err != nil {
		return MailboxStatus{}, err
	}
	return s.mailboxStatus(ctx, m)
}

// MailboxStatusByID is MailboxStatus for a mailbox of an account by id.
func (s *Store) MailboxStatusByID(ctx context.Context, account, id int64) (MailboxStatus, error) {
	m, err := s.MailboxByID(ctx, account, id)
	if err != nil {
		return MailboxStatus{}, err
	}
	return s.mailboxStatus(ctx, m)
}

func (s *Store) mailboxStatus(ctx context.Context, m Mailbox) (MailboxStatus, error) {
	st := MailboxStatus{Mailbox: m}
	var firstUnseen sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(1 - seen), 0), COALESCE(SUM(deleted), 0),
		MIN(CASE WHEN seen = 0 THEN uid END) FROM messages WHERE mailbox_id = ?`, m.ID).
		Scan(&st.Messages, &st.Unseen, &st.Deleted, &firstUnseen)
	if err != nil {
		return MailboxStatus{}, fmt.Errorf("count messages of %s: %w", m.Name, err)
	}
	st.FirstUnseenUID = uint32(firstUnseen.Int64)
	return st, nil
}

// nextModSeq takes the next modification sequence.
func nextModSeq(ctx context.Context, tx *txn) (int64, error) {
	var v int64
	if !tx.sqlite() {
		// One round trip on PostgreSQL.
		if err := tx.QueryRowContext(ctx, `UPDATE mail_state SET modseq = modseq + 1 WHERE id = 1 RETURNING modseq`).Scan(&v); err != nil {
			return 0, fmt.Errorf("next modification sequence: %w", err)
		}
		return v, nil
	}
	// On SQLite an UPDATE and a SELECT rather than UPDATE ... RETURNING,
	// which costs it a temporary b-tree per statement (insertID).
	if _, err := tx.ExecContext(ctx, `UPDATE mail_state SET modseq = modseq + 1 WHERE id = 1`); err != nil {
		return 0, fmt.Errorf("next modification sequence: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT modseq FROM mail_state WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("next modification sequence: %w", err)
	}
	return v, nil
}

// lockMail makes the transaction the only one changing mail until it ends,
// on every node: PostgreSQL locks the mail_state row (SQLite's write
// transactions hold its one write lock already). A transaction that reads
// a mailbox to change it (its next UID, its size against the quota) calls
// it before reading, so that two nodes filing into one mailbox take turns
// as two transactions of one process do, instead of both taking one UID.
func lockMail(ctx context.Context, tx *txn) error {
	// Taken again by each caller: cheap on a row the transaction holds,
	// and a savepoint rolled back (fileUnder) gives up what it took.
	return lockRow(ctx, tx, "mail_state", 1)
}

// nextUIDValidity takes the next UIDVALIDITY: the current time in seconds,
// or one more than the last one given out if that is later, so values only
// grow, also across a removed and re-created account.
func nextUIDValidity(ctx context.Context, tx *txn) (uint32, error) {
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT uidvalidity FROM mail_state WHERE id = 1`).Scan(&last); err != nil {
		return 0, fmt.Errorf("read UIDVALIDITY: %w", err)
	}
	v := max(last+1, time.Now().Unix())
	if v > math.MaxUint32 {
		return 0, errors.New("UIDVALIDITY values exhausted")
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mail_state SET uidvalidity = ? WHERE id = 1`, v); err != nil {
		return 0, fmt.Errorf("move UIDVALIDITY: %w", err)
	}
	return uint32(v), nil
}

// createMailbox makes a mailbox with a normalized name, and its missing
// parents. It returns an error wrapping ErrExists if it is already there.
func createMailbox(ctx context.Context, tx *txn, account int64, name, specialUse string) (Mailbox, error) {
	if specialUse != "" {
		ok := false
		for _, u := range specialUses {
			if strings.EqualFold(u, specialUse) {
				specialUse, ok = u, true
			}
		}
		if !ok {
			return Mailbox{}, fmt.Errorf("mailbox %s: unknown special use %q", name, specialUse)
		}
	}
	if err := createParents(ctx, tx, account, name); err != nil {
		return Mailbox{}, err
	}
	if _, err := getMailbox(ctx, tx, account, name); err == nil {
		return Mailbox{}, fmt.Errorf("mailbox %s: %w", name, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return Mailbox{}, err
	}
	return insertMailbox(ctx, tx, account, name, specialUse)
}

// createParents makes the missing parents of a normalized mailbox name.
func createParents(ctx context.Context, tx *txn, account int64, name string) error {
	levels := strings.Split(name, string(MailboxDelim))
	for i := 1; i < len(levels); i++ {
		parent := strings.Join(levels[:i], string(MailboxDelim))
		if _, err := getMailbox(ctx, tx, account, parent); errors.Is(err, ErrNotFound) {
			if _, err := insertMailbox(ctx, tx, account, parent, ""); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	return nil
}

func insertMailbox(ctx context.Context, tx *txn, account int64, name, specialUse string) (Mailbox, error) {
	uidValidity, err := nextUIDValidity(ctx, tx)
	if err != nil {
		return Mailbox{}, err
	}
	modSeq, err := nextModSeq(ctx, tx)
	if err != nil {
		return Mailbox{}, err
	}
	m := Mailbox{Account: account, Name: name, UIDValidity: uidValidity, UIDNext: 1, ModSeq: modSeq,
		Subscribed: true, SpecialUse: specialUse}
	err = tx.QueryRowContext(ctx, `INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, modseq, size, subscribed, special_use, created)
		VALUES (?, ?, ?, 1, ?, 0, 1, ?, ?) RETURNING id`,
		account, name, int64(uidValidity), modSeq, specialUse, millis(time.Now())).Scan(&m.ID)
	if err != nil {
		return Mailbox{}, fmt.Errorf("add mailbox %s: %w", name, err)
	}
	return m, nil
}

// CreateMailbox makes a mailbox (subscribed) and any missing parents. It
// returns an error wrapping ErrExists if it is already there. specialUse is
// "" or an RFC 6154 attribute such as `\Trash`.
func (s *Store) CreateMailbox(ctx context.Context, account int64, name, specialUse string) (Mailbox, error) {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return Mailbox{}, err
	}
	var m Mailbox
	err = s.tx(ctx, func(tx *txn) error {
		if err := lockMail(ctx, tx); err != nil {
			return err
		}
		m, err = createMailbox(ctx, tx, account, n, specialUse)
		return err
	})
	if err != nil {
		return Mailbox{}, fmt.Errorf("create mailbox: %w", err)
	}
	return m, nil
}

// DeleteMailbox removes a mailbox with its messages and returns its id.
// INBOX and mailboxes with children cannot be removed (ErrMailboxRule).
func (s *Store) DeleteMailbox(ctx context.Context, account int64, name string) (int64, error) {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return 0, err
	}
	if n == Inbox {
		return 0, fmt.Errorf("delete mailbox INBOX: %w", ErrMailboxRule)
	}
	var id int64
	err = s.tx(ctx, func(tx *txn) error {
		if err := lockMail(ctx, tx); err != nil {
			return err
		}
		m, err := getMailbox(ctx, tx, account, n)
		if err != nil {
			return err
		}
		if children, err := childMailboxes(ctx, tx, account, n); err != nil {
			return err
		} else if len(children) > 0 {
			return fmt.Errorf("mailbox %s: %w", n, ErrHasChildren)
		}
		id = m.ID
		// Messages go by cascade, bodies by trigger; the trigger on
		// mailboxes moves the modification sequence.
		_, err = tx.ExecContext(ctx, `DELETE FROM mailboxes WHERE id = ?`, m.ID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete mailbox: %w", err)
	}
	return id, nil
}

// childMailboxes returns the mailboxes below a name, all levels.
func childMailboxes(ctx context.Context, q queryer, account int64, name string) ([]Mailbox, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+mailboxColumns+` FROM mailboxes WHERE account_id = ? ORDER BY name`, account)
	if err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	defer rows.Close()
	var out []Mailbox
	prefix := name + string(MailboxDelim)
	for rows.Next() {
		m, err := scanMailbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list mailboxes: %w", err)
		}
		if strings.HasPrefix(m.Name, prefix) {
			out = append(out, m)
		}
	}
	return out, rows.Err()
}

// RenameMailbox renames a mailbox and the mailboxes below it, making
// missing parents of the new name. Renaming INBOX moves its messages to a
// new mailbox of that name and leaves INBOX empty (RFC 3501, 6.3.5).
func (s *Store) RenameMailbox(ctx context.Context, account int64, oldName, newName string) error {
	from, err := NormalizeMailboxName(oldName)
	if err != nil {
		return err
	}
	to, err := NormalizeMailboxName(newName)
	if err != nil {
		return err
	}
	if to == Inbox || strings.HasPrefix(to, from+string(MailboxDelim)) {
		return fmt.Errorf("rename mailbox %s to %s: %w", from, to, ErrMailboxRule)
	}
	err = s.tx(ctx, func(tx *txn) error {
		if err := lockMail(ctx, tx); err != nil {
			return err
		}
		m, err := getMailbox(ctx, tx, account, from)
		if err != nil {
			return err
		}
		if from == Inbox {
			return renameInbox(ctx, tx, m, to)
		}
		children, err := childMailboxes(ctx, tx, account, from)
		if err != nil {
			return err
		}
		if _, err := getMailbox(ctx, tx, account, to); err == nil {
			return fmt.Errorf("mailbox %s: %w", to, ErrExists)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := createParents(ctx, tx, account, to); err != nil {
			return err
		}
		for _, c := range append([]Mailbox{m}, children...) {
			n := to + strings.TrimPrefix(c.Name, from)
			if len(n) > MaxMailboxName {
				return fmt.Errorf("%w: %s longer than %d bytes", ErrBadMailboxName, n, MaxMailboxName)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET name = ? WHERE id = ?`, n, c.ID); err != nil {
				return fmt.Errorf("rename mailbox %s: %w", c.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rename mailbox: %w", err)
	}
	return nil
}

func renameInbox(ctx context.Context, tx *txn, inbox Mailbox, to string) error {
	m, err := createMailbox(ctx, tx, inbox.Account, to, "")
	if err != nil {
		return err
	}
	modSeq, err := nextModSeq(ctx, tx)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE messages SET mailbox_id = ?, modseq = ? WHERE mailbox_id = ?`, m.ID, modSeq, inbox.ID); err != nil {
		return fmt.Errorf("move messages of INBOX: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET uidnext = ?, size = ?, modseq = ? WHERE id = ?`,
		int64(inbox.UIDNext), inbox.Size, modSeq, m.ID); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE mailboxes SET size = 0, modseq = ? WHERE id = ?`, modSeq, inbox.ID)
	return err
}

// SubscribeMailbox sets or clears the subscribed flag of a mailbox.
func (s *Store) SubscribeMailbox(ctx context.Context, account int64, name string, subscribed bool) error {
	n, err := NormalizeMailboxName(name)
	if err != nil {
		return err
	}
	v := 0
	if subscribed {
		v = 1
	}
	res, err := s.db.ExecContext(ctx, `UPDATE mailboxes SET subscribed = ? WHERE account_id = ? AND name = ?`, v, account, n)
	if err != nil {
		return fmt.Errorf("subscribe mailbox %s: %w", n, err)
	}
	if k, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("subscribe mailbox %s: %w", n, err)
	} else if k == 0 {
		return fmt.Errorf("mailbox %s: %w", n, ErrNotFound)
	}
	return nil
}

// MailChanged returns the modification sequence of all mailboxes: it grows
// with every change to any mailbox or message, whichever process made it.
// A server polls it to learn of mail delivered by another process.
func (s *Store) MailChanged(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT modseq FROM mail_state WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read mail modification sequence: %w", err)
	}
	return v, nil
}
