// Package ccda reads HL7 C-CDA documents (XML whose root is ClinicalDocument
// in urn:hl7-org:v3), the clinical content Direct mostly carries: the header
// (document type, title, patient, author, custodian, time, confidentiality)
// and, for a readable view, each section's title and narrative block.
//
// Parsing is safe for documents from strangers: no DTD is read (a DOCTYPE is
// refused, so no entity, internal or external, is ever expanded), only the
// five predefined XML entities are known, and the input size and element
// depth are limited. Entries (the coded data under each section) are skipped,
// never held in memory, so the memory a document costs is that of its header
// and narrative text.
//
// A document that fails here is still delivered by the agent (MF-09: a
// receiver must not reject a message for its payload); the error says why,
// for the verification header.
package ccda

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Namespace is the HL7 v3 namespace of CDA documents.
const Namespace = "urn:hl7-org:v3"

// Limits of what Read accepts. The zero value of a field takes the default.
type Limits struct {
	// MaxSize is the largest document in bytes; default 64 MiB (the
	// largest message hisp accepts).
	MaxSize int
	// MaxDepth is the deepest element nesting; default 256. C-CDA
	// documents nest some 30 levels.
	MaxDepth int
}

const (
	defaultMaxSize  = 64 << 20
	defaultMaxDepth = 256
)

func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = defaultMaxSize
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = defaultMaxDepth
	}
	return l
}

// The reasons Read refuses a document; test with errors.Is.
var (
	// ErrNotCCDA: well-formed so far, but the root is not a
	// ClinicalDocument in urn:hl7-org:v3.
	ErrNotCCDA = errors.New("not a C-CDA document (root is not ClinicalDocument in urn:hl7-org:v3)")
	// ErrDTD: the document has a DOCTYPE (a DTD, perhaps declaring
	// entities: billion laughs, external entities). Never read.
	ErrDTD = errors.New("document type declaration (DTD) refused: entities are never expanded")
	// ErrTooLarge: the document is larger than Limits.MaxSize.
	ErrTooLarge = errors.New("document too large")
	// ErrTooDeep: elements nest deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("elements nested too deep")
	// ErrMalformed: not well-formed XML (or in an unsupported charset).
	ErrMalformed = errors.New("not well-formed XML")
)

// ID is an instance identifier (II): an OID or UUID root and an optional
// extension.
type ID struct {
	Root, Extension string
}

// String returns "extension^root" style text for people: the extension,
// then the root in brackets, or the root alone.
func (id ID) String() string {
	if id.Extension == "" {
		return id.Root
	}
	return id.Extension + " (" + id.Root + ")"
}

// Code is a coded value (CE/CD).
type Code struct {
	Code, System, SystemName, DisplayName string
}

// String returns the display name and code for people.
func (c Code) String() string {
	switch {
	case c.DisplayName != "" && c.Code != "":
		return c.DisplayName + " (" + c.Code + ")"
	case c.DisplayName != "":
		return c.DisplayName
	}
	return c.Code
}

// Patient is the recordTarget's patientRole.
type Patient struct {
	IDs       []ID
	Name      string // given names then family name
	Given     []string
	Family    string
	BirthTime string // HL7 TS as written: YYYYMMDD...
	Gender    Code   // administrativeGenderCode
}

// Author is one author of the document.
type Author struct {
	Time         string
	IDs          []ID
	Name         string // the person, if any
	Organization string // representedOrganization
	Device       string // assignedAuthoringDevice softwareName
}

// Organization is the custodian.
type Organization struct {
	IDs  []ID
	Name string
}

// Header is the CDA header: what an EHR files the document by.
type Header struct {
	TemplateIDs     []ID
	ID              ID
	Code            Code // document type, LOINC
	Title           string
	EffectiveTime   string // HL7 TS as written
	Confidentiality Code
	Language        string
	SetID           ID
	Version         string
	Patient         Patient
	Authors         []Author
	Custodian       Organization
}

// Section is one section of a structured body.
type Section struct {
	Code  Code
	Title string
	// Text is the narrative block (the section's <text>), nil if none.
	Text *Node
	// Sections are the sections nested in this one.
	Sections []Section
}

// Node is an element or a run of text of a narrative block. Only what a
// renderer may show is kept: element local names, text, and a few
// attributes (styleCode, listType, href, colspan, rowspan, ID).
type Node struct {
	Name     string // element local name; "" for text
	Text     string // text of a text node
	Attr     map[string]string
	Children []*Node
}

// Document is a read C-CDA document.
type Document struct {
	Header
	// Sections of the structured body, in order; none for a
	// nonXMLBody.
	Sections []Section
	// NonXMLBody is set when the body is a nonXMLBody (a scanned document
	// or PDF inside the CDA), which is not rendered.
	NonXMLBody bool
	// MediaType of a nonXMLBody's text.
	NonXMLMediaType string
}

