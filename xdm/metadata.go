package xdm

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The UUIDs of the XDS metadata (IHE ITI TF-3 §4.2.5).
const (
	uuidDocumentEntry     = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
	uuidDEAuthor          = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
	uuidDEClassCode       = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
	uuidDEConfidentiality = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
	uuidDEFormatCode      = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
	uuidDETypeCode        = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
	uuidDEPatientID       = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
	uuidDEUniqueID        = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
	uuidDELimited         = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85"
	uuidSubmissionSet     = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
	uuidSSAuthor          = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
	uuidSSContentType     = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
	uuidSSUniqueID        = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
	uuidSSSourceID        = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
	uuidSSPatientID       = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
	uuidSSLimited         = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707"
	hasMember             = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
	nsLCM                 = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
	nsRIM                 = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
)

// MarshalMetadata writes m as a METADATA.XML: an ebRIM 3.0
// SubmitObjectsRequest.
func MarshalMetadata(m *Metadata) []byte {
	w := &xw{}
	w.raw(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w.raw(`<lcm:SubmitObjectsRequest xmlns:lcm="` + nsLCM + `" xmlns:rim="` + nsRIM + `">` + "\n")
	w.raw("<rim:RegistryObjectList>\n")
	for i, d := range m.Documents {
		id := d.ID
		w.open("rim:ExtrinsicObject", "id", id, "mimeType", d.MimeType, "objectType", uuidDocumentEntry, "status", "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved")
		w.slot("creationTime", d.CreationTime)
		w.slot("hash", d.Hash)
		w.slot("languageCode", d.LanguageCode)
		if d.Size >= 0 {
			w.slot("size", strconv.FormatInt(d.Size, 10))
		}
		w.slot("sourcePatientId", d.SourcePatientID)
		w.slot("sourcePatientInfo", d.SourcePatientInfo...)
		w.slot("URI", d.URI)
		w.name(d.Title)
		n := 0
		cl := func(scheme string, c Coded) {
			if c.Code == "" {
				return
			}
			n++
			w.open("rim:Classification", "id", fmt.Sprintf("cl%02d%02d", i+1, n), "classificationScheme", scheme,
				"classifiedObject", id, "nodeRepresentation", c.Code, "objectType", "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification")
			w.slot("codingScheme", c.Scheme)
			w.name(c.Display)
			w.close("rim:Classification")
		}
		if d.AuthorPerson != "" || d.AuthorInstitution != "" || len(d.AuthorTelecom) > 0 {
			n++
			w.open("rim:Classification", "id", fmt.Sprintf("cl%02d%02d", i+1, n), "classificationScheme", uuidDEAuthor,
				"classifiedObject", id, "nodeRepresentation", "")
			w.slot("authorPerson", d.AuthorPerson)
			w.slot("authorInstitution", d.AuthorInstitution)
			w.slot("authorTelecommunication", d.AuthorTelecom...)
			w.close("rim:Classification")
		}
		cl(uuidDEClassCode, d.ClassCode)
		cl(uuidDEConfidentiality, d.Confidentiality)
		cl(uuidDEFormatCode, d.FormatCode)
		cl(uuidDETypeCode, d.TypeCode)
		if d.Limited {
			n++
			w.empty("rim:Classification", "id", fmt.Sprintf("cl%02d%02d", i+1, n), "classifiedObject", id, "classificationNode", uuidDELimited)
		}
		w.extID(fmt.Sprintf("ei%02d01", i+1), uuidDEPatientID, id, d.PatientID, "XDSDocumentEntry.patientId")
		w.extID(fmt.Sprintf("ei%02d02", i+1), uuidDEUniqueID, id, d.UniqueID, "XDSDocumentEntry.uniqueId")
		w.close("rim:ExtrinsicObject")
	}
	ss := m.SubmissionSet
	w.open("rim:RegistryPackage", "id", ss.ID, "objectType", "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage")
	w.slot("submissionTime", ss.SubmissionTime)
	w.slot("intendedRecipient", ss.IntendedRecipients...)
	w.name(ss.Title)
	if len(ss.AuthorTelecom) > 0 {
		w.open("rim:Classification", "id", "clss01", "classificationScheme", uuidSSAuthor, "classifiedObject", ss.ID, "nodeRepresentation", "")
		w.slot("authorTelecommunication", ss.AuthorTelecom...)
		w.close("rim:Classification")
	}
	if ss.ContentType.Code != "" {
		w.open("rim:Classification", "id", "clss02", "classificationScheme", uuidSSContentType, "classifiedObject", ss.ID, "nodeRepresentation", ss.ContentType.Code)
		w.slot("codingScheme", ss.ContentType.Scheme)
		w.name(ss.ContentType.Display)
		w.close("rim:Classification")
	}
	if ss.Limited {
		w.empty("rim:Classification", "id", "clss03", "classifiedObject", ss.ID, "classificationNode", uuidSSLimited)
	}
	w.extID("eiss01", uuidSSUniqueID, ss.ID, ss.UniqueID, "XDSSubmissionSet.uniqueId")
	w.extID("eiss02", uuidSSSourceID, ss.ID, ss.SourceID, "XDSSubmissionSet.sourceId")
	w.extID("eiss03", uuidSSPatientID, ss.ID, ss.PatientID, "XDSSubmissionSet.patientId")
	w.close("rim:RegistryPackage")
	w.empty("rim:Classification", "id", "clss00", "classifiedObject", ss.ID, "classificationNode", uuidSubmissionSet)
	for i, d := range m.Documents {
		w.open("rim:Association", "id", fmt.Sprintf("as%02d", i+1), "associationType", hasMember, "sourceObject", ss.ID, "targetObject", d.ID)
		w.slot("SubmissionSetStatus", "Original")
		w.close("rim:Association")
	}
	w.raw("</rim:RegistryObjectList>\n</lcm:SubmitObjectsRequest>\n")
	return w.b.Bytes()
}

// xw writes indented XML; attribute and text values are escaped.
type xw struct {
	b     bytes.Buffer
	depth int
}

func (w *xw) raw(s string) { w.b.WriteString(s) }

func (w *xw) indent() {
	for range w.depth + 1 {
		w.b.WriteString("  ")
	}
}

func (w *xw) tag(name string, attrs []string, end string) {
	w.indent()
	w.b.WriteString("<" + name)
	for i := 0; i+1 < len(attrs); i += 2 {
		w.b.WriteString(" " + attrs[i] + `="`)
		xml.EscapeText(&w.b, []byte(attrs[i+1]))
		w.b.WriteString(`"`)
	}
	w.b.WriteString(end + "\n")
}

func (w *xw) open(name string, attrs ...string)  { w.tag(name, attrs, ">"); w.depth++ }
func (w *xw) empty(name string, attrs ...string) { w.tag(name, attrs, "/>") }
func (w *xw) close(name string) {
	w.depth--
	w.indent()
	w.b.WriteString("</" + name + ">\n")
}

func (w *xw) text(name, value string) {
	w.indent()
	w.b.WriteString("<" + name + ">")
	xml.EscapeText(&w.b, []byte(value))
	w.b.WriteString("</" + name + ">\n")
}

func (w *xw) slot(name string, values ...string) {
	var vs []string
	for _, v := range values {
		if v != "" {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return
	}
	w.open("rim:Slot", "name", name)
	w.open("rim:ValueList")
	for _, v := range vs {
		w.text("rim:Value", v)
	}
	w.close("rim:ValueList")
	w.close("rim:Slot")
}

func (w *xw) name(s string) {
	if s == "" {
		return
	}
	w.open("rim:Name")
	w.empty("rim:LocalizedString", "value", s)
	w.close("rim:Name")
}

func (w *xw) extID(id, scheme, obj, value, label string) {
	if value == "" {
		return
	}
	w.open("rim:ExternalIdentifier", "id", id, "identificationScheme", scheme, "registryObject", obj, "value", value,
		"objectType", "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier")
	w.name(label)
	w.close("rim:ExternalIdentifier")
}

// The ebRIM elements read, by local name: the prefixes implementations
// use differ.
type rimSlot struct {
	Name   string   `xml:"name,attr"`
	Values []string `xml:"ValueList>Value"`
}

type rimName struct {
	Values []struct {
		Value string `xml:"value,attr"`
	} `xml:"LocalizedString"`
}

type rimClassification struct {
	ID         string    `xml:"id,attr"`
	Scheme     string    `xml:"classificationScheme,attr"`
	Node       string    `xml:"classificationNode,attr"`
	Classified string    `xml:"classifiedObject,attr"`
	NodeRep    string    `xml:"nodeRepresentation,attr"`
	Slots      []rimSlot `xml:"Slot"`
	Name       rimName   `xml:"Name"`
}

type rimExternalID struct {
	Scheme string `xml:"identificationScheme,attr"`
	Value  string `xml:"value,attr"`
}

type rimObject struct {
	ID              string              `xml:"id,attr"`
	MimeType        string              `xml:"mimeType,attr"`
	ObjectType      string              `xml:"objectType,attr"`
	Slots           []rimSlot           `xml:"Slot"`
	Name            rimName             `xml:"Name"`
	Classifications []rimClassification `xml:"Classification"`
	ExternalIDs     []rimExternalID     `xml:"ExternalIdentifier"`
}

type rimAssociation struct {
	Type   string `xml:"associationType,attr"`
	Source string `xml:"sourceObject,attr"`
	Target string `xml:"targetObject,attr"`
}

type rimList struct {
	Extrinsic       []rimObject         `xml:"ExtrinsicObject"`
	Packages        []rimObject         `xml:"RegistryPackage"`
	Classifications []rimClassification `xml:"Classification"`
	Associations    []rimAssociation    `xml:"Association"`
}

type rimRequest struct {
	XMLName xml.Name
	List    rimList `xml:"RegistryObjectList"`
}

// MaxMetadataSize is the largest METADATA.XML ParseMetadata reads.
const MaxMetadataSize = 4 << 20

// maxMetadataDepth bounds element nesting: ebRIM nests some 6 levels.
const maxMetadataDepth = 32

// ParseMetadata reads a METADATA.XML (an ebRIM SubmitObjectsRequest, or a
// ProvideAndRegisterDocumentSetRequest holding one), safely: no DTD, only
// the predefined entities, MaxMetadataSize and a depth limit. Errors wrap
// ErrMetadata.
func ParseMetadata(data []byte) (*Metadata, error) {
	if len(data) > MaxMetadataSize {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrMetadata, len(data), MaxMetadataSize)
	}
	// A first pass refuses a DTD and deep nesting before the decoder
	// builds anything.
	d := newDecoder(bytes.NewReader(data))
	depth := 0
	var root xml.Name
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: not well-formed: %v", ErrMetadata, err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, fmt.Errorf("%w: document type declaration (DTD) refused", ErrMetadata)
		case xml.StartElement:
			if depth == 0 {
				root = t.Name
			}
			if depth++; depth > maxMetadataDepth {
				return nil, fmt.Errorf("%w: elements nested deeper than %d", ErrMetadata, maxMetadataDepth)
			}
		case xml.EndElement:
			depth--
		}
	}
	var req rimRequest
	d = newDecoder(bytes.NewReader(data))
	var err error
	switch root.Local {
	case "SubmitObjectsRequest":
		err = d.Decode(&req)
	case "ProvideAndRegisterDocumentSetRequest":
		var pnr struct {
			Req rimRequest `xml:"SubmitObjectsRequest"`
		}
		err = d.Decode(&pnr)
		req = pnr.Req
	default:
		return nil, fmt.Errorf("%w: root element is %s, not SubmitObjectsRequest", ErrMetadata, root.Local)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMetadata, err)
	}
	return fromRIM(&req.List)
}

