package imap

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/netwatch"
	"github.com/hisp-project/hisp/store"
)

// session is one IMAP connection. imapserver calls its methods from the
// connection's goroutine, and Idle from another while that one waits for
// DONE, so it needs no lock of its own.
type session struct {
	srv  *Server
	ctx  context.Context
	conn *imapserver.Conn
	ip   string
	log  *slog.Logger

	account store.MailAccount // ID 0 until login
	sel     *selectedMailbox
	done    func() // called once by Close
}

// selectedMailbox is the mailbox a session has selected.
type selectedMailbox struct {
	name      string
	state     *mailboxState
	tracker   *imapserver.SessionTracker
	readOnly  bool
	searchRes imap.UIDSet // saved by SEARCH RETURN (SAVE)
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

func (s *Server) newSession(ctx context.Context, c *imapserver.Conn, done func()) *session {
	ip := ""
	if a, ok := c.NetConn().RemoteAddr().(*net.TCPAddr); ok {
		ip = a.IP.String()
	} else if a := c.NetConn().RemoteAddr(); a != nil {
		ip = a.String()
	}
	return &session{srv: s, ctx: ctx, conn: c, ip: ip, log: s.log.With("remote", ip), done: done}
}

// Errors sent to clients. Store errors are mapped to these; anything else is
// logged and reported as an internal error.
var (
	errNoMailbox = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "No such mailbox"}
	errTryCreate = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	errExists    = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Mailbox already exists"}
	errOverQuota = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Mail quota exceeded"}
	errReadOnly  = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Mailbox is read-only (EXAMINE)"}
	errInternal  = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: "Internal error"}
)

// fail maps an error of the store to what the client is told.
func (s *session) fail(op string, err error, notFound *imap.Error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound
	case errors.Is(err, store.ErrExists):
		return errExists
	case errors.Is(err, store.ErrOverQuota):
		return errOverQuota
	case errors.Is(err, store.ErrBadMailboxName):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Invalid mailbox name"}
	case errors.Is(err, store.ErrHasChildren):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeHasChildren, Text: "Mailbox has mailboxes inside"}
	case errors.Is(err, store.ErrMailboxRule):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Not allowed"}
	case errors.Is(err, store.ErrBadFlag):
		return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: "Invalid flag"}
	}
	if s.ctx.Err() != nil {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Server shutting down"}
	}
	s.log.Error("imap: "+op, "user", s.account.Address, "err", err)
	return errInternal
}

// Close ends the session.
func (s *session) Close() error {
	if s.sel != nil {
		s.unselect()
	}
	if s.done != nil {
		s.done()
		s.done = nil
	}
	return nil
}

// Login checks the address and password against the store, in its turn
// when the address or the client failed lately (loginlimit); a failure is
// answered after the delay of the login limiter. The waits end when the
// client leaves or the server stops.
func (s *session) Login(username, password string) error {
	ctx, cancel := netwatch.Peer(s.ctx, s.conn.NetConn())
	defer cancel()
	if err := s.srv.logins.Wait(ctx, loginlimit.Attempt{Name: username, IP: s.ip}, s.srv.sleep); err != nil {
		if errors.Is(err, loginlimit.ErrBusy) {
			s.log.Info("imap: login refused, too many attempts waiting", "user", truncate(username, 100))
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Too many login attempts, try again later"}
		}
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Connection closed while waiting"}
	}
	addr, err := s.srv.checkPassword(s.ctx, username, password)
	if err != nil {
		if !errors.Is(err, store.ErrBadCredentials) {
			s.log.Error("imap: check password", "err", err)
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Try again later"}
		}
		d := s.srv.logins.Fail(username, s.ip)
		s.log.Warn("imap: login failed", "user", truncate(username, 100), "delay", d)
		s.srv.sleep(ctx, d)
		return imapserver.ErrAuthFailed
	}
	acct, err := s.srv.store.MailAccount(s.ctx, addr)
	if err != nil {
		s.log.Error("imap: open mail account", "user", addr, "err", err)
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Mailbox not available"}
	}
	s.srv.logins.Succeed(username, s.ip)
	s.account = acct
	s.log = s.log.With("user", addr)
	s.log.Info("imap: login")
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Namespace reports one personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: store.MailboxDelim}}}, nil
}

// AppendLimit is the largest message APPEND takes.
func (s *session) AppendLimit() uint32 { return uint32(s.srv.maxMessageSize) }

// Select opens a mailbox of the account.
func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	mb, err := s.srv.store.Mailbox(s.ctx, s.account.ID, name)
	if err != nil {
		return nil, s.fail("select", err, errNoMailbox)
	}
	st := s.srv.acquire(s.account.ID, mb.ID, mb.UIDValidity)
	data, tracker, err := s.openLocked(st, options.ReadOnly)
	if err != nil {
		s.srv.release(st)
		return nil, err
	}
	s.sel = &selectedMailbox{name: mb.Name, state: st, tracker: tracker, readOnly: options.ReadOnly}
	return data, nil
}

