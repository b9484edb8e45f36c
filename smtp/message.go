package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// headerLimitError is returned by readMessage for a header section over
// the limits (a header bomb).
type headerLimitError struct {
	lines, bytes bool
	limit        int
}

func (e *headerLimitError) Error() string {
	if e.lines {
		return fmt.Sprintf("message header has more than %d lines", e.limit)
	}
	return fmt.Sprintf("message header is larger than %d bytes", e.limit)
}

// messageInfo describes what readMessage saw.
type messageInfo struct {
	headerLines int
	bareLF      int // bare LF line ends turned into CRLF
}

// readMessage reads a message (the DATA content, dot-unstuffed) into
// memory, checking the header section against the limits as it goes, and
// turns bare LF line ends into CRLF. Errors of r are returned as they are
// (go-smtp's size limit, time-outs, a dropped connection).
func readMessage(r io.Reader, maxHeaderLines, maxHeaderBytes int, sizeHint int64) ([]byte, messageInfo, error) {
	var info messageInfo
	br := bufio.NewReaderSize(r, 32<<10)
	var out bytes.Buffer
	// A client that declared the SIZE of its message gets one buffer of
	// that size (plus room for line ends) instead of repeated doubling.
	if sizeHint > 0 {
		out.Grow(int(sizeHint + sizeHint/64 + 1024))
	}
	inHeader := true
	headerBytes := 0
	lineStart := true // at the start of a line
	prevCR := false   // the previous chunk ended in CR
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if inHeader {
				headerBytes += len(chunk)
				if lineStart {
					if isBlankLine(chunk) {
						inHeader = false
					} else {
						info.headerLines++
					}
				}
				if inHeader && info.headerLines > maxHeaderLines {
					return nil, info, &headerLimitError{lines: true, limit: maxHeaderLines}
				}
				if inHeader && headerBytes > maxHeaderBytes {
					return nil, info, &headerLimitError{bytes: true, limit: maxHeaderBytes}
				}
			}
			if chunk[len(chunk)-1] == '\n' {
				body := chunk[:len(chunk)-1]
				cr := len(body) > 0 && body[len(body)-1] == '\r' || len(body) == 0 && prevCR
				out.Write(body)
				if !cr {
					out.WriteByte('\r')
					info.bareLF++
				}
				out.WriteByte('\n')
				prevCR = false
			} else {
				out.Write(chunk)
				prevCR = chunk[len(chunk)-1] == '\r'
			}
		}
		switch {
		case err == nil:
			lineStart = true
		case errors.Is(err, bufio.ErrBufferFull):
			lineStart = false
		case err == io.EOF:
			return out.Bytes(), info, nil
		default:
			return nil, info, err
		}
	}
}

// isBlankLine reports the empty line that ends a header section ("\r\n" or
// a bare "\n").
func isBlankLine(line []byte) bool {
	return bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n"))
}