func newDecoder(r io.Reader) *xml.Decoder {
	d := xml.NewDecoder(r)
	d.Strict = true
	d.Entity = nil
	d.CharsetReader = func(charset string, input io.Reader) (io.Reader, error) {
		switch strings.ToLower(charset) {
		case "utf-8", "utf8", "us-ascii", "ascii":
			return input, nil
		}
		return nil, fmt.Errorf("unsupported charset %q", charset)
	}
	return d
}

func fromRIM(l *rimList) (*Metadata, error) {
	m := &Metadata{}
	// The submission set: the RegistryPackage classified as one (by a
	// Classification inside it or beside it), else the only one.
	ssIDs := map[string]bool{}
	for _, c := range l.Classifications {
		if c.Node == uuidSubmissionSet {
			ssIDs[c.Classified] = true
		}
	}
	var ss *rimObject
	for i := range l.Packages {
		p := &l.Packages[i]
		isSS := ssIDs[p.ID]
		for _, c := range p.Classifications {
			isSS = isSS || c.Node == uuidSubmissionSet
		}
		for _, e := range p.ExternalIDs {
			isSS = isSS || e.Scheme == uuidSSUniqueID
		}
		if isSS {
			ss = p
			break
		}
	}
	if ss == nil && len(l.Packages) == 1 {
		ss = &l.Packages[0]
	}
	if ss != nil {
		m.SubmissionSet = SubmissionSet{
			ID:                 ss.ID,
			SubmissionTime:     slot(ss.Slots, "submissionTime"),
			IntendedRecipients: slots(ss.Slots, "intendedRecipient"),
			Title:              ss.Name.first(),
			UniqueID:           extID(ss.ExternalIDs, uuidSSUniqueID),
			SourceID:           extID(ss.ExternalIDs, uuidSSSourceID),
			PatientID:          extID(ss.ExternalIDs, uuidSSPatientID),
		}
		for _, c := range append(classificationsOf(l.Classifications, ss.ID), ss.Classifications...) {
			switch {
			case c.Scheme == uuidSSAuthor:
				m.SubmissionSet.AuthorTelecom = append(m.SubmissionSet.AuthorTelecom, slots(c.Slots, "authorTelecommunication")...)
			case c.Scheme == uuidSSContentType:
				m.SubmissionSet.ContentType = c.coded()
			case c.Node == uuidSSLimited:
				m.SubmissionSet.Limited = true
			}
		}
	}
	for _, o := range l.Extrinsic {
		if o.ObjectType != "" && o.ObjectType != uuidDocumentEntry {
			continue // an on-demand entry or another object type
		}
		d := DocumentEntry{
			ID:                o.ID,
			MimeType:          o.MimeType,
			URI:               strings.Join(slots(o.Slots, "URI"), ""),
			Hash:              strings.ToLower(slot(o.Slots, "hash")),
			Size:              -1,
			CreationTime:      slot(o.Slots, "creationTime"),
			SourcePatientID:   slot(o.Slots, "sourcePatientId"),
			SourcePatientInfo: slots(o.Slots, "sourcePatientInfo"),
			LanguageCode:      slot(o.Slots, "languageCode"),
			Title:             o.Name.first(),
			PatientID:         extID(o.ExternalIDs, uuidDEPatientID),
			UniqueID:          extID(o.ExternalIDs, uuidDEUniqueID),
		}
		// A multi-part URI (|1|part|2|part) is joined above only when
		// it is one part; the numbered form is stripped here.
		if vs := slots(o.Slots, "URI"); len(vs) > 1 {
			d.URI = joinURIParts(vs)
		}
		if s := slot(o.Slots, "size"); s != "" {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%w: document %s: size %q is not a number", ErrMetadata, o.ID, s)
			}
			d.Size = n
		}
		for _, c := range append(classificationsOf(l.Classifications, o.ID), o.Classifications...) {
			switch {
			case c.Scheme == uuidDEAuthor:
				d.AuthorPerson = slot(c.Slots, "authorPerson")
				d.AuthorInstitution = slot(c.Slots, "authorInstitution")
				d.AuthorTelecom = append(d.AuthorTelecom, slots(c.Slots, "authorTelecommunication")...)
			case c.Scheme == uuidDEClassCode:
				d.ClassCode = c.coded()
			case c.Scheme == uuidDETypeCode:
				d.TypeCode = c.coded()
			case c.Scheme == uuidDEFormatCode:
				d.FormatCode = c.coded()
			case c.Scheme == uuidDEConfidentiality:
				d.Confidentiality = c.coded()
			case c.Node == uuidDELimited:
				d.Limited = true
			}
		}
		m.Documents = append(m.Documents, d)
	}
	if len(m.Documents) == 0 {
		return nil, fmt.Errorf("%w: no DocumentEntry", ErrMetadata)
	}
	return m, nil
}

