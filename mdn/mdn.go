package mdn

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"

	gotextproto "github.com/emersion/go-message/textproto"
	"strings"
	"time"
	"unicode/utf8"
)

// Message disposition notifications (MDN, RFC 8098, and RFC 3798 before it)
// as Direct uses them (Applicability Statement §3; Implementation Guide for
// Delivery Notification in Direct, "DNIG"): the receiving HISP answers every
// trusted message with a processed MDN, and a message that asks for timely
// and reliable delivery with a dispatched MDN once it is in the mailbox, or a
// failed one if it cannot be put there.

// Disposition is an MDN disposition type (RFC 8098 §3.2.6.2), lower case.
type Disposition string

// The disposition types. Direct uses processed, dispatched and failed;
// failed (and denied) come from RFC 3798, which the Direct documents cite.
const (
	DispositionProcessed  Disposition = "processed"
	DispositionDispatched Disposition = "dispatched"
	DispositionFailed     Disposition = "failed"
	DispositionDisplayed  Disposition = "displayed"
	DispositionDeleted    Disposition = "deleted"
	DispositionDenied     Disposition = "denied"
)

// FinalDestinationDelivery is the name of the Direct extension (DNIG §1.3):
// the parameter of Disposition-Notification-Options that asks for timely
// and reliable delivery ("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"),
// and the field, with an empty value, of the dispatched MDN that answers it.
const FinalDestinationDelivery = "X-DIRECT-FINAL-DESTINATION-DELIVERY"

// The disposition mode of every notice a HISP sends on its own.
const (
	AutomaticAction      = "automatic-action"
	MDNSentAutomatically = "MDN-sent-automatically"
)

// defaultReportingUAName is the ua-product of a default Reporting-UA.
const defaultReportingUAName = "hisp"

// MDN is a message disposition notification: what BuildMDN writes and
// ParseMDN reads. Fields may be added; callers ignore those they do not
// know.
type MDN struct {
	// The notice's own header. From is the address of the recipient who
	// reports, To the original sender. BuildMDN makes up Date (now) and
	// MessageID (<random@From's domain>) when they are zero, and the
	// Subject from OriginalSubject ("Processed: ...").
	From, To        string
	Subject         string
	OriginalSubject string // build only
	MessageID       string
	Date            time.Time

	// The message/disposition-notification fields (RFC 8098 §3.1).
	// ReportingUA is "ua-name; ua-product"; FinalRecipient and
	// OriginalRecipient are bare addresses (written with the rfc822 type);
	// OriginalMessageID is the Message-ID of the message reported on, with
	// its angle brackets.
	ReportingUA       string
	OriginalRecipient string
	FinalRecipient    string
	OriginalMessageID string
	// ActionMode and SendingMode default to automatic-action and
	// MDN-sent-automatically.
	ActionMode, SendingMode string
	Disposition             Disposition
	Modifiers               []string // disposition modifiers ("error"), lower case
	// FinalDestination is the X-DIRECT-FINAL-DESTINATION-DELIVERY field:
	// Direct puts it in a dispatched MDN that answers a request for timely
	// and reliable delivery (DNIG; DN-03) and nowhere else.
	FinalDestination bool
	// Failure is the Failure field (RFC 3798 §3.2.7) of a failed MDN, which
	// BuildMDN requires; Error is the Error field (RFC 8098 §3.2.7).
	// One line each: BuildMDN folds whitespace.
	Failure, Error string

	// Text is the human-readable part; BuildMDN writes one when empty.
	Text string
}

// Recipient returns the address the notice is about: the Final-Recipient,
// else the Original-Recipient, else the notice's From (some
// implementations leave Final-Recipient out).
func (m *MDN) Recipient() string {
	for _, s := range []string{m.FinalRecipient, m.OriginalRecipient, m.From} {
		if s != "" {
			return s
		}
	}
	return ""
}

