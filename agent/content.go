package agent

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"mime"
	"path"
	"strings"

	"github.com/hisp-project/hisp/ccda"
	"github.com/hisp-project/hisp/internal/mimepart"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/xdm"
)

// ContentOptions configure the clinical content layer: C-CDA documents,
// IHE XDM packages and the Direct context of the messages the agent
// processes. Nothing here ever refuses a message (MF-09): what is wrong with
// a payload is noted in the VerificationHeader and the audit log, and the
// message is delivered.
type ContentOptions struct {
	// XDM is the outbound packaging policy: "never" (or ""), "ccda" (a
	// message with C-CDA attachments also carries them as one XDM zip)
	// or "always" (every attachment is packaged). The plain attachments
	// stay either way (MF-10, XD-01).
	XDM string
	// XDMDomains override XDM per recipient domain. A message goes to all
	// its recipients sealed once, so it is packaged when any accepted
	// recipient's policy asks for it, with the policy that packages most.
	XDMDomains map[string]string
	// XDMDocuments adds each document of an inbound XDM package beside
	// the zip as an attachment of its own (the zip stays byte for byte).
	XDMDocuments bool
	// CCDAHTML adds a text/html view of each inbound C-CDA document.
	CCDAHTML bool
	// Software names hisp in the README.TXT of the packages it writes.
	Software string
}

// maxPart is the largest part the content layer decodes.
const maxPart = 64 << 20

// policyRank orders the packaging policies.
func policyRank(p string) int {
	switch p {
	case "ccda":
		return 1
	case "always":
		return 2
	}
	return 0
}

// xdmPolicy returns the policy for a message to the accepted recipients.
func (c *ContentOptions) xdmPolicy(results []RecipientResult) string {
	best := ""
	for _, r := range results {
		if !r.Accepted {
			continue
		}
		p := c.XDM
		_, domain, _ := store.NormalizeAddress(r.Recipient)
		if dp, ok := c.XDMDomains[domain]; ok {
			p = dp
		}
		if policyRank(p) > policyRank(best) {
			best = p
		}
	}
	return best
}

// zipLike, xmlLike: the media types a package or a C-CDA document comes
// as (XD-02: application/zip or application/octet-stream).
func zipLike(p *mimepart.Part) bool {
	switch p.MediaType {
	case "application/zip", "application/x-zip-compressed", "application/x-zip", "application/xdm", "application/octet-stream":
		return true
	}
	return false
}

func xmlLike(p *mimepart.Part, name string) bool {
	switch p.MediaType {
	case "application/xml", "text/xml", "application/hl7-v3+xml", "application/cda+xml", "application/hl7-cda+xml":
		return true
	case "application/octet-stream", "text/plain":
		return strings.EqualFold(path.Ext(name), ".xml")
	}
	return false
}

// contextPart finds the Direct context part a message names, if it names
// one.
func contextPart(top *mimepart.Part) (cid string, part *mimepart.Part) {
	cid = strings.Trim(strings.TrimSpace(top.Header.Get(xdm.ContextHeader)), "<>")
	if cid == "" {
		return "", nil
	}
	for _, l := range top.Leaves() {
		if l != top && l.ContentID() == cid {
			return cid, l
		}
	}
	return cid, nil
}

// readContext reads and checks the Direct context of a message: nil, nil
// when it names none.
func readContext(msg []byte, top *mimepart.Part) (*xdm.Context, *mimepart.Part, error) {
	cid, part := contextPart(top)
	if cid == "" {
		return nil, nil, nil
	}
	if part == nil {
		return nil, nil, fmt.Errorf("%w: no part has the Content-ID <%s> that %s names", xdm.ErrContext, cid, xdm.ContextHeader)
	}
	data, err := part.Decode(msg, 1<<20)
	if err != nil {
		return nil, part, fmt.Errorf("%w: %v", xdm.ErrContext, err)
	}
	c, err := xdm.ParseContext(data)
	return c, part, err
}