// Is reports whether data looks like a C-CDA document: XML whose first
// element is ClinicalDocument in urn:hl7-org:v3. It reads at most the prolog
// and the root start tag, and never a DTD.
func Is(data []byte) bool {
	d := newDecoder(bytes.NewReader(data))
	for range 64 {
		tok, err := d.RawToken() // no namespace translation yet: see below
		if err != nil {
			return false
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Local != "ClinicalDocument" {
				return false
			}
			want := ""
			for _, a := range t.Attr {
				if (a.Name.Space == "" && a.Name.Local == "xmlns" && t.Name.Space == "") ||
					(a.Name.Space == "xmlns" && a.Name.Local == t.Name.Space && t.Name.Space != "") {
					want = a.Value
				}
			}
			return want == Namespace
		case xml.Directive:
			return false
		}
	}
	return false
}

// ReadHeader reads only the header of a C-CDA document: it stops at the
// body, which is neither parsed nor checked.
func ReadHeader(data []byte, lim Limits) (*Header, error) {
	doc, err := read(data, lim, true)
	if err != nil {
		return nil, err
	}
	return &doc.Header, nil
}

// Read reads a whole C-CDA document: the header and each section's title
// and narrative block. The whole document must be well-formed.
func Read(data []byte, lim Limits) (*Document, error) {
	return read(data, lim, false)
}

func newDecoder(r io.Reader) *xml.Decoder {
	d := xml.NewDecoder(r)
	d.Strict = true
	d.Entity = nil // only the five predefined entities
	d.CharsetReader = charsetReader
	return d
}

// charsetReader accepts the charsets C-CDA documents are written in besides
// UTF-8: US-ASCII and ISO-8859-1 (Latin-1).
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return input, nil
	case "iso-8859-1", "latin1", "latin-1", "iso8859-1":
		return &latin1Reader{r: input}, nil
	}
	return nil, fmt.Errorf("unsupported charset %q", charset)
}

type latin1Reader struct {
	r   io.Reader
	buf []byte
	out []byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if cap(l.buf) == 0 {
			l.buf = make([]byte, 4096)
		}
		n, err := l.r.Read(l.buf[:cap(l.buf)])
		for _, c := range l.buf[:n] {
			l.out = utf8.AppendRune(l.out, rune(c))
		}
		if n == 0 && err != nil {
			return 0, err
		}
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

// parser holds the state of one read.
type parser struct {
	d     *xml.Decoder
	lim   Limits
	depth int
}

func (p *parser) token() (xml.Token, error) {
	tok, err := p.d.Token()
	if err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%w: unexpected end of document", ErrMalformed)
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch tok.(type) {
	case xml.StartElement:
		p.depth++
		if p.depth > p.lim.MaxDepth {
			return nil, fmt.Errorf("%w: more than %d levels", ErrTooDeep, p.lim.MaxDepth)
		}
	case xml.EndElement:
		p.depth--
	case xml.Directive:
		return nil, ErrDTD
	}
	return tok, nil
}

func read(data []byte, lim Limits, headerOnly bool) (*Document, error) {
	lim = lim.withDefaults()
	if len(data) > lim.MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrTooLarge, len(data), lim.MaxSize)
	}
	p := &parser{d: newDecoder(bytes.NewReader(data)), lim: lim}
	doc := &Document{}
	// The prolog and the root.
	for {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		if t, ok := tok.(xml.StartElement); ok {
			if t.Name.Local != "ClinicalDocument" || t.Name.Space != Namespace {
				return nil, ErrNotCCDA
			}
			break
		}
	}
	// The root's children: header elements, and the body component.
	for {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space == Namespace && t.Name.Local == "component" {
				if headerOnly {
					return doc, nil
				}
				if err := p.body(doc); err != nil {
					return nil, err
				}
				continue
			}
			e, err := p.capture(t, 0)
			if err != nil {
				return nil, err
			}
			doc.Header.apply(e)
		case xml.EndElement:
			// The root ends: nothing but comments and PIs may follow.
			for {
				tok, err := p.d.Token()
				if err == io.EOF {
					return doc, nil
				}
				if err != nil {
					return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
				}
				switch t := tok.(type) {
				case xml.StartElement, xml.EndElement, xml.Directive:
					return nil, fmt.Errorf("%w: content after the root element", ErrMalformed)
				case xml.CharData:
					if len(bytes.TrimSpace(t)) > 0 {
						return nil, fmt.Errorf("%w: text after the root element", ErrMalformed)
					}
				}
			}
		}
	}
}

// elem is a captured element: a small DOM of header or narrative content.
type elem struct {
	name     xml.Name
	attr     []xml.Attr
	children []*elem
	text     string // a text node when name.Local == ""
}

