package imap

import (
	"bufio"
	"bytes"
	"errors"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"github.com/hisp-project/hisp/store"
)

// Fetch writes the requested items of messages. BODY[], BODY[HEADER] and
// BODY[TEXT] (and their partial forms) are the stored bytes as delivered;
// other sections are cut from them by go-imap. A section without PEEK sets
// \Seen (not in a mailbox opened with EXAMINE).
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	msgs := s.resolve(numSet)
	if len(msgs) == 0 {
		return nil
	}
	meta, err := s.metadata(msgs)
	if err != nil {
		return err
	}
	markSeen := false
	if !s.sel.readOnly {
		for _, bs := range options.BodySection {
			markSeen = markSeen || !bs.Peek
		}
		for _, bs := range options.BinarySection {
			markSeen = markSeen || !bs.Peek
		}
	}
	seenNow := map[uint32]bool{}
	if markSeen {
		var unseen []uint32
		for _, m := range msgs {
			if md, ok := meta[m.uid]; ok && !hasFlag(md.Flags, store.FlagSeen) {
				unseen = append(unseen, m.uid)
			}
		}
		if len(unseen) > 0 {
			changed, err := s.srv.store.StoreFlags(s.ctx, s.account.ID, s.sel.state.id, unseen, store.FlagsAdd, []string{store.FlagSeen})
			if err != nil {
				return s.fail("fetch: set \\Seen", err, errNoMailbox)
			}
			for _, c := range changed {
				meta[c.UID] = c
				seenNow[c.UID] = true
			}
			if err := s.sel.state.sync(s.ctx, s.sel.tracker, seenNow); err != nil {
				s.log.Error("imap: sync mailbox", "err", err)
			}
		}
	}

	needBody, needHeader := fetchNeeds(options)
	var headers map[uint32][]byte
	if !needBody && needHeader && len(msgs) > 1 {
		// Headers only: one query for all.
		headers, err = s.srv.store.MessageHeaders(s.ctx, s.account.ID, s.sel.state.id, msgs[0].uid, msgs[len(msgs)-1].uid)
		if err != nil {
			return s.fail("fetch", err, errNoMailbox)
		}
	}
	for _, m := range msgs {
		md, ok := meta[m.uid]
		if !ok {
			continue // expunged meanwhile
		}
		var body, header []byte
		switch {
		case needBody:
			body, err = s.srv.store.MessageBody(s.ctx, s.account.ID, s.sel.state.id, m.uid)
			header = body[:headerLen(body)]
		case headers != nil:
			if header, ok = headers[m.uid]; !ok {
				continue
			}
		case needHeader:
			header, err = s.srv.store.MessageHeader(s.ctx, s.account.ID, s.sel.state.id, m.uid)
		}
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return s.fail("fetch", err, errNoMailbox)
		}
		if err := writeFetch(w.CreateMessage(m.seq), md, body, header, options, seenNow[m.uid]); err != nil {
			return err
		}
	}
	return nil
}

// metadata reads the metadata of messages, by UID.
func (s *session) metadata(msgs []msgRef) (map[uint32]store.MailMessage, error) {
	list, err := s.srv.store.Messages(s.ctx, s.account.ID, s.sel.state.id, msgs[0].uid, msgs[len(msgs)-1].uid)
	if err != nil {
		return nil, s.fail("fetch", err, errNoMailbox)
	}
	meta := make(map[uint32]store.MailMessage, len(msgs))
	want := make(map[uint32]bool, len(msgs))
	for _, m := range msgs {
		want[m.uid] = true
	}
	for _, m := range list {
		if want[m.UID] {
			meta[m.UID] = m
		}
	}
	return meta, nil
}

// fetchNeeds says whether the items need the whole message or just its
// header.
func fetchNeeds(o *imap.FetchOptions) (body, header bool) {
	if o.BodyStructure != nil || len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0 {
		return true, true
	}
	header = o.Envelope
	for _, bs := range o.BodySection {
		if len(bs.Part) > 0 || bs.Specifier == imap.PartSpecifierNone || bs.Specifier == imap.PartSpecifierText {
			return true, true
		}
		header = true
	}
	return false, header
}