// BuildMDN returns an MDN as an RFC 5322 message: multipart/report;
// report-type=disposition-notification with a human-readable part and a
// message/disposition-notification part. It never writes a
// Disposition-Notification-To field (a notice must not ask for one, MDN-03),
// and refuses header values with line breaks.
func BuildMDN(m MDN) ([]byte, error) {
	if m.From == "" || m.To == "" || m.Disposition == "" {
		return nil, errors.New("build MDN: need From, To and a disposition")
	}
	m, err := completeMDN(m)
	if err != nil {
		return nil, err
	}
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	id := m.MessageID
	if id == "" {
		id = fmt.Sprintf("<%s@%s>", randomID(), hostOr(domainOf(m.From)))
	}
	subject := mdnSubject(m)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	var h bytes.Buffer
	fmt.Fprintf(&h, "From: <%s>\r\n", m.From)
	fmt.Fprintf(&h, "To: <%s>\r\n", m.To)
	fmt.Fprintf(&h, "Subject: %s\r\n", subject)
	fmt.Fprintf(&h, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&h, "Message-ID: %s\r\n", id)
	if isMsgID(m.OriginalMessageID) {
		fmt.Fprintf(&h, "In-Reply-To: %s\r\n", m.OriginalMessageID)
		fmt.Fprintf(&h, "References: %s\r\n", m.OriginalMessageID)
	}
	h.WriteString("Auto-Submitted: auto-replied\r\n")
	h.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&h, "Content-Type: multipart/report; report-type=disposition-notification;\r\n boundary=\"%s\"\r\n\r\n", mw.Boundary())

	// The human-readable part, quoted-printable: the original subject may
	// be in any script.
	pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Transfer-Encoding": {"quoted-printable"}})
	if err != nil {
		return nil, err
	}
	text := m.Text
	if text == "" {
		text = humanText(m)
	}
	qw := quotedprintable.NewWriter(pw)
	io.WriteString(qw, strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n"))
	if err := qw.Close(); err != nil {
		return nil, err
	}

	// message/disposition-notification (RFC 8098 §3.1).
	pw, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"message/disposition-notification"}, "Content-Transfer-Encoding": {"7bit"}})
	if err != nil {
		return nil, err
	}
	io.WriteString(pw, notificationFields(m))
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return append(h.Bytes(), buf.Bytes()...), nil
}

// completeMDN fills in the defaults of an MDN to build and checks it.
func completeMDN(m MDN) (MDN, error) {
	if m.FinalRecipient == "" {
		m.FinalRecipient = m.From
	}
	if m.ActionMode == "" {
		m.ActionMode = AutomaticAction
	}
	if m.SendingMode == "" {
		m.SendingMode = MDNSentAutomatically
	}
	if m.ReportingUA == "" {
		m.ReportingUA = domainOf(m.From) + "; " + defaultReportingUAName
	}
	m.Failure, m.Error = oneLine(m.Failure), oneLine(m.Error)
	if m.Disposition == DispositionFailed && m.Failure == "" {
		return m, errors.New("build MDN: a failed disposition needs a Failure text")
	}
	for _, s := range []string{m.From, m.To, m.MessageID, m.ReportingUA, m.OriginalRecipient, m.FinalRecipient, m.OriginalMessageID} {
		if strings.ContainsAny(s, "\r\n\x00") {
			return m, errors.New("build MDN: line break in a header value")
		}
	}
	for _, s := range append([]string{string(m.Disposition), m.ActionMode, m.SendingMode}, m.Modifiers...) {
		if !isToken(s) {
			return m, fmt.Errorf("build MDN: %q is not a disposition token", s)
		}
	}
	return m, nil
}

// mdnSubject is the Subject of an MDN: its own, or the disposition's with
// the original subject, encoded when it is not ASCII.
func mdnSubject(m MDN) string {
	subject := m.Subject
	if subject == "" {
		subject = subjectPrefix(m.Disposition)
		if s := oneLine(m.OriginalSubject); s != "" {
			subject += ": " + truncate(s, 200)
		}
	}
	subject = oneLine(subject)
	if !isASCII(subject) {
		subject = mime.QEncoding.Encode("utf-8", subject)
	}

	return subject
}