// joinURIParts joins the URI slot of a long URI split into numbered
// values ("1|DOC0", "2|001.XML").
func joinURIParts(vs []string) string {
	var b strings.Builder
	for _, v := range vs {
		if i := strings.IndexByte(v, '|'); i >= 0 {
			v = v[i+1:]
		}
		b.WriteString(v)
	}
	return b.String()
}

func classificationsOf(list []rimClassification, id string) []rimClassification {
	var out []rimClassification
	for _, c := range list {
		if c.Classified == id {
			out = append(out, c)
		}
	}
	return out
}

func (c rimClassification) coded() Coded {
	return Coded{Code: c.NodeRep, Scheme: slot(c.Slots, "codingScheme"), Display: c.Name.first()}
}

func (n rimName) first() string {
	if len(n.Values) == 0 {
		return ""
	}
	return n.Values[0].Value
}

func slots(list []rimSlot, name string) []string {
	for _, s := range list {
		if s.Name == name {
			var out []string
			for _, v := range s.Values {
				out = append(out, strings.TrimSpace(v))
			}
			return out
		}
	}
	return nil
}

func slot(list []rimSlot, name string) string {
	if vs := slots(list, name); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func extID(list []rimExternalID, scheme string) string {
	for _, e := range list {
		if e.Scheme == scheme {
			return e.Value
		}
	}
	return ""
}

var errNoDocuments = errors.New("no documents")