// openLocked brings a mailbox state up to date and registers a session
// with its tracker, under the state's lock so no update is lost or seen
// twice.
func (s *session) openLocked(st *mailboxState, readOnly bool) (*imap.SelectData, *imapserver.SessionTracker, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.syncLocked(s.ctx, nil, nil); err != nil {
		return nil, nil, s.fail("select", err, errNoMailbox)
	}
	if st.gone {
		return nil, nil, errNoMailbox
	}
	status, err := s.srv.store.MailboxStatusByID(s.ctx, s.account.ID, st.id)
	if err != nil {
		return nil, nil, s.fail("select", err, errNoMailbox)
	}
	keywords, err := s.srv.store.MailboxKeywords(s.ctx, s.account.ID, st.id)
	if err != nil {
		return nil, nil, s.fail("select", err, errNoMailbox)
	}
	flags := imapFlags(append(store.SystemFlags(), keywords...))
	data := &imap.SelectData{
		Flags:       flags,
		NumMessages: uint32(len(st.uids)),
		UIDNext:     imap.UID(max(status.UIDNext, st.lastUID()+1)),
		UIDValidity: st.uidValidity,
	}
	if !readOnly {
		data.PermanentFlags = append(slices.Clone(flags), imap.FlagWildcard)
	}
	if status.FirstUnseenUID != 0 {
		if i, ok := slices.BinarySearch(st.uids, status.FirstUnseenUID); ok {
			data.FirstUnseenSeqNum = uint32(i + 1)
		}
	}
	return data, st.tracker.NewSession(), nil
}

// Unselect closes the selected mailbox.
func (s *session) Unselect() error {
	if s.sel != nil {
		s.unselect()
	}
	return nil
}

func (s *session) unselect() {
	s.sel.tracker.Close()
	s.srv.release(s.sel.state)
	s.sel = nil
}

// Create makes a mailbox (and its missing parents).
func (s *session) Create(name string, options *imap.CreateOptions) error {
	use := ""
	if options != nil && len(options.SpecialUse) > 0 {
		use = string(options.SpecialUse[0])
		known := []imap.MailboxAttr{imap.MailboxAttrAll, imap.MailboxAttrArchive, imap.MailboxAttrDrafts,
			imap.MailboxAttrFlagged, imap.MailboxAttrJunk, imap.MailboxAttrSent, imap.MailboxAttrTrash}
		if len(options.SpecialUse) > 1 || !slices.ContainsFunc(known, func(a imap.MailboxAttr) bool { return strings.EqualFold(string(a), use) }) {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "One of the RFC 6154 special uses per mailbox"}
		}
	}
	if _, err := s.srv.store.CreateMailbox(s.ctx, s.account.ID, name, use); err != nil {
		return s.fail("create mailbox", err, errNoMailbox)
	}
	return nil
}

// Delete removes a mailbox with its messages.
func (s *session) Delete(name string) error {
	id, err := s.srv.store.DeleteMailbox(s.ctx, s.account.ID, name)
	if err != nil {
		return s.fail("delete mailbox", err, errNoMailbox)
	}
	s.srv.syncMailboxes(s.ctx, id)
	return nil
}

// Rename renames a mailbox and those below it.
func (s *session) Rename(oldName, newName string, options *imap.RenameOptions) error {
	inbox, err := s.srv.store.Mailbox(s.ctx, s.account.ID, store.Inbox)
	if err != nil {
		return s.fail("rename mailbox", err, errNoMailbox)
	}
	if err := s.srv.store.RenameMailbox(s.ctx, s.account.ID, oldName, newName); err != nil {
		return s.fail("rename mailbox", err, errNoMailbox)
	}
	s.srv.syncMailboxes(s.ctx, inbox.ID) // renaming INBOX empties it
	return nil
}

// Subscribe marks a mailbox subscribed.
func (s *session) Subscribe(name string) error {
	if err := s.srv.store.SubscribeMailbox(s.ctx, s.account.ID, name, true); err != nil {
		return s.fail("subscribe", err, errNoMailbox)
	}
	return nil
}

// Unsubscribe clears the subscription of a mailbox.
func (s *session) Unsubscribe(name string) error {
	if err := s.srv.store.SubscribeMailbox(s.ctx, s.account.ID, name, false); err != nil {
		return s.fail("unsubscribe", err, errNoMailbox)
	}
	return nil
}

