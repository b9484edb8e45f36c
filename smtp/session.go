package smtp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/internal/netwatch"
	"github.com/hisp-project/hisp/store"
)

// session is one SMTP session (go-smtp makes a new one after STARTTLS).
type session struct {
	s      *Server
	conn   *gosmtp.Conn
	tc     *trackedConn // nil only for connections not accepted by Serve
	remote string
	tls    bool
	log    *slog.Logger

	// mu guards the fields below: with BDAT, go-smtp runs Data in a
	// goroutine of its own while the connection goes on reading commands.
	mu    sync.Mutex
	user  Login // authenticated login (submission); zero: none
	size  int64 // SIZE the client declared in MAIL, 0 if none
	from  string
	rcpts []string
	seen  map[string]bool
	// rcptCount counts the accepted RCPT commands, duplicates included;
	// overflow is set once the transaction refused one over MaxRecipients.
	rcptCount int
	overflow  bool
}

// envelope returns the current transaction's envelope.
func (ss *session) envelope() Envelope {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return Envelope{MailFrom: ss.from, Recipients: append([]string(nil), ss.rcpts...), User: ss.user.Name,
		RelayDomains: ss.user.RelayDomains, RemoteAddr: ss.remote, TLS: ss.tls}
}

func (ss *session) login() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.user.Name
}

// submissionSession adds AUTH.
type submissionSession struct{ *session }

func (s *Server) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	tc := tracked(c.Conn())
	if tc != nil && tc.draining() {
		return nil, &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "Server shutting down, try again later"}
	}
	_, isTLS := c.TLSConnectionState()
	remote := c.Conn().RemoteAddr().String()
	ss := &session{
		s:      s,
		conn:   c,
		tc:     tc,
		remote: remote,
		tls:    isTLS,
		log:    s.log.With(slog.String("remote", remote), slog.Bool("tls", isTLS)),
		seen:   map[string]bool{},
	}
	if s.kind == "submission" {
		return submissionSession{ss}, nil
	}
	return ss, nil
}

// ctx is the context of the session's work; it ends when a shutdown gives
// up waiting.
func (ss *session) ctx() context.Context { return ss.s.handlerCtx }

// refuse logs a refusal, records it in the audit log when configured,
// counts it and returns it for go-smtp.
func (ss *session) refuse(action, subject string, r *Reply) error {
	ss.log.Info("smtp refused", slog.String("action", action), slog.String("subject", subject),
		slog.String("user", ss.login()), slog.String("reply", r.String()))
	ss.audit(action, subject, r.String())
	ss.countRefusal(action)
	return r.smtpError()
}

// The outcomes of a transaction, as Config.Transactions counts them.
const (
	outcomeAccepted = "accepted"
	outcomeRefused  = "refused"
	outcomeFailed   = "failed"
)

// countRefusal counts a refused command ("auth", "mail", "rcpt", "data");
// a refused MAIL or DATA is also a refused transaction.
func (ss *session) countRefusal(command string) {
	ss.s.cfg.Refusals.Inc(ss.s.kind, command)
	if command == "mail" || command == "data" {
		ss.countTransaction(outcomeRefused)
	}
}

// countTransaction counts the outcome of a transaction.
func (ss *session) countTransaction(outcome string) {
	ss.s.cfg.Transactions.Inc(ss.s.kind, outcome)
}

// audit writes the audit record of a refused or failed transaction step.
func (ss *session) audit(action, subject, reason string) {
	a := ss.s.cfg.Audit
	if a == nil {
		return
	}
	actor := ss.login()
	if actor == "" {
		actor = ss.remote
	}
	ev := store.Event{Actor: actor, Action: "smtp." + ss.s.kind + "." + action, Subject: subject,
		Verdict: "refused", Reason: reason}
	// The session's context may already be gone with the connection.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ss.ctx()), 10*time.Second)
	defer cancel()
	if err := a.Audit(ctx, ev); err != nil {
		ss.log.Warn("audit record failed", slog.String("error", err.Error()))
	}
}

func (ss *session) setBusy(b bool) {
	if ss.tc != nil {
		ss.tc.setBusy(b)
	}
}

// Reset ends the transaction (RSET, after DATA, new EHLO).
func (ss *session) Reset() {
	ss.mu.Lock()
	ss.from, ss.rcpts, ss.seen, ss.size = "", nil, map[string]bool{}, 0
	ss.rcptCount, ss.overflow = 0, false
	ss.mu.Unlock()
	ss.setBusy(false)
}