// packageOutbound adds an XDM package of the message's C-CDA documents (or
// of all its attachments) to a message before it is signed, when the
// policy asks for it. It returns the message unchanged otherwise, and
// either way what it did and whether something was wrong (an invalid Direct
// context, an attachment that could not be read).
func (a *Agent) packageOutbound(ctx context.Context, msg []byte, from string, results []RecipientResult) (_ []byte, notes []string, problem bool) {
	c := a.content
	policy := c.xdmPolicy(results)
	top := mimepart.Parse(msg)
	ctxt, ctxPart, err := readContext(msg, top)
	if err != nil {
		// The sender's context is kept as it is; the receiver will
		// judge it too.
		notes, problem = append(notes, "context: "+err.Error()), true
		ctxt = nil // only a valid context speaks for the patient
	}
	if policyRank(policy) == 0 {
		return msg, notes, problem
	}
	var docs []xdm.Document
	for _, l := range top.Leaves() {
		if l == ctxPart {
			continue
		}
		name := l.FileName()
		isAttachment := name != "" || strings.HasPrefix(strings.ToLower(l.Header.Get("content-disposition")), "attachment") ||
			!strings.HasPrefix(l.MediaType, "text/")
		if !isAttachment && !xmlLike(l, name) {
			continue
		}
		data, err := l.Decode(msg, maxPart)
		if err != nil {
			notes, problem = append(notes, fmt.Sprintf("xdm: attachment %q not packaged: %v", name, err)), true
			continue
		}
		if zipLike(l) && xdm.LooksLikeZip(data) {
			if _, err := xdm.Open(data, xdm.Limits{}); err == nil || !errors.Is(err, xdm.ErrNotXDM) && !errors.Is(err, xdm.ErrNotZip) {
				// Already an XDM package (the sender's, or ours
				// on a retry): nothing to add.
				return msg, append(notes, "xdm: the message already holds an XDM package"), problem
			}
		}
		isCCDA := xmlLike(l, name) && ccda.Is(data)
		if !isCCDA && (policy != "always" || !isAttachment) {
			continue
		}
		mt := l.MediaType
		if isCCDA {
			mt = "text/xml"
		}
		if name == "" {
			name = fmt.Sprintf("document%d%s", len(docs)+1, map[bool]string{true: ".xml", false: ".bin"}[isCCDA])
		}
		docs = append(docs, xdm.Document{Name: name, MimeType: mt, Data: data})
	}
	if len(docs) == 0 {
		return msg, notes, problem
	}
	var rcpts []string
	for _, r := range results {
		if r.Accepted {
			rcpts = append(rcpts, envAddr(r.Recipient))
		}
	}
	sub := xdm.Submission{Author: from, Recipients: rcpts, Time: a.now(), Documents: docs, Software: c.Software}
	if ctxt != nil {
		sub.PatientID = ctxt.PatientCX()
	}
	zipped, _, err := xdm.Build(sub)
	if err != nil {
		a.log.ErrorContext(ctx, "agent: XDM package not built", "err", err)
		return msg, append(notes, "xdm: package not built: "+err.Error()), true
	}
	part := mimepart.Attachment("application/zip", "xdm.zip", "Content-Description: IHE XDM package\r\n", zipped)
	out := addParts(msg, top, nil, [][]byte{part})
	return out, append(notes, fmt.Sprintf("xdm: packaged %d document(s) as xdm.zip (policy %s)", len(docs), policy)), problem
}

