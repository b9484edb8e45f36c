package smime

import (
	"bufio"
	"bytes"
	"fmt"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// entity is one MIME entity held as slices of the bytes it was read from,
// so that signed content is verified exactly as received (MF-07).
type entity struct {
	header    textproto.Header
	rawHeader []byte // header block including the blank line that ends it
	body      []byte
	mediaType string            // lower case, "" when absent
	params    map[string]string // Content-Type parameters
}

// parseEntity splits b into header and body and parses the header with
// go-message's textproto reader. A header block that does not end with an
// empty line is an error; an empty header is allowed.
func parseEntity(b []byte) (*entity, error) {
	rd := bytes.NewReader(b)
	br := bufio.NewReader(rd)
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	// The reader stopped just past the empty line, or at the end of b when
	// there was none (which textproto accepts and a MIME entity does not).
	end := len(b) - rd.Len() - br.Buffered()
	if !endsWithEmptyLine(b[:end]) {
		return nil, fmt.Errorf("%w: header does not end with an empty line", ErrMalformed)
	}
	e := &entity{header: h, rawHeader: b[:end], body: b[end:]}
	if ct := h.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Type %q: %v", ErrMalformed, ct, err)
		}
		e.mediaType, e.params = strings.ToLower(mt), params
	}
	return e, nil
}

// endsWithEmptyLine reports whether a header block read by textproto ends
// with the empty line that separates it from the body: "\n" or "\r\n"
// alone, or after a line end.
func endsWithEmptyLine(h []byte) bool {
	h, ok := bytes.CutSuffix(h, []byte("\n"))
	if !ok {
		return false
	}
	h = bytes.TrimSuffix(h, []byte("\r"))
	return len(h) == 0 || h[len(h)-1] == '\n'
}

// canonicalize returns b with every line ending as CRLF (RFC 5751 §3.1.1).
// It returns b itself when it is already canonical.
func canonicalize(b []byte) []byte {
	bare := 0
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			bare++
		}
	}
	if bare == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+bare)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// splitMultipart returns the body parts of a multipart body as slices of
// body, per RFC 2046 §5.1.1: a part is what lies between the line end
// after a delimiter line and the line end before the next delimiter line.
func splitMultipart(body []byte, boundary string) ([][]byte, error) {
	if boundary == "" || len(boundary) > 70 {
		return nil, fmt.Errorf("%w: multipart boundary missing or too long", ErrMalformed)
	}
	delim := []byte("--" + boundary)
	var parts [][]byte
	start := -1 // start of the current part, -1 before the first delimiter
	for pos := 0; pos <= len(body); {
		// Find the next line that starts with the delimiter.
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		i += pos
		if i > 0 && body[i-1] != '\n' {
			pos = i + len(delim)
			continue
		}
		after := body[i+len(delim):]
		closing := bytes.HasPrefix(after, []byte("--"))
		rest := after
		if closing {
			rest = after[2:]
		}
		// Only linear white space may follow the delimiter on its line.
		eol := bytes.IndexByte(rest, '\n')
		line := rest
		if eol >= 0 {
			line = rest[:eol]
		}
		if len(bytes.Trim(line, " \t\r")) != 0 {
			pos = i + len(delim)
			continue
		}
		if start >= 0 {
			end := i
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			if end < start {
				end = start
			}
			parts = append(parts, body[start:end])
		}
		if closing {
			return parts, nil
		}
		if eol < 0 {
			break
		}
		next := i + len(delim) + eol + 1
		start = next
		pos = next
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: multipart body has no parts", ErrMalformed)
	}
	// A missing closing delimiter is tolerated when parts were found; the
	// last open part is dropped, as it was never terminated.
	return parts, nil
}