// Logout ends the session.
func (ss *session) Logout() error {
	ss.setBusy(false)
	return nil
}

// Mail starts a transaction.
func (ss *session) Mail(from string, opts *gosmtp.MailOptions) error {
	ss.setBusy(true)
	if opts != nil && opts.Size > 0 && opts.Size <= ss.s.cfg.MaxMessageBytes {
		ss.mu.Lock()
		ss.size = opts.Size
		ss.mu.Unlock()
	}
	err := ss.mail(from)
	if err != nil {
		ss.setBusy(false)
	}
	return err
}

func (ss *session) mail(from string) error {
	if ss.tc != nil && ss.tc.draining() {
		return ss.refuse("mail", from, errorf(421, "4.3.2", "Server shutting down, try again later"))
	}
	user := ss.login()
	if ss.s.kind == "submission" && user == "" {
		return ss.refuse("mail", from, errorf(530, "5.7.0", "Authentication required"))
	}
	if !isASCII(from) {
		return ss.refuse("mail", from, errorf(553, "5.6.7", "Non-ASCII address <%s> needs SMTPUTF8, which this server does not offer", from))
	}
	if from != "" {
		if err := checkAddress(from); err != nil {
			return ss.refuse("mail", from, errorf(553, "5.1.7", "Bad sender address syntax: %v", err))
		}
	}
	if ss.s.kind == "submission" {
		ss.mu.Lock()
		l := ss.user
		ss.mu.Unlock()
		if from == "" || !l.MaySendAs(from) {
			if l.RelayDomains != nil {
				return ss.refuse("mail", from, errorf(550, "5.7.1", "Sender <%s> is not in a domain of relay %s (%s)", from, user, strings.Join(l.RelayDomains, ", ")))
			}
			return ss.refuse("mail", from, errorf(550, "5.7.1", "Sender <%s> is not an address of login %s", from, user))
		}
	}
	ss.mu.Lock()
	ss.from = from
	ss.mu.Unlock()
	return nil
}

// Rcpt adds a recipient.
func (ss *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if !isASCII(to) {
		return ss.refuse("rcpt", to, errorf(553, "5.6.7", "Non-ASCII address <%s> needs SMTPUTF8, which this server does not offer", to))
	}
	if err := checkAddress(to); err != nil {
		return ss.refuse("rcpt", to, errorf(501, "5.1.3", "Bad recipient address syntax: %v", err))
	}
	if ss.s.kind == "backbone" {
		if r := ss.s.backbone.Recipients.CheckRecipient(ss.ctx(), to); r != nil {
			return ss.refuse("rcpt", to, r)
		}
	}
	key := strings.ToLower(to)
	ss.mu.Lock()
	full, first := false, false
	switch {
	case ss.rcptCount >= ss.s.cfg.MaxRecipients:
		// RFC 5321 4.5.3.1.10: 452, the client sends the rest later. The
		// first refusal of a transaction is audited; a flood of RCPTs
		// makes one record, not thousands.
		full, first = true, !ss.overflow
		ss.overflow = true
	case ss.seen[key]:
		ss.rcptCount++ // go-smtp keeps every accepted RCPT: duplicates count
	default:
		ss.rcptCount++
		ss.seen[key] = true
		ss.rcpts = append(ss.rcpts, to)
	}
	ss.mu.Unlock()
	if full {
		r := errorf(452, "4.5.3", "Too many recipients: at most %d per message", ss.s.cfg.MaxRecipients)
		if first {
			return ss.refuse("rcpt", to, r)
		}
		ss.countRefusal("rcpt")
		return r.smtpError()
	}
	return nil
}