// maxCapture bounds the text kept of one captured subtree, so that a
// header of one huge element costs no more than the document.
const maxCapture = 8 << 20

// capture reads the subtree of start (already read) into an elem.
func (p *parser) capture(start xml.StartElement, budget int) (*elem, error) {
	root := &elem{name: start.Name, attr: start.Copy().Attr}
	stack := []*elem{root}
	for len(stack) > 0 {
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			e := &elem{name: t.Name, attr: t.Copy().Attr}
			top.children = append(top.children, e)
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if budget += len(t); budget > maxCapture {
				continue
			}
			if n := len(top.children); n > 0 && top.children[n-1].name.Local == "" {
				top.children[n-1].text += string(t)
			} else {
				top.children = append(top.children, &elem{text: string(t)})
			}
		}
	}
	return root, nil
}

// skip reads past the rest of an element whose start was read.
func (p *parser) skip() error {
	for n := 1; n > 0; {
		tok, err := p.token()
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			n++
		case xml.EndElement:
			n--
		}
	}
	return nil
}

// body reads the body component (its start tag read): structuredBody
// sections, or a nonXMLBody.
func (p *parser) body(doc *Document) error {
	// sections is the stack of open sections; names the stack of open
	// element local names below the component.
	type open struct {
		sec   *Section
		depth int
	}
	var stack []open
	base := p.depth
	for p.depth >= base {
		tok, err := p.token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space != Namespace {
				if err := p.skip(); err != nil {
					return err
				}
				continue
			}
			switch t.Name.Local {
			case "nonXMLBody":
				doc.NonXMLBody = true
				e, err := p.capture(t, 0)
				if err != nil {
					return err
				}
				if txt := e.child("text"); txt != nil {
					doc.NonXMLMediaType = txt.attrValue("mediaType")
				}
			case "section":
				s := Section{}
				if len(stack) == 0 {
					doc.Sections = append(doc.Sections, s)
					stack = append(stack, open{&doc.Sections[len(doc.Sections)-1], p.depth})
				} else {
					parent := stack[len(stack)-1].sec
					parent.Sections = append(parent.Sections, s)
					stack = append(stack, open{&parent.Sections[len(parent.Sections)-1], p.depth})
				}
			case "entry", "author", "informant", "subject":
				if err := p.skip(); err != nil {
					return err
				}
			case "title", "code", "text":
				if len(stack) == 0 || stack[len(stack)-1].depth != p.depth-1 {
					if err := p.skip(); err != nil {
						return err
					}
					continue
				}
				sec := stack[len(stack)-1].sec
				e, err := p.capture(t, 0)
				if err != nil {
					return err
				}
				switch t.Name.Local {
				case "title":
					sec.Title = e.textContent()
				case "code":
					sec.Code = e.code()
				case "text":
					sec.Text = narrative(e)
				}
			}
		case xml.EndElement:
			if n := len(stack); n > 0 && stack[n-1].depth == p.depth+1 {
				stack = stack[:n-1]
				// A section's slice may move when a sibling is
				// appended; pointers into it are taken afresh
				// for each section, and a closed one is never
				// touched again.
			}
		}
	}
	return nil
}

// narrative turns a captured <text> into a Node tree, keeping only the
// attributes a renderer may use.
func narrative(e *elem) *Node {
	n := &Node{Name: e.name.Local}
	if e.name.Local == "" {
		return &Node{Text: e.text}
	}
	for _, a := range e.attr {
		if a.Name.Space != "" && a.Name.Space != Namespace {
			continue
		}
		switch a.Name.Local {
		case "styleCode", "listType", "href", "colspan", "rowspan", "ID":
			if n.Attr == nil {
				n.Attr = map[string]string{}
			}
			n.Attr[a.Name.Local] = a.Value
		}
	}
	for _, c := range e.children {
		if c.name.Local != "" && c.name.Space != Namespace {
			continue
		}
		n.Children = append(n.Children, narrative(c))
	}
	return n
}

// child returns the first child element in the v3 namespace named local.
func (e *elem) child(local string) *elem {
	if e == nil {
		return nil
	}
	for _, c := range e.children {
		if c.name.Local == local && c.name.Space == Namespace {
			return c
		}
	}
	return nil
}

// childrenNamed returns every child element in the v3 namespace named
// local.
func (e *elem) childrenNamed(local string) []*elem {
	if e == nil {
		return nil
	}
	var out []*elem
	for _, c := range e.children {
		if c.name.Local == local && c.name.Space == Namespace {
			out = append(out, c)
		}
	}
	return out
}

// path follows child elements.
func (e *elem) path(locals ...string) *elem {
	for _, l := range locals {
		e = e.child(l)
	}
	return e
}

func (e *elem) attrValue(local string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.attr {
		if a.Name.Local == local && (a.Name.Space == "" || a.Name.Space == Namespace) {
			return a.Value
		}
	}
	return ""
}