// notificationFields is the message/disposition-notification part of an
// MDN (RFC 8098 §3.1, MDN-04, DN-03).
func notificationFields(m MDN) string {
	var f strings.Builder
	fmt.Fprintf(&f, "Reporting-UA: %s\r\n", m.ReportingUA)
	if m.OriginalRecipient != "" {
		fmt.Fprintf(&f, "Original-Recipient: rfc822; %s\r\n", m.OriginalRecipient)
	}
	fmt.Fprintf(&f, "Final-Recipient: rfc822; %s\r\n", m.FinalRecipient)
	if m.OriginalMessageID != "" {
		fmt.Fprintf(&f, "Original-Message-ID: %s\r\n", m.OriginalMessageID)
	}
	disp := fmt.Sprintf("%s/%s; %s", m.ActionMode, m.SendingMode, m.Disposition)
	if len(m.Modifiers) > 0 {
		disp += "/" + strings.Join(m.Modifiers, ",")
	}
	fmt.Fprintf(&f, "Disposition: %s\r\n", disp)
	if m.FinalDestination {
		// DNIG: the extension field with no value, as the reference
		// implementation and the Edge Testing Tool write it.
		fmt.Fprintf(&f, "%s:\r\n", FinalDestinationDelivery)
	}
	if m.Failure != "" {
		fmt.Fprintf(&f, "Failure: %s\r\n", m.Failure)
	}
	if m.Error != "" {
		fmt.Fprintf(&f, "Error: %s\r\n", m.Error)
	}
	return f.String()
}

