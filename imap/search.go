package imap

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/hisp-project/hisp/store"
)

// Search finds messages of the selected mailbox. Flags, UIDs, sizes and
// internal dates come from the metadata; header and text criteria read
// the messages, only those that pass the other criteria first.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	// The messages the client knows, and "*" for each kind of set.
	st := s.sel.state
	st.mu.Lock()
	var msgs []msgRef
	for i, uid := range st.uids {
		if seq := s.sel.tracker.EncodeSeqNum(uint32(i + 1)); seq != 0 {
			msgs = append(msgs, msgRef{seq: seq, uid: uid})
		}
	}
	maxUID := st.lastUID()
	st.mu.Unlock()
	var maxSeq uint32
	if len(msgs) > 0 {
		maxSeq = msgs[len(msgs)-1].seq
	}
	c := s.staticCriteria(*criteria, maxSeq, maxUID)

	var list []store.MailMessage
	if len(msgs) > 0 {
		var err error
		list, err = s.srv.store.Messages(s.ctx, s.account.ID, st.id, 0, math.MaxUint32)
		if err != nil {
			return nil, s.fail("search", err, errNoMailbox)
		}
	}
	meta := make(map[uint32]*store.MailMessage, len(list))
	for i := range list {
		meta[list[i].UID] = &list[i]
	}
	var headers map[uint32][]byte
	if len(msgs) > 0 && needsHeader(&c) {
		var err error
		headers, err = s.srv.store.MessageHeaders(s.ctx, s.account.ID, st.id, 0, math.MaxUint32)
		if err != nil {
			return nil, s.fail("search", err, errNoMailbox)
		}
	}

	var data imap.SearchData
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for _, m := range msgs {
		md := meta[m.uid]
		if md == nil {
			continue
		}
		sm := &searchMessage{s: s, ref: m, meta: md}
		if headers != nil {
			h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(headers[m.uid])))
			sm.header = &h
		}
		if !sm.match(&c) {
			continue
		}
		uids.AddNum(imap.UID(m.uid))
		num := m.seq
		if kind == imapserver.NumKindUID {
			num = m.uid
		} else {
			seqs.AddNum(m.seq)
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		data.Max = max(data.Max, num)
		data.Count++
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	if options.ReturnSave {
		s.sel.searchRes = uids
	}
	return &data, nil
}

