package ccda

import (
	"bytes"
	"html"
	"strconv"
	"strings"
)

// HTML renders a document for people: a header table (patient, document
// type, author, custodian, date, confidentiality) and each section's title
// and narrative block. It is safe to open in a mail client: every text and
// attribute of the document is escaped, nothing of it becomes markup, an
// attribute or a style; there are no scripts, no images, no links that load
// anything and no remote references, and a Content-Security-Policy forbids
// them besides (the classic CDA stylesheet rendered the document's own
// markup and links, which is how its holes came about).
func HTML(doc *Document) []byte {
	var b bytes.Buffer
	title := doc.Title
	if title == "" {
		title = doc.Code.DisplayName
	}
	if title == "" {
		title = "Clinical document"
	}
	b.WriteString(`<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<title>`)
	esc(&b, title)
	b.WriteString(`</title>
<style>
body{font-family:sans-serif;margin:1em;max-width:60em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}
table.header th{background:#eee}
.note{color:#555;font-size:90%}
</style></head><body>
<h1>`)
	esc(&b, title)
	b.WriteString("</h1>\n<table class=\"header\">\n")
	row := func(k, v string) {
		if strings.TrimSpace(v) == "" {
			return
		}
		b.WriteString("<tr><th>")
		esc(&b, k)
		b.WriteString("</th><td>")
		esc(&b, v)
		b.WriteString("</td></tr>\n")
	}
	p := doc.Patient
	row("Patient", p.Name)
	row("Patient ID", joinIDs(p.IDs))
	row("Birth date", FormatTime(p.BirthTime))
	row("Gender", genderName(p.Gender))
	row("Document type", doc.Code.String())
	row("Date", FormatTime(doc.EffectiveTime))
	for _, a := range doc.Authors {
		who := a.Name
		if who == "" {
			who = a.Device
		}
		if a.Organization != "" {
			if who != "" {
				who += ", "
			}
			who += a.Organization
		}
		if a.Time != "" {
			who += " (" + FormatTime(a.Time) + ")"
		}
		row("Author", who)
	}
	row("Custodian", doc.Custodian.Name)
	row("Confidentiality", confidentialityName(doc.Confidentiality))
	row("Document ID", doc.ID.String())
	b.WriteString("</table>\n")
	if doc.NonXMLBody {
		b.WriteString("<p class=\"note\">The body of this document is not structured text (")
		esc(&b, doc.NonXMLMediaType)
		b.WriteString("); open the attached document to read it.</p>\n")
	}
	for _, s := range doc.Sections {
		section(&b, s, 2)
	}
	b.WriteString("<p class=\"note\">A plain view of the attached C-CDA document made by hisp: the header and the narrative text of each section. The attached XML is the document of record.</p>\n</body></html>\n")
	return b.Bytes()
}

func section(b *bytes.Buffer, s Section, level int) {
	h := "h" + strconv.Itoa(min(level, 6))
	title := s.Title
	if title == "" {
		title = s.Code.DisplayName
	}
	if title == "" {
		title = "Section"
	}
	b.WriteString("<section><" + h + ">")
	esc(b, title)
	b.WriteString("</" + h + ">\n")
	if s.Text != nil {
		b.WriteString("<div>")
		for _, c := range s.Text.Children {
			node(b, c, 0)
		}
		b.WriteString("</div>\n")
	}
	for _, c := range s.Sections {
		section(b, c, level+1)
	}
	b.WriteString("</section>\n")
}

// maxNodeDepth bounds the rendering of nested narrative elements; the
// parser's depth limit already bounds it, this keeps the output sane.
const maxNodeDepth = 64

// node renders one narrative node. Element names map to a fixed set of
// HTML elements; unknown ones render their content only.
func node(b *bytes.Buffer, n *Node, depth int) {
	if n.Name == "" {
		esc(b, n.Text)
		return
	}
	if depth > maxNodeDepth {
		return
	}
	children := func() {
		for _, c := range n.Children {
			node(b, c, depth+1)
		}
	}
	var tag, attrs string
	switch n.Name {
	case "paragraph":
		tag = "p"
	case "list":
		tag = "ul"
		if strings.EqualFold(n.Attr["listType"], "ordered") {
			tag = "ol"
		}
	case "item":
		tag = "li"
	case "table", "thead", "tbody", "tfoot", "tr", "caption", "sub", "sup":
		tag = n.Name
	case "th", "td":
		tag = n.Name
		for _, a := range []string{"colspan", "rowspan"} {
			if v, err := strconv.Atoi(n.Attr[a]); err == nil && v > 1 && v <= 1000 {
				attrs += " " + a + "=\"" + strconv.Itoa(v) + "\""
			}
		}
	case "br":
		b.WriteString("<br>")
		return
	case "content":
		tag = "span"
	case "footnote", "footnoteRef":
		tag = "small"
	case "linkHtml":
		// A link is shown as text: its label, then where it points.
		// Nothing is loaded or followed from the view.
		b.WriteString("<span>")
		children()
		if href := n.Attr["href"]; href != "" {
			b.WriteString(" [")
			esc(b, href)
			b.WriteString("]")
		}
		b.WriteString("</span>")
		return
	case "renderMultiMedia":
		b.WriteString("<span class=\"note\">[multimedia not shown]</span>")
		return
	case "col", "colgroup":
		return
	default:
		children()
		return
	}
	// styleCode: a fixed mapping to emphasis elements, never a style.
	var wraps []string
	for _, sc := range strings.Fields(n.Attr["styleCode"]) {
		switch strings.ToLower(sc) {
		case "bold":
			wraps = append(wraps, "b")
		case "italics":
			wraps = append(wraps, "i")
		case "underline":
			wraps = append(wraps, "u")
		case "emphasis":
			wraps = append(wraps, "em")
		}
	}
	b.WriteString("<" + tag + attrs + ">")
	for _, w := range wraps {
		b.WriteString("<" + w + ">")
	}
	children()
	for i := len(wraps) - 1; i >= 0; i-- {
		b.WriteString("</" + wraps[i] + ">")
	}
	b.WriteString("</" + tag + ">")
	if tag == "p" || tag == "table" || tag == "ul" || tag == "ol" || tag == "tr" {
		b.WriteByte('\n')
	}
}

func esc(b *bytes.Buffer, s string) {
	b.WriteString(html.EscapeString(s))
}

func joinIDs(ids []ID) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, id.String())
	}
	return strings.Join(parts, "; ")
}

func genderName(c Code) string {
	switch c.Code {
	case "F":
		return "Female"
	case "M":
		return "Male"
	case "UN":
		return "Undifferentiated"
	}
	if c.DisplayName != "" {
		return c.DisplayName
	}
	return c.Code
}

func confidentialityName(c Code) string {
	switch c.Code {
	case "N":
		return "Normal (N)"
	case "R":
		return "Restricted (R)"
	case "V":
		return "Very restricted (V)"
	case "L":
		return "Low (L)"
	case "M":
		return "Moderate (M)"
	case "U":
		return "Unrestricted (U)"
	}
	return c.String()
}
