package imap

import (
	"context"
	"time"

	"github.com/hisp-project/hisp/store"
)

// Store is the part of the store the IMAP server uses; *store.Store
// implements it, on SQLite and on PostgreSQL alike. Every mailbox call names
// the mail account, so a session reaches only its own mailboxes.
type Store interface {
	// Logins and accounts: the submission password of a local address,
	// and the account (with its quota and use) of an address.
	CheckPassword(ctx context.Context, address, password string) (string, error)
	MailAccount(ctx context.Context, address string) (store.MailAccount, error)

	// Mailboxes of an account: LIST, STATUS, SELECT, CREATE, DELETE,
	// RENAME, SUBSCRIBE.
	Mailboxes(ctx context.Context, account int64) ([]store.Mailbox, error)
	Mailbox(ctx context.Context, account int64, name string) (store.Mailbox, error)
	MailboxByID(ctx context.Context, account, id int64) (store.Mailbox, error)
	MailboxStatus(ctx context.Context, account int64, name string) (store.MailboxStatus, error)
	MailboxStatusByID(ctx context.Context, account, id int64) (store.MailboxStatus, error)
	MailboxKeywords(ctx context.Context, account, mailboxID int64) ([]string, error)
	CreateMailbox(ctx context.Context, account int64, name, specialUse string) (store.Mailbox, error)
	DeleteMailbox(ctx context.Context, account int64, name string) (int64, error)
	RenameMailbox(ctx context.Context, account int64, oldName, newName string) error
	SubscribeMailbox(ctx context.Context, account int64, name string, subscribed bool) error

	// Messages of a mailbox: FETCH, SEARCH and the sequence numbers of a
	// selected mailbox.
	MessageUIDs(ctx context.Context, account, mailboxID int64) ([]uint32, error)
	Messages(ctx context.Context, account, mailboxID int64, first, last uint32) ([]store.MailMessage, error)
	MessageHeader(ctx context.Context, account, mailboxID int64, uid uint32) ([]byte, error)
	MessageHeaders(ctx context.Context, account, mailboxID int64, first, last uint32) (map[uint32][]byte, error)
	MessageBody(ctx context.Context, account, mailboxID int64, uid uint32) ([]byte, error)

	// Changes to messages: APPEND, STORE, EXPUNGE, COPY and MOVE, and
	// Server.Deliver.
	Append(ctx context.Context, account int64, mailbox string, msg []byte, flags []string, date time.Time) (store.AppendResult, error)
	Deliver(ctx context.Context, address, mailbox string, msg []byte, flags []string, date time.Time) (uint32, error)
	StoreFlags(ctx context.Context, account, mailboxID int64, uids []uint32, op store.FlagOp, flags []string) ([]store.MailMessage, error)
	Expunge(ctx context.Context, account, mailboxID int64, uids []uint32) ([]uint32, error)
	CopyMessages(ctx context.Context, account, mailboxID int64, uids []uint32, dest string, move bool) (store.CopyResult, error)

	// Changes made elsewhere (other sessions' servers, other nodes): the
	// store's mail modification sequence, and what changed in a mailbox
	// since a sequence, for the poller and IDLE.
	MailChanged(ctx context.Context) (int64, error)
	MailboxChanges(ctx context.Context, account, mailboxID int64, since int64, lastUID uint32, count int) (store.MailboxChanges, error)
}