func subjectPrefix(d Disposition) string {
	s := string(d)
	if s == "" {
		return "Notification"
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func humanText(m MDN) string {
	about := "Your message"
	if m.OriginalMessageID != "" {
		about += " " + m.OriginalMessageID
	}
	if s := oneLine(m.OriginalSubject); s != "" {
		about += fmt.Sprintf(" with subject %q", truncate(s, 200))
	}
	var t string
	switch m.Disposition {
	case DispositionProcessed:
		t = fmt.Sprintf("%s was received by the HISP of %s, decrypted, and its signature verified and trusted.", about, m.FinalRecipient)
	case DispositionDispatched:
		t = fmt.Sprintf("%s was delivered to the mailbox of %s.", about, m.FinalRecipient)
	case DispositionFailed:
		t = fmt.Sprintf("%s could not be delivered to %s: %s", about, m.FinalRecipient, m.Failure)
	default:
		t = fmt.Sprintf("%s to %s: %s.", about, m.FinalRecipient, m.Disposition)
	}
	return t + "\r\n\r\nThis notice was sent automatically.\r\n"
}

// ParseMDN reads a multipart/report; report-type=disposition-notification
// message, also one wrapped in message/rfc822, and tolerates what other
// implementations send: LF line ends, a missing closing boundary, a
// Final-Recipient without its address type or with a display name, the
// X-DIRECT-FINAL-DESTINATION-DELIVERY field in any case, and the original
// Message-ID in In-Reply-To when Original-Message-ID is missing. It fails
// when the message is not an MDN or has no Disposition field.
func ParseMDN(msg []byte) (*MDN, error) {
	return parseMDN(msg, 0)
}

// maxPart is the most ParseMDN reads of one body part.
const maxPart = 1 << 20

func parseMDN(msg []byte, depth int) (*MDN, error) {
	hdr, body := splitMessage(msg)
	fields := parseFields(hdr)
	ct := fields.get("content-type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("parse MDN Content-Type %q: %w", limit(ct, 100), err)
	}
	mt = strings.ToLower(mt)
	if mt == "message/rfc822" && depth < 2 {
		inner, err := decodeBody(body, fields.get("content-transfer-encoding"))
		if err != nil {
			return nil, fmt.Errorf("parse MDN: wrapped message: %w", err)
		}
		return parseMDN(inner, depth+1)
	}
	if mt != "multipart/report" || !strings.EqualFold(strings.TrimSpace(params["report-type"]), "disposition-notification") {
		return nil, fmt.Errorf("not an MDN: Content-Type %s report-type %q", mt, limit(params["report-type"], 100))
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errors.New("parse MDN: no boundary")
	}
	out := &MDN{
		From:      addressOf(fields.get("from")),
		To:        addressOf(fields.get("to")),
		Subject:   decodeHeader(fields.get("subject")),
		MessageID: oneLine(fields.get("message-id")),
	}
	if d, err := mail.ParseDate(fields.get("date")); err == nil {
		out.Date = d
	}
	// Some writers never close the multipart: close it for them.
	if !bytes.Contains(body, []byte("--"+boundary+"--")) {
		body = append(append(append(body[:len(body):len(body)], "\r\n--"...), boundary...), "--\r\n"...)
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	found := false
	for i := 0; !found && i < 100; i++ {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse MDN part: %w", err)
		}
		pmt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		pmt = strings.ToLower(pmt)
		raw, err := io.ReadAll(io.LimitReader(p, maxPart))
		if err != nil {
			return nil, fmt.Errorf("parse MDN part: %w", err)
		}
		data, err := decodeBody(raw, p.Header.Get("Content-Transfer-Encoding"))
		if err != nil {
			return nil, fmt.Errorf("parse MDN part %s: %w", pmt, err)
		}
		switch pmt {
		case "text/plain", "":
			if out.Text == "" && i == 0 {
				out.Text = string(data)
			}
		case "message/disposition-notification", "message/global-disposition-notification":
			found = true
			if err := parseNotificationFields(data, out); err != nil {
				return nil, err
			}
		}
	}
	if !found {
		return nil, errors.New("parse MDN: no message/disposition-notification part")
	}
	if out.OriginalMessageID == "" {
		// The reference implementation's correlation falls back to
		// In-Reply-To; some of its test notices rely on that.
		out.OriginalMessageID = oneLine(fields.get("in-reply-to"))
	}
	return out, nil
}

// parseNotificationFields reads the fields of a disposition-notification
// body into out.
func parseNotificationFields(body []byte, out *MDN) error {
	// Some writers leave an empty line before the fields.
	f := parseFields(bytes.TrimLeft(body, "\r\n"))
	out.ReportingUA = oneLine(f.get("reporting-ua"))
	out.OriginalRecipient = recipientOf(f.get("original-recipient"))
	out.FinalRecipient = recipientOf(f.get("final-recipient"))
	out.OriginalMessageID = oneLine(f.get("original-message-id"))
	out.Failure = oneLine(f.get("failure"))
	out.Error = oneLine(f.get("error"))
	_, out.FinalDestination = f.lookup(strings.ToLower(FinalDestinationDelivery))
	disp, ok := f.lookup("disposition")
	if !ok {
		return errors.New("parse MDN: no Disposition field")
	}
	mode, typ, ok := strings.Cut(stripComments(disp), ";")
	if !ok {
		return fmt.Errorf("parse MDN: Disposition %q has no disposition type", limit(disp, 100))
	}
	am, sm, _ := strings.Cut(mode, "/")
	out.ActionMode, out.SendingMode = strings.TrimSpace(am), strings.TrimSpace(sm)
	typ, mods, _ := strings.Cut(typ, "/")
	out.Disposition = Disposition(strings.ToLower(strings.TrimSpace(typ)))
	if out.Disposition == "" {
		return fmt.Errorf("parse MDN: Disposition %q has no disposition type", limit(disp, 100))
	}
	for _, m := range strings.Split(mods, ",") {
		if m = strings.ToLower(strings.TrimSpace(m)); m != "" {
			out.Modifiers = append(out.Modifiers, m)
		}
	}
	return nil
}

// TimelyAndReliableRequested reports whether a Disposition-Notification-Options
// field value asks for timely and reliable delivery (DNIG §1.3, DN-01):
// a parameter X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true, names and
// values in any case, with white space around the separators (RFC 8098
// §2.2 grammar). "required" is accepted as the importance too. A malformed
// parameter, a value other than true, or the parameter given twice counts
// as not requested (DN-05); other parameters are ignored.
func TimelyAndReliableRequested(options string) bool {
	requested, seen := false, 0
	for _, param := range strings.Split(options, ";") {
		if strings.TrimSpace(param) == "" {
			continue
		}
		attr, rest, ok := strings.Cut(param, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(attr), FinalDestinationDelivery) {
			continue
		}
		seen++
		vals := strings.Split(rest, ",")
		if len(vals) != 2 {
			continue
		}
		importance := strings.ToLower(unquote(vals[0]))
		value := strings.ToLower(unquote(vals[1]))
		if (importance == "optional" || importance == "required") && value == "true" {
			requested = true
		}
	}
	return requested && seen == 1
}

func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// headerFields are the fields of a header block, names lower case, in
// order.
type headerFields []headerField

type headerField struct{ name, value string }

// get returns the first value of a field, "" if absent.
func (h headerFields) get(name string) string {
	v, _ := h.lookup(name)
	return v
}

func (h headerFields) lookup(name string) (string, bool) {
	for _, f := range h {
		if f.name == name {
			return f.value, true
		}
	}
	return "", false
}

// parseFields reads a block of header fields with go-message's textproto,
// hisp's one header reader, leniently: CRLF or LF line ends, continuation
// lines unfolded, white space around names dropped; lines that are not
// fields are skipped (fieldLines). It stops at the first empty line.
func parseFields(b []byte) headerFields {
	th, _ := gotextproto.ReadHeader(bufio.NewReader(bytes.NewReader(fieldLines(b))))
	fs := th.Fields()
	out := make(headerFields, 0, fs.Len())
	for fs.Next() {
		out = append(out, headerField{strings.ToLower(fs.Key()), fs.Value()})
	}
	return out
}

// fieldLines returns the lines of b up to its first empty line, without
// those that are no header field (no colon, an empty name or one with
// white space or other bytes a name may not hold) and their continuation
// lines, each ended with CRLF, and an empty line.
func fieldLines(b []byte) []byte {
	out := make([]byte, 0, len(b)+2)
	keep := false // the last field line was kept: its continuation lines are
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if keep {
				out = append(append(out, line...), "\r\n"...)
			}
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		name = bytes.TrimSpace(name)
		keep = ok && len(name) > 0 && !bytes.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r > '~' })
		if keep {
			out = append(append(out, line...), "\r\n"...)
		}
	}
	return append(out, "\r\n"...)
}