// addParts returns msg with the insertions made and tail parts added at the
// end of its top-level multipart/mixed; a message that is not one becomes
// one, its content the first part.
func addParts(msg []byte, top *mimepart.Part, ins []mimepart.Insertion, tail [][]byte) []byte {
	if len(tail) == 0 {
		return mimepart.Apply(msg, ins)
	}
	if top.MediaType == "multipart/mixed" && len(top.Children) > 0 {
		last := top.Children[len(top.Children)-1]
		for _, p := range tail {
			ins = append(ins, mimepart.After(top, last, p))
		}
		return mimepart.Apply(msg, ins)
	}
	// Wrap: the top header without its Content-* fields, then a
	// multipart/mixed whose first part is the old content.
	msg = mimepart.Apply(msg, ins)
	hdrBlock, body := splitMessage(msg)
	h, err := parseHeader(hdrBlock)
	if err != nil {
		return msg
	}
	boundary := mimepart.NewBoundary(msg, "mixed")
	var b bytes.Buffer
	b.Grow(len(msg) + 256)
	var content bytes.Buffer
	for _, f := range h {
		raw := f.raw
		if strings.HasPrefix(f.lname, "content-") {
			content.Write(raw)
			if !bytes.HasSuffix(raw, []byte("\n")) {
				content.WriteString("\r\n")
			}
			continue
		}
		b.Write(raw)
		if !bytes.HasSuffix(raw, []byte("\n")) {
			b.WriteString("\r\n")
		}
	}
	if !h.has("mime-version") {
		b.WriteString("MIME-Version: 1.0\r\n")
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n")
	b.WriteString("--" + boundary + "\r\n")
	b.Write(content.Bytes())
	b.WriteString("\r\n")
	b.Write(body)
	for _, p := range tail {
		b.WriteString("\r\n--" + boundary + "\r\n")
		b.Write(p)
	}
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes()
}

// contentNote is one finding about an inbound message's content, for the
// VerificationHeader and the audit log.
type contentNote struct {
	key, verdict, detail string
	problem              bool
}

// header returns the note as VerificationHeader parts.
func (n contentNote) header() []string {
	parts := []string{n.key + "=" + token(n.verdict)}
	if n.detail != "" {
		parts = append(parts, n.key+"-detail="+quote(n.detail))
	}
	return parts
}

// inboundContent reads the content of a verified inbound message: its
// Direct context, C-CDA documents and XDM packages. It returns the message
// with the documents of each package and an HTML view of each C-CDA added
// (as configured), and its findings. The parts that came stay byte for
// byte.
func (a *Agent) inboundContent(msg []byte) ([]byte, []contentNote) {
	c := a.content
	top := mimepart.Parse(msg)
	var notes []contentNote
	ctxt, ctxPart, err := readContext(msg, top)
	switch {
	case err != nil:
		notes = append(notes, contentNote{key: "context", verdict: "invalid", detail: err.Error(), problem: true})
	case ctxt != nil:
		d := "id " + ctxt.ID
		if len(ctxt.PatientIDs) > 0 {
			d += ", patient-id " + strings.Join(ctxt.PatientIDs, "; ")
		}
		if ctxt.Purpose != "" {
			d += ", purpose " + ctxt.Purpose
		}
		if ctxt.Type != "" {
			d += ", type " + ctxt.Type
		}
		notes = append(notes, contentNote{key: "context", verdict: "pass", detail: d})
	}

	// What the message holds already, so that a document in a package
	// that also came as a plain attachment is not added twice: every
	// part's hash, taken when a package is first opened.
	// Parts the loop below decoded and keeps are not decoded again.
	var have map[[20]byte]bool
	decoded := map[*mimepart.Part][]byte{}
	haveAll := func() {
		if have != nil {
			return
		}
		have = map[[20]byte]bool{}
		for _, l := range top.Leaves() {
			data, ok := decoded[l]
			if !ok {
				var err error
				if data, err = l.Decode(msg, maxPart); err != nil {
					continue
				}
			}
			have[sha1.Sum(data)] = true
		}
	}
	var ins []mimepart.Insertion
	var tail [][]byte
	add := func(after *mimepart.Part, part []byte) {
		if parent := top.Parent(after); parent != nil {
			ins = append(ins, mimepart.After(parent, after, part))
		} else {
			tail = append(tail, part)
		}
	}
	viewed := map[[20]byte]bool{}
	// view reads a C-CDA document and returns its HTML view part, or
	// nil; it notes what it found.
	view := func(name string, data []byte) []byte {
		sum := sha1.Sum(data)
		if viewed[sum] {
			return nil // the same document, read already
		}
		viewed[sum] = true
		doc, err := ccda.Read(data, ccda.Limits{})
		if errors.Is(err, ccda.ErrNotCCDA) {
			return nil
		}
		if err != nil {
			notes = append(notes, contentNote{key: "ccda", verdict: "fail", detail: name + ": " + err.Error(), problem: true})
			return nil
		}
		d := name + ": " + doc.Code.String()
		if doc.Title != "" && !strings.EqualFold(doc.Title, doc.Code.DisplayName) {
			d = name + ": " + doc.Title + ", " + doc.Code.String()
		}
		notes = append(notes, contentNote{key: "ccda", verdict: "pass", detail: d})
		if !c.CCDAHTML {
			return nil
		}
		base := strings.TrimSuffix(name, path.Ext(name))
		if base == "" {
			base = "document"
		}
		return mimepart.Attachment("text/html; charset=utf-8", base+".html", "Content-Description: "+headerText("readable view of "+name+" made by hisp")+"\r\n", ccda.HTML(doc))
	}

	type found struct {
		part *mimepart.Part
		name string
		data []byte
	}
	var ccdas, zips []found
	for _, l := range top.Leaves() {
		if l == ctxPart {
			continue
		}
		name := l.FileName()
		isZip, isXML := zipLike(l), xmlLike(l, name)
		if !isZip && !isXML {
			continue
		}
		data, err := l.Decode(msg, maxPart)
		if err != nil {
			continue
		}
		switch {
		case isZip && xdm.LooksLikeZip(data):
			zips = append(zips, found{l, name, data})
			decoded[l] = data
		case isXML && bytes.Contains(data[:min(len(data), 64<<10)], []byte("ClinicalDocument")):
			ccdas = append(ccdas, found{l, name, data})
			decoded[l] = data
		}
	}
	for _, f := range ccdas {
		if v := view(orName(f.name, "document.xml"), f.data); v != nil {
			add(f.part, v)
		}
	}
	for _, f := range zips {
		name := orName(f.name, "package.zip")
		pkg, err := xdm.Open(f.data, xdm.Limits{})
		if errors.Is(err, xdm.ErrNotXDM) || errors.Is(err, xdm.ErrNotZip) {
			continue // a zip, not a package
		}
		if err != nil {
			notes = append(notes, contentNote{key: "xdm", verdict: xdm.Reason(err), detail: name + ": " + err.Error(), problem: true})
			continue
		}
		added, dup := 0, 0
		var views [][]byte
		haveAll()
		for _, d := range pkg.Documents {
			if d.Err != nil {
				notes = append(notes, contentNote{key: "xdm", verdict: xdm.Reason(d.Err), detail: name + ": " + d.Err.Error(), problem: true})
				continue
			}
			sum := sha1.Sum(d.Data)
			if c.XDMDocuments {
				if have[sum] {
					dup++
				} else {
					have[sum] = true
					mt := d.Entry.MimeType
					if mt == "" {
						mt = "application/octet-stream"
					}
					add(f.part, mimepart.Attachment(mt, d.Name, "Content-Description: "+headerText(limit(firstOf(d.Entry.Title, d.Name), 200)+" (from "+name+")")+"\r\n", d.Data))
					added++
				}
			}
			if ccda.Is(d.Data) {
				if v := view(d.Name, d.Data); v != nil {
					views = append(views, v)
				}
			}
		}
		for _, v := range views {
			add(f.part, v)
		}
		detail := fmt.Sprintf("%s: %d document(s)", name, len(pkg.Documents))
		if c.XDMDocuments {
			detail += fmt.Sprintf(", %d added beside the package, %d already attached", added, dup)
		}
		if pid := pkg.Metadata.SubmissionSet.PatientID; pid != "" {
			detail += ", patient " + pid
		}
		verdict := "pass"
		if !pkg.Valid() {
			verdict = "partial"
		}
		notes = append(notes, contentNote{key: "xdm", verdict: verdict, detail: detail})
	}
	if len(ins) == 0 && len(tail) == 0 {
		return msg, notes
	}
	return addParts(msg, top, ins, tail), notes
}

// headerText makes s a header value: one line, encoded (RFC 2047) when it
// is not ASCII.
func headerText(s string) string {
	return mime.QEncoding.Encode("utf-8", oneLine(s))
}

func orName(name, def string) string {
	if name == "" {
		return def
	}
	return name
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// auditContent writes one audit record of an inbound message's content
// findings: "ok" when all passed, "noted" when a payload had a fault (the
// message was delivered all the same).
func (a *Agent) auditContent(ctx context.Context, env Envelope, msgID string, notes []contentNote) {
	if len(notes) == 0 {
		return
	}
	verdict := "ok"
	var reasons []string
	for _, n := range notes {
		if n.problem {
			verdict = "noted"
		}
		r := n.key + " " + n.verdict
		if n.detail != "" {
			r += ": " + n.detail
		}
		reasons = append(reasons, r)
	}
	a.record(ctx, store.Event{Time: a.now(), Actor: actor(env), Action: "inbound-content", Subject: orName(msgID, "(no Message-ID)"),
		Verdict: verdict, Reason: oneLine(limit(strings.Join(reasons, "; "), 2000))})
}