// Data reads the message and hands it to the handler.
func (ss *session) Data(r io.Reader) error {
	env := ss.envelope()
	subject := env.MailFrom
	if ss.tc != nil {
		r = &deadlineReader{r: r, conn: ss.conn.Conn(), timeout: ss.s.cfg.DataTimeout}
	}
	cfg := &ss.s.cfg
	ss.mu.Lock()
	sizeHint := ss.size
	ss.mu.Unlock()
	msg, info, err := readMessage(r, cfg.MaxHeaderLines, cfg.MaxHeaderBytes, sizeHint)
	var hl *headerLimitError
	var ne net.Error
	switch {
	case err == nil:
	case errors.Is(err, gosmtp.ErrDataTooLarge):
		return ss.refuse("data", subject, errorf(552, "5.3.4", "Message too big: the limit is %d bytes", cfg.MaxMessageBytes))
	case errors.As(err, &hl):
		return ss.refuse("data", subject, errorf(552, "5.3.4", "Message refused: %v", hl))
	case errors.Is(err, gosmtp.ErrTooLongLine):
		return ss.refuse("data", subject, errorf(500, "5.5.2", "Line too long"))
	case errors.As(err, &ne) && ne.Timeout():
		ss.log.Info("smtp client stalled in DATA, nothing queued", slog.String("from", env.MailFrom), slog.String("user", env.User))
		ss.audit("data", subject, "client stalled in DATA, nothing queued")
		ss.countTransaction(outcomeFailed)
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "Timeout waiting for data, closing"}
	default:
		ss.log.Info("smtp connection lost in DATA, nothing queued", slog.String("from", env.MailFrom),
			slog.String("user", env.User), slog.String("error", err.Error()))
		ss.audit("data", subject, "connection lost in DATA, nothing queued: "+err.Error())
		ss.countTransaction(outcomeFailed)
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2}, Message: "Message transfer aborted"}
	}
	if len(bytes.TrimSpace(msg)) == 0 {
		return ss.refuse("data", subject, errorf(554, "5.6.0", "Empty message refused"))
	}
	if info.bareLF > 0 {
		ss.log.Info("smtp message with bare LF line ends, normalized to CRLF", slog.Int("lines", info.bareLF))
	}
	start := time.Now()
	var reply *Reply
	if ss.s.kind == "submission" {
		reply, err = ss.s.submission.Handler.Outbound(ss.ctx(), env, msg)
	} else {
		reply, err = ss.s.backbone.Handler.Inbound(ss.ctx(), env, msg)
	}
	attrs := []any{slog.String("from", env.MailFrom), slog.Int("rcpts", len(env.Recipients)), slog.Int("size", len(msg)),
		slog.String("user", env.User), slog.Duration("took", time.Since(start))}
	if err != nil {
		ss.log.Error("smtp message handler failed", append(attrs, slog.String("error", err.Error()))...)
		ss.countTransaction(outcomeFailed)
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later"}
	}
	if reply == nil {
		ss.log.Info("smtp message accepted", attrs...)
		ss.countTransaction(outcomeAccepted)
		return nil
	}
	if reply.Success() {
		ss.log.Info("smtp message accepted", append(attrs, slog.String("reply", reply.String()))...)
		ss.countTransaction(outcomeAccepted)
		return reply.smtpError() // go-smtp sends a 2xx "error" as the reply
	}
	ss.log.Info("smtp message refused by handler", append(attrs, slog.String("reply", reply.String()))...)
	ss.countRefusal("data")
	return reply.smtpError()
}

// AuthMechanisms lists PLAIN and LOGIN when AUTH is allowed on this
// connection (TLS, or loopback), none otherwise.
func (ss submissionSession) AuthMechanisms() []string {
	if !ss.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss submissionSession) authAllowed() bool {
	return ss.tls || ss.s.submission.InsecureAuth(ss.conn.Conn().LocalAddr())
}

// Auth starts an AUTH exchange.
func (ss submissionSession) Auth(mech string) (sasl.Server, error) {
	if !ss.authAllowed() {
		return nil, ss.refuse("auth", mech, errorf(538, "5.7.11", "Encryption required: use STARTTLS before AUTH"))
	}
	if ss.tc != nil {
		ss.s.mu.Lock()
		n := ss.tc.authFailures
		ss.s.mu.Unlock()
		if n >= ss.s.submission.MaxAuthFailures {
			return nil, ss.refuse("auth", mech, errorf(421, "4.7.0", "Too many authentication failures"))
		}
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && !strings.EqualFold(identity, username) {
				return ss.refuse("auth", username, errorf(535, "5.7.8", "Authorization identity must be the login"))
			}
			return ss.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{authenticate: ss.login}, nil
	}
	return nil, ss.refuse("auth", mech, errorf(504, "5.5.4", "Unsupported authentication mechanism %q", mech))
}