// splitMessage splits a message at the first empty line.
func splitMessage(msg []byte) (hdr, body []byte) {
	r := bufio.NewReader(bytes.NewReader(msg))
	n := 0
	for {
		line, err := r.ReadSlice('\n')
		n += len(line)
		if len(bytes.TrimRight(line, "\r\n")) == 0 && len(line) > 0 && line[len(line)-1] == '\n' {
			return msg[:n], msg[n:]
		}
		if err != nil && err != bufio.ErrBufferFull {
			return msg, nil
		}
	}
}

// decodeBody undoes a Content-Transfer-Encoding of base64 or
// quoted-printable; others are returned as they are.
func decodeBody(b []byte, cte string) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, b)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil {
			return nil, fmt.Errorf("base64: %w", err)
		}
		return out[:n], nil
	case "quoted-printable":
		return io.ReadAll(io.LimitReader(quotedprintable.NewReader(bytes.NewReader(b)), maxPart))
	}
	return b, nil
}

// recipientOf returns the address of a Final-Recipient or
// Original-Recipient value: "rfc822; a@b", "rfc822;a@b", "a@b" or
// "Name <a@b>".
func recipientOf(v string) string {
	v = oneLine(v)
	if t, rest, ok := strings.Cut(v, ";"); ok && !strings.ContainsAny(t, "@<\"") {
		v = strings.TrimSpace(rest)
	}
	return addressOf(v)
}

// addressOf returns the address of a From or To value, or the value
// itself, without angle brackets, when it does not parse.
func addressOf(v string) string {
	v = oneLine(v)
	if v == "" {
		return ""
	}
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">"))
}

func decodeHeader(v string) string {
	dec := new(mime.WordDecoder)
	if s, err := dec.DecodeHeader(v); err == nil {
		return oneLine(s)
	}
	return oneLine(v)
}

// stripComments removes RFC 5322 comments "(...)", nested ones too.
func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isToken reports whether s is a non-empty run of the characters of
// disposition tokens: letters, digits and "-", "_", ".".
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func isMsgID(s string) bool {
	return len(s) > 2 && s[0] == '<' && s[len(s)-1] == '>' && !strings.ContainsAny(s, " \t")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// truncate shortens s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func limit(s string, n int) string { return truncate(s, n) }

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}
