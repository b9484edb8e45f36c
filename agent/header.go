package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// maxHeader is the largest header block the agent reads (header bombs). A To
// field of a few thousand addresses fits many times over.
const maxHeader = 1 << 20

// field is one header field as it appears in a message.
type field struct {
	lname string // lower-case field name
	raw   []byte // the whole field, continuation lines included, with its line end (CRLF)
	val   string // the unfolded value, trimmed
}

// value returns the unfolded value, trimmed.
func (f field) value() string { return f.val }

// header is a parsed header block.
type header []field

// values returns the values of every field named name (lower case).
func (h header) values(name string) []string {
	var out []string
	for _, f := range h {
		if f.lname == name {
			out = append(out, f.value())
		}
	}
	return out
}

// get returns the value of the first field named name, "" if none.
func (h header) get(name string) string {
	for _, f := range h {
		if f.lname == name {
			return f.value()
		}
	}
	return ""
}

func (h header) has(name string) bool {
	for _, f := range h {
		if f.lname == name {
			return true
		}
	}
	return false
}

// splitMessage returns the header block of msg (without the empty line that
// ends it) and the body (after it). A message without an empty line is all
// header.
func splitMessage(msg []byte) (hdr, body []byte) {
	for i := 0; i < len(msg); {
		if msg[i] == '\n' {
			return msg[:i], msg[i+1:]
		}
		if msg[i] == '\r' && i+1 < len(msg) && msg[i+1] == '\n' {
			return msg[:i], msg[i+2:]
		}
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			return msg, nil
		}
		i += j + 1
	}
	return msg, nil
}

// parseHeader reads a header block (RFC 5322 §2.2) with go-message's
// textproto, the one header reader of hisp: fields of a name of printable
// characters, a colon and a value, continued on lines that start with white
// space. A field's raw form ends its lines with CRLF.
func parseHeader(block []byte) (header, error) {
	if len(block) > maxHeader {
		return nil, fmt.Errorf("header is larger than %d bytes", maxHeader)
	}
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(block)))
	if err != nil {
		return nil, fmt.Errorf("malformed header: %s", strings.TrimPrefix(err.Error(), "message: "))
	}
	fields := th.Fields()
	h := make(header, 0, fields.Len())
	for fields.Next() {
		raw, err := fields.Raw()
		if err != nil {
			return nil, fmt.Errorf("malformed header field %q: %v", truncate([]byte(fields.Key()), 40), err)
		}
		h = append(h, field{lname: strings.ToLower(fields.Key()), raw: raw, val: fields.Value()})
	}
	return h, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// addrParser reads address lists. Display names in an unknown charset are
// kept as they are: only the addresses matter here, and a display name must
// not make a message unreadable.
var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// addresses returns the lower-case addresses of every field named name.
// Groups count by their members.
func (h header) addresses(name string) ([]string, error) {
	var out []string
	for _, v := range h.values(name) {
		if strings.TrimSpace(v) == "" {
			continue
		}
		list, err := addrParser.ParseList(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", canonicalName(name), err)
		}
		for _, a := range list {
			out = append(out, strings.ToLower(a.Address))
		}
	}
	return out, nil
}

// single returns the one address of field name: "" when the field is
// absent, an error when it holds none or several.
func (h header) single(name string) (string, error) {
	if !h.has(name) {
		return "", nil
	}
	list, err := h.addresses(name)
	if err != nil {
		return "", err
	}
	if len(list) != 1 {
		return "", fmt.Errorf("%s holds %d addresses, want one", canonicalName(name), len(list))
	}
	return list[0], nil
}

func canonicalName(lname string) string {
	switch lname {
	case "message-id":
		return "Message-ID"
	case "cc":
		return "Cc"
	}
	parts := strings.Split(lname, "-")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}

// sameSet reports whether a and b hold the same addresses, in any order and
// number.
func sameSet(a, b []string) bool {
	sa, sb := set(a), set(b)
	if len(sa) != len(sb) {
		return false
	}
	for s := range sa {
		if !sb[s] {
			return false
		}
	}
	return true
}

func set(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

// envAddr is an envelope address as compared with header addresses: lower
// case, without white space or angle brackets.
func envAddr(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	return strings.ToLower(s)
}