// needsHeader reports whether criteria read header fields.
func needsHeader(c *imap.SearchCriteria) bool {
	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		return true
	}
	for i := range c.Not {
		if needsHeader(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if needsHeader(&c.Or[i][0]) || needsHeader(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

// staticCriteria returns criteria with "*" replaced and "$" resolved.
func (s *session) staticCriteria(c imap.SearchCriteria, maxSeq, maxUID uint32) imap.SearchCriteria {
	var seqs []imap.SeqSet
	var uids []imap.UIDSet
	for _, set := range c.SeqNum {
		seqs = append(seqs, staticSeqSet(set, maxSeq))
	}
	for _, set := range c.UID {
		if imap.IsSearchRes(set) {
			uids = append(uids, s.sel.searchRes)
		} else {
			uids = append(uids, staticUIDSet(set, maxUID))
		}
	}
	c.SeqNum, c.UID = seqs, uids
	if len(c.Not) > 0 {
		not := make([]imap.SearchCriteria, len(c.Not))
		for i := range c.Not {
			not[i] = s.staticCriteria(c.Not[i], maxSeq, maxUID)
		}
		c.Not = not
	}
	if len(c.Or) > 0 {
		or := make([][2]imap.SearchCriteria, len(c.Or))
		for i := range c.Or {
			or[i] = [2]imap.SearchCriteria{
				s.staticCriteria(c.Or[i][0], maxSeq, maxUID),
				s.staticCriteria(c.Or[i][1], maxSeq, maxUID),
			}
		}
		c.Or = or
	}
	return c
}

// searchMessage is a message under test, its content read on demand.
type searchMessage struct {
	s    *session
	ref  msgRef
	meta *store.MailMessage

	header    *textproto.Header
	body      []byte
	bodyTried bool
}

func (m *searchMessage) readBody() []byte {
	if !m.bodyTried {
		m.bodyTried = true
		m.body, _ = m.s.srv.store.MessageBody(m.s.ctx, m.s.account.ID, m.s.sel.state.id, m.ref.uid)
	}
	return m.body
}

func (m *searchMessage) readHeader() textproto.Header {
	if m.header == nil {
		var h textproto.Header
		data, err := m.s.srv.store.MessageHeader(m.s.ctx, m.s.account.ID, m.s.sel.state.id, m.ref.uid)
		if err == nil {
			h, _ = textproto.ReadHeader(bufio.NewReader(bytes.NewReader(data)))
		}
		m.header = &h
	}
	return *m.header
}

func (m *searchMessage) entity() *gomessage.Entity {
	e, _ := gomessage.Read(bytes.NewReader(m.readBody()))
	if e == nil {
		e, _ = gomessage.New(gomessage.Header{}, bytes.NewReader(nil))
	}
	return e
}

func (m *searchMessage) hasFlag(f imap.Flag) bool {
	for _, x := range m.meta.Flags {
		if strings.EqualFold(x, string(f)) {
			return true
		}
	}
	return false
}

// match applies criteria: the cheap ones first.
func (m *searchMessage) match(c *imap.SearchCriteria) bool {
	for _, set := range c.SeqNum {
		if !set.Contains(m.ref.seq) {
			return false
		}
	}
	for _, set := range c.UID {
		if !set.Contains(imap.UID(m.ref.uid)) {
			return false
		}
	}
	if !matchDate(m.meta.Date, c.Since, c.Before) {
		return false
	}
	for _, f := range c.Flag {
		if !m.hasFlag(f) {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if m.hasFlag(f) {
			return false
		}
	}
	if c.Larger != 0 && m.meta.Size <= c.Larger {
		return false
	}
	if c.Smaller != 0 && m.meta.Size >= c.Smaller {
		return false
	}
	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		h := mail.Header{Header: gomessage.Header{Header: m.readHeader()}}
		for _, hc := range c.Header {
			if !matchHeaderFields(h.FieldsByKey(hc.Key), hc.Value) {
				return false
			}
		}
		if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
			t, err := h.Date()
			if err != nil || !matchDate(t, c.SentSince, c.SentBefore) {
				return false
			}
		}
	}
	for _, text := range c.Text {
		if !matchEntity(m.entity(), text, true) {
			return false
		}
	}
	for _, body := range c.Body {
		if !matchEntity(m.entity(), body, false) {
			return false
		}
	}
	for i := range c.Not {
		if m.match(&c.Not[i]) {
			return false
		}
	}
	for i := range c.Or {
		if !m.match(&c.Or[i][0]) && !m.match(&c.Or[i][1]) {
			return false
		}
	}
	return true
}

// matchDate compares dates without time and zone (RFC 3501, 6.4.4).
func matchDate(t, since, before time.Time) bool {
	t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && t.Before(since) {
		return false
	}
	if !before.IsZero() && !t.Before(before) {
		return false
	}
	return true
}

func matchHeaderFields(fields gomessage.HeaderFields, pattern string) bool {
	if pattern == "" {
		return fields.Len() > 0
	}
	pattern = strings.ToLower(pattern)
	for fields.Next() {
		v, _ := fields.Text()
		if strings.Contains(strings.ToLower(v), pattern) {
			return true
		}
	}
	return false
}

// matchEntity looks for text in the text parts of a message (decoded),
// and in its header fields with includeHeader.
func matchEntity(e *gomessage.Entity, pattern string, includeHeader bool) bool {
	if pattern == "" {
		return true
	}
	if includeHeader && matchHeaderFields(e.Header.Fields(), pattern) {
		return true
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			part, err := mr.NextPart()
			if err != nil {
				return false
			}
			if matchEntity(part, pattern, includeHeader) {
				return true
			}
		}
	}
	t, _, err := e.Header.ContentType()
	if err != nil && t == "" {
		t = "text/plain"
	}
	if !strings.HasPrefix(t, "text/") && !strings.HasPrefix(t, "message/") && !strings.HasSuffix(t, "xml") {
		return false
	}
	buf, err := io.ReadAll(io.LimitReader(e.Body, 64<<20))
	if err != nil {
		return false
	}
	return bytes.Contains(bytes.ToLower(buf), bytes.ToLower([]byte(pattern)))
}