// login checks a password (and, for a relay account, the client's address
// and certificate).
func (ss submissionSession) login(username, password string) error {
	c := Credentials{Username: username, Password: password}
	if ap, err := netip.ParseAddrPort(ss.remote); err == nil {
		c.Remote = ap.Addr().Unmap()
	}
	if st, ok := ss.conn.TLSConnectionState(); ok {
		c.PeerCertificates = st.PeerCertificates
	}
	// Waits end when the client leaves or the server stops, so that an
	// abandoned login holds no socket (netwatch).
	ctx, cancel := netwatch.Peer(ss.s.stopping, ss.conn.Conn())
	defer cancel()
	logins, ip := ss.s.submission.Logins, c.Remote.String()
	// After failures, attempts take turns (loginlimit): guesses are slow
	// over any number of connections and IPs, and a right one is not told
	// sooner than a wrong one.
	attempt := loginlimit.Attempt{Name: username, IP: ip}
	if t, ok := ss.s.submission.Auth.(ClientTruster); ok && len(c.PeerCertificates) > 0 {
		attempt.Trusted = t.TrustedClient(ctx, c)
	}
	if err := logins.Wait(ctx, attempt, ss.s.submission.LoginSleep); err != nil {
		return ss.loginWaitFailed(username, err)
	}
	l, err := ss.s.submission.Auth.Authenticate(ss.ctx(), c)
	if errors.Is(err, store.ErrBadCredentials) {
		if ss.tc != nil {
			ss.s.mu.Lock()
			ss.tc.authFailures++
			ss.s.mu.Unlock()
		}
		// The client learns nothing, and late; the log and the audit
		// record say why.
		delay := logins.Fail(username, ip)
		r := errorf(535, "5.7.8", "Authentication credentials invalid")
		ss.log.Info("smtp refused", slog.String("action", "auth"), slog.String("subject", username),
			slog.String("reply", r.String()), slog.String("why", err.Error()), slog.Duration("delay", delay))
		ss.audit("auth", username, r.String()+" ("+err.Error()+")")
		ss.countRefusal("auth")
		ss.s.submission.LoginSleep(ctx, delay)
		return r.smtpError()
	} else if err != nil {
		ss.log.Error("smtp authentication failed", slog.String("login", username), slog.String("error", err.Error()))
		return errorf(454, "4.7.0", "Temporary authentication failure").smtpError()
	}
	ss.s.submission.Logins.Succeed(username, c.Remote.String())
	ss.mu.Lock()
	ss.user = l
	ss.mu.Unlock()
	if l.RelayDomains != nil {
		ss.log.Info("smtp authenticated", slog.String("relay", l.Name), slog.String("domains", strings.Join(l.RelayDomains, " ")))
	} else {
		ss.log.Info("smtp authenticated", slog.String("user", l.Name))
	}
	return nil
}

// loginWaitFailed answers a login that did not get its turn: too many
// attempts waiting, or the client gone (nobody reads the answer) or the
// server stopping. The password was not checked.
func (ss submissionSession) loginWaitFailed(username string, err error) error {
	if errors.Is(err, loginlimit.ErrBusy) {
		r := errorf(454, "4.7.0", "Too many login attempts, try again later")
		ss.log.Info("smtp refused", slog.String("action", "auth"), slog.String("subject", username), slog.String("reply", r.String()))
		ss.countRefusal("auth")
		return r.smtpError()
	}
	ss.log.Debug("smtp login abandoned while waiting its turn", slog.String("subject", username))
	return errorf(421, "4.4.2", "Connection closed while waiting").smtpError()
}

// loginServer is the server side of the LOGIN mechanism (not in go-sasl):
// "Username:", "Password:", with the user name optionally as the initial
// response.
type loginServer struct {
	step         int
	username     string
	authenticate func(username, password string) error
}

func (a *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch a.step {
	case 0:
		if response == nil {
			a.step = 1
			return []byte("Username:"), false, nil
		}
		a.username, a.step = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		a.username, a.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		a.step = 3
		return nil, true, a.authenticate(a.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}

// deadlineReader moves the read deadline before each read of at most 4 KB,
// so that DATA times out when the client stops sending (or sends less than
// 4 KB per timeout), however long the message.
type deadlineReader struct {
	r       io.Reader
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if len(p) > 4096 {
		p = p[:4096]
	}
	d.conn.SetReadDeadline(time.Now().Add(d.timeout))
	return d.r.Read(p)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkAddress checks the form of an envelope address: local@domain, a
// local part of printable ASCII, a host name as domain.
func checkAddress(a string) error {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return errors.New("want local@domain")
	}
	if i > 64 {
		return errors.New("local part longer than 64 characters")
	}
	for _, c := range a[:i] {
		if c <= ' ' || c >= 0x7f {
			return errors.New("control character or space in local part")
		}
	}
	if _, err := store.NormalizeDomain(a[i+1:]); err != nil {
		return err
	}
	return nil
}
