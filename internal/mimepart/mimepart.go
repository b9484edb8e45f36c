// Package mimepart finds the parts of a MIME message by their byte offsets,
// so that parts can be added beside others without re-encoding anything:
// the agent adds the documents of an XDM package and a readable view of a
// C-CDA document to a message whose own parts stay byte for byte as they
// came. It reads what it is given leniently (a part it cannot read is a
// leaf), within limits on depth and part count.
package mimepart

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// Limits of Parse.
const (
	MaxDepth = 16   // multipart nesting
	MaxParts = 1000 // parts in all
)

// Part is one entity of a message: the message itself or a part of a
// multipart. Offsets index the message given to Parse.
type Part struct {
	// Start is where the part's header begins, BodyStart where its body
	// begins, End where its body ends (before the line break that
	// precedes the next boundary).
	Start, BodyStart, End int
	Header                Header
	MediaType             string // lower case; "text/plain" when absent
	Params                map[string]string
	Encoding              string // Content-Transfer-Encoding, lower case
	// Boundary and Children are set for a multipart that was read.
	Boundary string
	Children []*Part
}

// Header is a part's header: lower-case names and unfolded values, in
// order.
type Header [][2]string

// Get returns the first value of a field, "" if none.
func (h Header) Get(name string) string {
	name = strings.ToLower(name)
	for _, f := range h {
		if f[0] == name {
			return f[1]
		}
	}
	return ""
}

// Parse reads the structure of msg, a whole message.
func Parse(msg []byte) *Part {
	n := 0
	return parse(msg, 0, len(msg), 0, &n)
}

func parse(msg []byte, start, end, depth int, count *int) *Part {
	*count++
	p := &Part{Start: start, End: end}
	hdr, bodyStart := readHeader(msg[start:end])
	p.Header = hdr
	p.BodyStart = start + bodyStart
	p.MediaType, p.Params = "text/plain", map[string]string{}
	if ct := hdr.Get("content-type"); ct != "" {
		if mt, params, err := mime.ParseMediaType(ct); err == nil {
			p.MediaType, p.Params = mt, params
		} else if mt, _, _ := strings.Cut(ct, ";"); mt != "" {
			p.MediaType = strings.ToLower(strings.TrimSpace(mt))
		}
	}
	p.Encoding = strings.ToLower(strings.TrimSpace(hdr.Get("content-transfer-encoding")))
	if !strings.HasPrefix(p.MediaType, "multipart/") || p.Params["boundary"] == "" || depth >= MaxDepth {
		return p
	}
	p.Boundary = p.Params["boundary"]
	for _, r := range splitMultipart(msg, p.BodyStart, end, p.Boundary) {
		if *count >= MaxParts {
			break
		}
		p.Children = append(p.Children, parse(msg, r[0], r[1], depth+1, count))
	}
	return p
}

// readHeader reads a header block from the start of b; it returns the
// fields and the offset of the body (after the empty line).
func readHeader(b []byte) (Header, int) {
	var h Header
	i := 0
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '\n')
		line := b[i:]
		next := len(b)
		if j >= 0 {
			line, next = b[i:i+j], i+j+1
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return h, next
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h) > 0 {
			h[len(h)-1][1] += " " + strings.TrimSpace(string(line))
		} else if name, value, ok := bytes.Cut(line, []byte(":")); ok {
			h = append(h, [2]string{strings.ToLower(strings.TrimSpace(string(name))), strings.TrimSpace(string(value))})
		} else if len(h) == 0 {
			// No header at all: the part is all body.
			return nil, 0
		}
		i = next
	}
	return h, len(b)
}

// splitMultipart returns the [start, end) ranges of the parts of a
// multipart body between start and end.
func splitMultipart(msg []byte, start, end int, boundary string) [][2]int {
	delim := []byte("--" + boundary)
	var out [][2]int
	partStart := -1
	for i := start; i < end; {
		j := bytes.Index(msg[i:end], delim)
		if j < 0 {
			break
		}
		at := i + j
		if at != start && msg[at-1] != '\n' {
			i = at + len(delim)
			continue
		}
		after := at + len(delim)
		closing := bytes.HasPrefix(msg[after:end], []byte("--"))
		// The rest of the line must be white space.
		eol := bytes.IndexByte(msg[after:end], '\n')
		lineEnd := end
		if eol >= 0 {
			lineEnd = after + eol + 1
		}
		rest := msg[after:lineEnd]
		if closing {
			rest = rest[2:]
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			i = after
			continue
		}
		if partStart >= 0 {
			pe := at
			if pe > partStart && msg[pe-1] == '\n' {
				pe--
				if pe > partStart && msg[pe-1] == '\r' {
					pe--
				}
			}
			out = append(out, [2]int{partStart, pe})
		}
		if closing {
			return out
		}
		partStart = lineEnd
		i = lineEnd
	}
	if partStart >= 0 && partStart < end {
		out = append(out, [2]int{partStart, end}) // no closing delimiter
	}
	return out
}

// Leaves returns the parts that are not multiparts, in order.
func (p *Part) Leaves() []*Part {
	if len(p.Children) == 0 {
		return []*Part{p}
	}
	var out []*Part
	for _, c := range p.Children {
		out = append(out, c.Leaves()...)
	}
	return out
}