func writeFetch(w *imapserver.FetchResponseWriter, md store.MailMessage, body, header []byte, o *imap.FetchOptions, seenNow bool) error {
	w.WriteUID(imap.UID(md.UID))
	if o.Flags || seenNow {
		w.WriteFlags(imapFlags(md.Flags))
	}
	if o.InternalDate {
		w.WriteInternalDate(md.Date.UTC())
	}
	if o.RFC822Size {
		w.WriteRFC822Size(md.Size)
	}
	if o.Envelope {
		w.WriteEnvelope(envelope(header))
	}
	if o.BodyStructure != nil {
		w.WriteBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(body)))
	}
	for _, bs := range o.BodySection {
		var data []byte
		if body != nil {
			data = bodySection(body, len(header), bs)
		} else {
			data = imapserver.ExtractBodySection(bytes.NewReader(header), bs)
		}
		if err := writeLiteral(w.WriteBodySection(bs, int64(len(data))), data); err != nil {
			w.Close()
			return err
		}
	}
	for _, bs := range o.BinarySection {
		data := imapserver.ExtractBinarySection(bytes.NewReader(body), bs)
		if err := writeLiteral(w.WriteBinarySection(bs, int64(len(data))), data); err != nil {
			w.Close()
			return err
		}
	}
	for _, bss := range o.BinarySectionSize {
		w.WriteBinarySectionSize(bss, imapserver.ExtractBinarySectionSize(bytes.NewReader(body), bss))
	}
	return w.Close()
}

func writeLiteral(wc interface {
	Write([]byte) (int, error)
	Close() error
}, data []byte) error {
	_, err := wc.Write(data)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

// bodySection returns a section of a message: the stored bytes themselves
// for the whole message, its header or its text.
func bodySection(body []byte, hdrLen int, bs *imap.FetchItemBodySection) []byte {
	if len(bs.Part) == 0 && len(bs.HeaderFields) == 0 && len(bs.HeaderFieldsNot) == 0 {
		switch bs.Specifier {
		case imap.PartSpecifierNone:
			return partial(body, bs.Partial)
		case imap.PartSpecifierHeader:
			return partial(body[:hdrLen], bs.Partial)
		case imap.PartSpecifierText:
			return partial(body[hdrLen:], bs.Partial)
		}
	}
	return imapserver.ExtractBodySection(bytes.NewReader(body), bs)
}

// partial cuts <offset.size> out of b.
func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset < 0 || p.Offset >= int64(len(b)) || p.Size <= 0 {
		return nil
	}
	end := int64(len(b))
	if p.Size < end-p.Offset {
		end = p.Offset + p.Size
	}
	return b[p.Offset:end]
}

// headerLen is the length of a message's header with the empty line that
// ends it (the whole message if there is none), as the store counts it.
func headerLen(msg []byte) int {
	off := 0
	for off < len(msg) {
		i := bytes.IndexByte(msg[off:], '\n')
		if i < 0 {
			break
		}
		line := msg[off : off+i]
		off += i + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return off
		}
	}
	return len(msg)
}

func envelope(header []byte) *imap.Envelope {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(header)))
	if err != nil {
		h = textproto.Header{}
	}
	return imapserver.ExtractEnvelope(h)
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// Store changes flags of messages and, unless .SILENT, writes their flags.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if s.sel.readOnly {
		return errReadOnly
	}
	msgs := s.resolve(numSet)
	if len(msgs) == 0 {
		return nil
	}
	uids := make([]uint32, len(msgs))
	for i, m := range msgs {
		uids[i] = m.uid
	}
	fl := make([]string, len(flags.Flags))
	for i, f := range flags.Flags {
		fl[i] = string(f)
	}
	var op store.FlagOp
	switch flags.Op {
	case imap.StoreFlagsSet:
		op = store.FlagsSet
	case imap.StoreFlagsAdd:
		op = store.FlagsAdd
	case imap.StoreFlagsDel:
		op = store.FlagsRemove
	}
	changed, err := s.srv.store.StoreFlags(s.ctx, s.account.ID, s.sel.state.id, uids, op, fl)
	if err != nil {
		return s.fail("store flags", err, errNoMailbox)
	}
	own := make(map[uint32]bool, len(changed))
	byUID := make(map[uint32]store.MailMessage, len(changed))
	for _, c := range changed {
		own[c.UID] = true
		byUID[c.UID] = c
	}
	if err := s.sel.state.sync(s.ctx, s.sel.tracker, own); err != nil {
		s.log.Error("imap: sync mailbox", "err", err)
	}
	if flags.Silent {
		return nil
	}
	for _, m := range msgs {
		c, ok := byUID[m.uid]
		if !ok {
			continue
		}
		rw := w.CreateMessage(m.seq)
		rw.WriteUID(imap.UID(c.UID))
		rw.WriteFlags(imapFlags(c.Flags))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}