// List lists the account's mailboxes that match the patterns.
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: store.MailboxDelim})
	}
	boxes, err := s.srv.store.Mailboxes(s.ctx, s.account.ID)
	if err != nil {
		return s.fail("list mailboxes", err, errNoMailbox)
	}
	for i, mb := range boxes {
		if !listMatch(mb.Name, ref, patterns) {
			continue
		}
		if options.SelectSubscribed && !mb.Subscribed {
			continue
		}
		if options.SelectSpecialUse && mb.SpecialUse == "" {
			continue
		}
		data := imap.ListData{Mailbox: mb.Name, Delim: store.MailboxDelim}
		// Mailboxes are in name order, so children follow their parent.
		if i+1 < len(boxes) && strings.HasPrefix(boxes[i+1].Name, mb.Name+string(store.MailboxDelim)) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if mb.Subscribed && (options.ReturnSubscribed || options.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if mb.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(mb.SpecialUse))
		}
		if options.ReturnStatus != nil {
			st, err := s.status(mb.Name)
			if err != nil {
				return err
			}
			data.Status = st
		}
		if err := w.WriteList(&data); err != nil {
			return err
		}
	}
	return nil
}

// listMatch reports whether a mailbox name matches a reference and one of
// the patterns; INBOX matches in any case.
func listMatch(name, ref string, patterns []string) bool {
	for _, p := range patterns {
		full := p
		if !strings.HasPrefix(p, string(store.MailboxDelim)) && ref != "" {
			full = ref
			if !strings.HasSuffix(full, string(store.MailboxDelim)) {
				full += string(store.MailboxDelim)
			}
			full += p
		}
		full = strings.TrimPrefix(full, string(store.MailboxDelim))
		first, rest, hasRest := strings.Cut(full, string(store.MailboxDelim))
		if strings.EqualFold(first, store.Inbox) {
			full = store.Inbox
			if hasRest {
				full += string(store.MailboxDelim) + rest
			}
		}
		if imapserver.MatchList(name, store.MailboxDelim, "", full) {
			return true
		}
	}
	return false
}

// Status reports the counts of a mailbox.
func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	return s.status(name)
}

func (s *session) status(name string) (*imap.StatusData, error) {
	st, err := s.srv.store.MailboxStatus(s.ctx, s.account.ID, name)
	if err != nil {
		return nil, s.fail("status", err, errNoMailbox)
	}
	var recent uint32
	var deletedStorage int64
	limit := uint32(s.srv.maxMessageSize)
	return &imap.StatusData{
		Mailbox:        st.Name,
		NumMessages:    &st.Messages,
		NumRecent:      &recent,
		UIDNext:        imap.UID(st.UIDNext),
		UIDValidity:    st.UIDValidity,
		NumUnseen:      &st.Unseen,
		NumDeleted:     &st.Deleted,
		Size:           &st.Size,
		AppendLimit:    &limit,
		DeletedStorage: &deletedStorage,
		HighestModSeq:  uint64(st.ModSeq),
	}, nil
}

// Append files a message in a mailbox of the account.
func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	if r.Size() > s.srv.maxMessageSize {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	}
	// Over the quota (the account's own or the default): refused before
	// the message is read into memory; the store checks again when it
	// files it.
	if a, err := s.srv.store.MailAccount(s.ctx, s.account.Address); err == nil && a.Quota > 0 && a.Used+r.Size() > a.Quota {
		return nil, errOverQuota
	}
	msg, err := io.ReadAll(io.LimitReader(r, s.srv.maxMessageSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(msg)) > s.srv.maxMessageSize {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	}
	if len(msg) == 0 {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Empty message"}
	}
	flags := make([]string, len(options.Flags))
	for i, f := range options.Flags {
		flags[i] = string(f)
	}
	res, err := s.srv.store.Append(s.ctx, s.account.ID, name, msg, flags, options.Time)
	if err != nil {
		return nil, s.fail("append", err, errTryCreate)
	}
	s.srv.syncMailboxes(s.ctx, res.MailboxID)
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}

// Poll brings the selected mailbox up to date and writes its pending
// updates.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	if err := s.sel.state.sync(s.ctx, nil, nil); err != nil {
		s.log.Error("imap: sync mailbox", "err", err)
	}
	return s.sel.tracker.Poll(w, allowExpunge)
}

// Idle writes updates of the selected mailbox as they come, until stop.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.sel == nil {
		<-stop
		return nil
	}
	return s.sel.tracker.Idle(w, stop)
}

// Expunge removes the messages with \Deleted (of uids, if given). The
// EXPUNGE responses reach this session too through its tracker, written
// when imapserver polls after the command.
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if s.sel.readOnly {
		return errReadOnly
	}
	var list []uint32
	if uids != nil {
		for _, m := range s.resolve(*uids) {
			list = append(list, m.uid)
		}
		if len(list) == 0 {
			return nil
		}
	}
	if _, err := s.srv.store.Expunge(s.ctx, s.account.ID, s.sel.state.id, list); err != nil {
		return s.fail("expunge", err, errNoMailbox)
	}
	s.srv.syncMailboxes(s.ctx, s.sel.state.id)
	return nil
}

