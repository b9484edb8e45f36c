package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// client is the deliverer's SMTP client: one connection to a next hop, for
// one or more transactions. It is ours rather than go-smtp's so that EHLO
// carries our name before STARTTLS, deadlines follow each step and every
// reply comes back with its code whatever it is.
type client struct {
	conn       net.Conn
	tp         *textproto.Conn
	host       string // name of the server (MX target, route host)
	addr       string // ip:port dialed
	ext        map[string]string
	tls        bool
	cmdTimeout time.Duration
	dataTime   time.Duration
	stop       func() bool // ends the context watch
}

// maxReplyLine bounds a reply line from the server.
const maxReplyLine = 4096

// lineLimit fails a read once a line gets longer than max, so a hostile
// server cannot make us buffer without end.
type lineLimit struct {
	r   io.Reader
	max int
	cur int
}

func (l *lineLimit) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, c := range p[:n] {
		if c == '\n' {
			l.cur = 0
		} else if l.cur++; l.cur > l.max {
			return 0, errors.New("reply line too long")
		}
	}
	return n, err
}

func (c *client) setConn(conn net.Conn) {
	c.conn = conn
	c.tp = textproto.NewConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{bufio.NewReader(&lineLimit{r: conn, max: maxReplyLine}), conn, conn})
}

// protocolError is a malformed or unexpected exchange: the connection is
// unusable.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

// readReply reads a reply, of any code.
func (c *client) readReply(timeout time.Duration) (*Reply, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			return nil, &protocolError{msg: fmt.Sprintf("malformed reply from %s: %v", c.host, err)}
		}
		return nil, err
	}
	return parseReply(code, msg), nil
}

// parseReply splits the enhanced status code off a reply's text; each
// line of a multi-line reply may repeat it.
func parseReply(code int, msg string) *Reply {
	r := &Reply{Code: code}
	lines := strings.Split(msg, "\n")
	for i, line := range lines {
		first, rest, _ := strings.Cut(line, " ")
		if _, ok := parseEnhanced(first); ok && first[0] == byte('0'+code/100) {
			if r.Enhanced == "" {
				r.Enhanced = first
			}
			lines[i] = rest
		}
	}
	r.Message = strings.Join(lines, "\n")
	return r
}

// cmd sends a command and reads its reply.
func (c *client) cmd(format string, args ...any) (*Reply, error) {
	c.conn.SetWriteDeadline(time.Now().Add(c.cmdTimeout))
	if err := c.tp.PrintfLine(format, args...); err != nil {
		return nil, err
	}
	return c.readReply(c.cmdTimeout)
}

// hello sends EHLO (HELO if EHLO is not understood) and records the
// extensions.
func (c *client) hello(name string) (*Reply, error) {
	r, err := c.cmd("EHLO %s", name)
	if err != nil {
		return nil, err
	}
	c.ext = map[string]string{}
	if r.Code == 500 || r.Code == 502 {
		r, err = c.cmd("HELO %s", name)
		if err != nil {
			return nil, err
		}
	} else if r.Code == 250 {
		lines := strings.Split(r.Message, "\n")
		for _, l := range lines[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
			c.ext[strings.ToUpper(k)] = v
		}
	}
	if r.Code != 250 {
		return r, nil
	}
	return nil, nil
}

// startTLS upgrades the connection after STARTTLS.
func (c *client) startTLS(ctx context.Context, cfg *tls.Config) (*Reply, error) {
	r, err := c.cmd("STARTTLS")
	if err != nil {
		return nil, err
	}
	if r.Code != 220 {
		return r, nil
	}
	tc := tls.Client(c.conn, cfg)
	c.conn.SetDeadline(time.Now().Add(c.cmdTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &tlsError{err: err}
	}
	c.conn.SetDeadline(time.Time{})
	c.setConn(tc)
	c.tls = true
	return nil, nil
}

// tlsError is a failed TLS handshake.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// send runs one mail transaction and returns a reply per recipient (in
// order). An error means the connection failed (network, protocol) and is
// unusable; the recipients then have no reply. A recipient refused at RCPT
// keeps that reply; the others get the reply to the message.
func (c *client) send(from string, rcpts []string, data []byte) ([]*Reply, error) {
	replies := make([]*Reply, len(rcpts))
	all := func(r *Reply) []*Reply {
		for i := range replies {
			if replies[i] == nil || replies[i].Success() {
				replies[i] = r
			}
		}
		return replies
	}
	var params string
	if v, ok := c.ext["SIZE"]; ok {
		if max, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && max > 0 && int64(len(data)) > max {
			return all(&Reply{Code: 552, Enhanced: "5.3.4",
				Message: fmt.Sprintf("message of %d bytes is larger than the %d bytes %s accepts", len(data), max, c.host)}), nil
		}
		params += fmt.Sprintf(" SIZE=%d", len(data))
	}
	if _, ok := c.ext["8BITMIME"]; ok && !isASCII(string(data)) {
		params += " BODY=8BITMIME"
	}
	r, err := c.cmd("MAIL FROM:<%s>%s", from, params)
	if err != nil {
		return nil, err
	}
	if r.Code != 250 {
		return all(r), c.rset(r)
	}
	accepted := 0
	for i, rcpt := range rcpts {
		r, err := c.cmd("RCPT TO:<%s>", rcpt)
		if err != nil {
			return nil, err
		}
		replies[i] = r
		if r.Success() {
			accepted++
		} else if r.Code == 421 {
			return all(r), errClosing
		}
	}
	if accepted == 0 {
		return replies, c.rset(nil)
	}
	r, err = c.cmd("DATA")
	if err != nil {
		return nil, err
	}
	if r.Code != 354 {
		return all(r), c.rset(r)
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.dataTime))
	w := c.tp.DotWriter()
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	r, err = c.readReply(c.dataTime)
	if err != nil {
		return nil, err
	}
	all(r)
	if r.Code == 421 {
		return replies, errClosing
	}
	return replies, nil
}

// errClosing reports a 421 reply: the server is closing the connection.
var errClosing = errors.New("server is closing the connection")

// rset ends a failed transaction so the connection can be reused. A 421
// reply means the server closes: the connection is not reusable.
func (c *client) rset(last *Reply) error {
	if last != nil && last.Code == 421 {
		return errClosing
	}
	r, err := c.cmd("RSET")
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return errClosing
	}
	return nil
}

// quit ends the session politely and closes the connection.
func (c *client) quit() {
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	c.cmd("QUIT")
	c.close()
}

func (c *client) close() {
	if c.stop != nil {
		c.stop()
	}
	c.conn.Close()
}
