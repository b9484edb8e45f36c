package imap

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// mailboxState is the server's view of a mailbox that sessions have
// selected: its UIDs in order (the server's message sequence) and the
// tracker that queues updates for each session. sync brings it up to date
// with the store; it is the only place that queues updates, so every
// change reaches every session exactly once.
type mailboxState struct {
	srv         *Server
	account, id int64
	uidValidity uint32
	refs        int // guarded by srv.mu

	mu      sync.Mutex
	loaded  bool
	tracker *imapserver.MailboxTracker
	uids    []uint32 // server sequence number i+1 is uids[i]
	modSeq  int64    // changes up to this are in uids and queued
	gone    bool     // the mailbox was deleted
}

// loadLocked reads the mailbox on first use.
func (m *mailboxState) loadLocked(ctx context.Context) error {
	if m.loaded {
		return nil
	}
	mb, err := m.srv.store.MailboxByID(ctx, m.account, m.id)
	if err != nil {
		return err
	}
	// The modification sequence first: anything after it is seen again.
	uids, err := m.srv.store.MessageUIDs(ctx, m.account, m.id)
	if err != nil {
		return err
	}
	m.modSeq = mb.ModSeq
	m.uids = uids
	m.tracker = imapserver.NewMailboxTracker(uint32(len(uids)))
	m.loaded = true
	return nil
}

func (m *mailboxState) lastUID() uint32 {
	if len(m.uids) == 0 {
		return 0
	}
	return m.uids[len(m.uids)-1]
}

// sync applies the changes in the store to the state and queues them for
// the sessions. Flag changes of the messages in own are not queued for
// source, which reports them itself.
func (m *mailboxState) sync(ctx context.Context, source *imapserver.SessionTracker, own map[uint32]bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncLocked(ctx, source, own)
}

func (m *mailboxState) syncLocked(ctx context.Context, source *imapserver.SessionTracker, own map[uint32]bool) error {
	if !m.loaded {
		return m.loadLocked(ctx)
	}
	if m.gone {
		return nil
	}
	ch, err := m.srv.store.MailboxChanges(ctx, m.account, m.id, m.modSeq, m.lastUID(), len(m.uids))
	if err != nil {
		return fmt.Errorf("changes of mailbox %d: %w", m.id, err)
	}
	if ch.Gone {
		// Deleted, also by removal of the address: every message goes.
		for i := len(m.uids); i >= 1; i-- {
			m.tracker.QueueExpunge(uint32(i))
		}
		m.uids = nil
		m.gone = true
		return nil
	}
	if ch.ModSeq == m.modSeq {
		return nil
	}
	if ch.Expunged {
		// Both lists are in order: walk them from the end, so that the
		// sequence numbers of expunges are those of the moment.
		// Removing a message does not move those before it, so the
		// list is compacted once at the end.
		gone := make([]bool, len(m.uids))
		j := len(ch.Present) - 1
		for i := len(m.uids) - 1; i >= 0; i-- {
			for j >= 0 && ch.Present[j] > m.uids[i] {
				j--
			}
			if j >= 0 && ch.Present[j] == m.uids[i] {
				continue
			}
			m.tracker.QueueExpunge(uint32(i + 1))
			gone[i] = true
		}
		kept := m.uids[:0]
		for i, uid := range m.uids {
			if !gone[i] {
				kept = append(kept, uid)
			}
		}
		m.uids = kept
	}
	for _, msg := range ch.Flags {
		i, ok := slices.BinarySearch(m.uids, msg.UID)
		if !ok {
			continue
		}
		var skip *imapserver.SessionTracker
		if own[msg.UID] {
			skip = source
		}
		m.tracker.QueueMessageFlags(uint32(i+1), imap.UID(msg.UID), imapFlags(msg.Flags), skip)
	}
	last := m.lastUID()
	for _, uid := range ch.New {
		if uid <= last {
			continue
		}
		m.uids = append(m.uids, uid)
		last = uid
		// One EXISTS per message: the trackers map sequence numbers
		// right only for steps of one.
		m.tracker.QueueNumMessages(uint32(len(m.uids)))
	}
	m.modSeq = ch.ModSeq
	return nil
}

// imapFlags converts stored flags.
func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}