// textContent is the element's text with white space collapsed.
func (e *elem) textContent() string {
	if e == nil {
		return ""
	}
	var b strings.Builder
	var walk func(*elem)
	walk = func(x *elem) {
		if x.name.Local == "" {
			b.WriteString(x.text)
			b.WriteByte(' ')
			return
		}
		for _, c := range x.children {
			walk(c)
		}
	}
	walk(e)
	return strings.Join(strings.Fields(b.String()), " ")
}

func (e *elem) id() ID {
	return ID{Root: e.attrValue("root"), Extension: e.attrValue("extension")}
}

func (e *elem) ids() []ID {
	var out []ID
	for _, c := range e.childrenNamed("id") {
		if id := c.id(); id.Root != "" || id.Extension != "" {
			out = append(out, id)
		}
	}
	return out
}

func (e *elem) code() Code {
	if e == nil {
		return Code{}
	}
	return Code{Code: e.attrValue("code"), System: e.attrValue("codeSystem"),
		SystemName: e.attrValue("codeSystemName"), DisplayName: e.attrValue("displayName")}
}

// personName reads a PN: given names, then family, or its text.
func (e *elem) personName() (given []string, family, full string) {
	if e == nil {
		return nil, "", ""
	}
	for _, g := range e.childrenNamed("given") {
		if s := g.textContent(); s != "" {
			given = append(given, s)
		}
	}
	family = e.child("family").textContent()
	parts := append([]string{}, e.child("prefix").textContent())
	parts = append(parts, given...)
	parts = append(parts, family, e.child("suffix").textContent())
	var nonEmpty []string
	for _, p := range parts {
		if p != "" {
			nonEmpty = append(nonEmpty, p)
		}
	}
	full = strings.Join(nonEmpty, " ")
	if full == "" {
		full = e.textContent()
	}
	return given, family, full
}

// apply takes one header element (a child of ClinicalDocument).
func (h *Header) apply(e *elem) {
	if e.name.Space != Namespace {
		return
	}
	switch e.name.Local {
	case "templateId":
		h.TemplateIDs = append(h.TemplateIDs, e.id())
	case "id":
		h.ID = e.id()
	case "code":
		h.Code = e.code()
	case "title":
		h.Title = e.textContent()
	case "effectiveTime":
		h.EffectiveTime = e.attrValue("value")
	case "confidentialityCode":
		h.Confidentiality = e.code()
	case "languageCode":
		h.Language = e.attrValue("code")
	case "setId":
		h.SetID = e.id()
	case "versionNumber":
		h.Version = e.attrValue("value")
	case "recordTarget":
		if len(h.Patient.IDs) > 0 || h.Patient.Name != "" {
			return // the first patient is the patient
		}
		role := e.child("patientRole")
		h.Patient.IDs = role.ids()
		pat := role.child("patient")
		h.Patient.Given, h.Patient.Family, h.Patient.Name = pat.child("name").personName()
		h.Patient.BirthTime = pat.child("birthTime").attrValue("value")
		h.Patient.Gender = pat.child("administrativeGenderCode").code()
	case "author":
		aa := e.child("assignedAuthor")
		_, _, name := aa.path("assignedPerson", "name").personName()
		h.Authors = append(h.Authors, Author{
			Time:         e.child("time").attrValue("value"),
			IDs:          aa.ids(),
			Name:         name,
			Organization: aa.path("representedOrganization", "name").textContent(),
			Device:       aa.path("assignedAuthoringDevice", "softwareName").textContent(),
		})
	case "custodian":
		org := e.path("assignedCustodian", "representedCustodianOrganization")
		h.Custodian = Organization{IDs: org.ids(), Name: org.child("name").textContent()}
	}
}

// FormatTime renders an HL7 TS (YYYYMMDDHHMMSS.UUUU±ZZZZ, any precision)
// for people: "2026-11-25 10:00 +0000". Anything else is returned as it is.
func FormatTime(ts string) string {
	digits, zone := ts, ""
	if i := strings.IndexAny(ts, "+-"); i >= 0 {
		digits, zone = ts[:i], ts[i:]
	}
	if i := strings.IndexByte(digits, '.'); i >= 0 {
		digits = digits[:i]
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return ts
		}
	}
	var out string
	switch {
	case len(digits) >= 12:
		out = digits[0:4] + "-" + digits[4:6] + "-" + digits[6:8] + " " + digits[8:10] + ":" + digits[10:12]
	case len(digits) >= 8:
		out = digits[0:4] + "-" + digits[4:6] + "-" + digits[6:8]
	case len(digits) >= 6:
		out = digits[0:4] + "-" + digits[4:6]
	case len(digits) == 4:
		out = digits
	default:
		return ts
	}
	if zone != "" && len(digits) >= 12 {
		out += " " + zone
	}
	return out
}