// Parent returns the multipart that holds q, or nil.
func (p *Part) Parent(q *Part) *Part {
	for _, c := range p.Children {
		if c == q {
			return p
		}
		if r := c.Parent(q); r != nil {
			return r
		}
	}
	return nil
}

// ErrTooLarge is returned by Decode for a body larger than its limit.
var ErrTooLarge = errors.New("part too large")

// Decode returns the part's body, transfer-decoded, refusing a body of more
// than limit bytes before it is decoded.
func (p *Part) Decode(msg []byte, limit int) ([]byte, error) {
	body := msg[p.BodyStart:p.End]
	if len(body) > limit*4/3+4096 {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(body))
	}
	switch p.Encoding {
	case "base64":
		// Into one buffer of the largest size the body can decode to.
		out := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
		dec := base64.NewDecoder(base64.StdEncoding, &stripper{b: body})
		n, err := io.ReadFull(dec, out)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return nil, fmt.Errorf("base64: %w", err)
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, fmt.Errorf("quoted-printable: %w", err)
		}
		return out, nil
	}
	return body, nil
}

// stripper reads b without white space (line breaks of base64).
type stripper struct{ b []byte }

func (s *stripper) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(s.b) > 0 {
		c := s.b[0]
		s.b = s.b[1:]
		if c == '\r' || c == '\n' || c == ' ' || c == '\t' {
			continue
		}
		p[n] = c
		n++
	}
	if n == 0 && len(s.b) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// FileName returns the part's file name: Content-Disposition's filename,
// else Content-Type's name, decoded (RFC 2231, RFC 2047), without any
// folder.
func (p *Part) FileName() string {
	name := ""
	if cd := p.Header.Get("content-disposition"); cd != "" {
		if _, params, err := mime.ParseMediaType(cd); err == nil {
			name = params["filename"]
		}
	}
	if name == "" {
		name = p.Params["name"]
	}
	if strings.Contains(name, "=?") {
		if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
			name = dec
		}
	}
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return name
}

// ContentID returns the part's Content-ID without angle brackets.
func (p *Part) ContentID() string {
	return strings.Trim(strings.TrimSpace(p.Header.Get("content-id")), "<>")
}

// NewBoundary returns a boundary that does not occur in msg.
func NewBoundary(msg []byte, seed string) string {
	for i := 0; ; i++ {
		b := fmt.Sprintf("=_hisp_%s_%d", seed, i)
		if !bytes.Contains(msg, []byte(b)) {
			return b
		}
	}
}

// Attachment returns a MIME part: its header and body, base64 in lines of
// 76 characters, ending without a line break.
func Attachment(mediaType, fileName string, extraHeader string, data []byte) []byte {
	var b bytes.Buffer
	enc64 := (len(data) + 2) / 3 * 4
	b.Grow(len(mediaType) + len(fileName)*2 + len(extraHeader) + 256 + enc64 + (enc64/76+1)*2)
	params := map[string]string{}
	if mt, ps, err := mime.ParseMediaType(mediaType); err == nil {
		mediaType, params = mt, ps
	}
	if fileName != "" {
		params["name"] = fileName
	}
	ct := mime.FormatMediaType(mediaType, params)
	if ct == "" {
		ct = mime.FormatMediaType("application/octet-stream", params)
	}
	b.WriteString("Content-Type: " + ct + "\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	if fileName != "" {
		if cd := mime.FormatMediaType("attachment", map[string]string{"filename": fileName}); cd != "" {
			b.WriteString("Content-Disposition: " + cd + "\r\n")
		}
	}
	b.WriteString(extraHeader)
	b.WriteString("\r\n")
	enc := base64.StdEncoding
	line := make([]byte, 76)
	for i := 0; i < len(data); i += 57 {
		chunk := data[i:min(i+57, len(data))]
		n := enc.EncodedLen(len(chunk))
		enc.Encode(line, chunk)
		b.Write(line[:n])
		if i+57 < len(data) {
			b.WriteString("\r\n")
		}
	}
	return b.Bytes()
}

// Insertion is bytes to put into a message at an offset: the pieces of
// Data, one after the other.
type Insertion struct {
	At   int
	Data [][]byte
}

// After returns the insertion that adds part (made by Attachment) to the
// multipart parent right after its child c.
func After(parent, c *Part, part []byte) Insertion {
	return Insertion{At: c.End, Data: [][]byte{[]byte("\r\n--" + parent.Boundary + "\r\n"), part}}
}

// Apply returns msg with the insertions made (in order of offset; equal
// offsets keep their order).
func Apply(msg []byte, ins []Insertion) []byte {
	n := len(msg)
	for _, in := range ins {
		for _, d := range in.Data {
			n += len(d)
		}
	}
	// Stable by offset.
	sorted := append([]Insertion(nil), ins...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j].At < sorted[j-1].At; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	out := make([]byte, 0, n)
	last := 0
	for _, in := range sorted {
		out = append(out, msg[last:in.At]...)
		for _, d := range in.Data {
			out = append(out, d...)
		}
		last = in.At
	}
	return append(out, msg[last:]...)
}