// Copy copies messages to another mailbox of the account.
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	return s.copy(numSet, dest, false, nil)
}

// Move moves messages to another mailbox of the account.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.sel.readOnly {
		return errReadOnly
	}
	_, err := s.copy(numSet, dest, true, w)
	return err
}

func (s *session) copy(numSet imap.NumSet, dest string, move bool, w *imapserver.MoveWriter) (*imap.CopyData, error) {
	msgs := s.resolve(numSet)
	if _, err := store.NormalizeMailboxName(dest); err != nil {
		return nil, s.fail("copy", err, errTryCreate)
	}
	if len(msgs) == 0 {
		// Nothing to copy; still say whether the destination exists.
		if _, err := s.srv.store.Mailbox(s.ctx, s.account.ID, dest); err != nil {
			return nil, s.fail("copy", err, errTryCreate)
		}
		return nil, nil
	}
	uids := make([]uint32, len(msgs))
	for i, m := range msgs {
		uids[i] = m.uid
	}
	res, err := s.srv.store.CopyMessages(s.ctx, s.account.ID, s.sel.state.id, uids, dest, move)
	if err != nil {
		return nil, s.fail("copy", err, errTryCreate)
	}
	var data *imap.CopyData
	if len(res.SourceUIDs) > 0 {
		data = &imap.CopyData{UIDValidity: res.UIDValidity}
		for i := range res.SourceUIDs {
			data.SourceUIDs.AddNum(imap.UID(res.SourceUIDs[i]))
			data.DestUIDs.AddNum(imap.UID(res.DestUIDs[i]))
		}
	}
	if move && data != nil {
		if err := w.WriteCopyData(data); err != nil {
			return nil, err
		}
	}
	s.srv.syncMailboxes(s.ctx, res.MailboxID, s.sel.state.id)
	return data, nil
}

// msgRef is a message of the selected mailbox as a client sees it.
type msgRef struct {
	seq uint32 // in the client's view
	uid uint32
}

// resolve returns the messages of a sequence or UID set (or the saved
// search result "$") that the client knows, in order. "*" is the last
// message the client knows (by sequence number) or the highest UID.
func (s *session) resolve(numSet imap.NumSet) []msgRef {
	st := s.sel.state
	st.mu.Lock()
	defer st.mu.Unlock()
	if imap.IsSearchRes(numSet) {
		numSet = s.sel.searchRes
	}
	var out []msgRef
	switch set := numSet.(type) {
	case imap.SeqSet:
		set = staticSeqSet(set, s.clientMaxLocked())
		for i, uid := range st.uids {
			if seq := s.sel.tracker.EncodeSeqNum(uint32(i + 1)); seq != 0 && set.Contains(seq) {
				out = append(out, msgRef{seq: seq, uid: uid})
			}
		}
	case imap.UIDSet:
		set = staticUIDSet(set, st.lastUID())
		for i, uid := range st.uids {
			if set.Contains(imap.UID(uid)) {
				if seq := s.sel.tracker.EncodeSeqNum(uint32(i + 1)); seq != 0 {
					out = append(out, msgRef{seq: seq, uid: uid})
				}
			}
		}
	}
	return out
}

// clientMaxLocked is the highest sequence number the client knows of
// messages that still exist.
func (s *session) clientMaxLocked() uint32 {
	for i := len(s.sel.state.uids); i >= 1; i-- {
		if seq := s.sel.tracker.EncodeSeqNum(uint32(i)); seq != 0 {
			return seq
		}
	}
	return 0
}

// staticSeqSet replaces "*" (0) by max, in a copy.
func staticSeqSet(set imap.SeqSet, max uint32) imap.SeqSet {
	out := make(imap.SeqSet, len(set))
	for i, r := range set {
		if r.Start == 0 {
			r.Start = max
		}
		if r.Stop == 0 {
			r.Stop = max
		}
		if r.Start > r.Stop {
			r.Start, r.Stop = r.Stop, r.Start
		}
		out[i] = r
	}
	return out
}

// staticUIDSet replaces "*" (0) by max, in a copy.
func staticUIDSet(set imap.UIDSet, max uint32) imap.UIDSet {
	out := make(imap.UIDSet, len(set))
	for i, r := range set {
		if r.Start == 0 {
			r.Start = imap.UID(max)
		}
		if r.Stop == 0 {
			r.Stop = imap.UID(max)
		}
		if r.Start > r.Stop {
			r.Start, r.Stop = r.Stop, r.Start
		}
		out[i] = r
	}
	return out
}
