package xdm

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// ContextHeader is the message header field that names the Direct context
// part by its Content-ID (DirectTrust "Implementation Guide for Expressing
// Context in Direct Messaging").
const ContextHeader = "X-Direct-Context"

// ContextFileName is the file name of the context part.
const ContextFileName = "metadata.txt"

// maxContextSize bounds a metadata.txt; real ones are a few hundred bytes.
const maxContextSize = 64 << 10

// Context is a Direct context: what a message is about, for the receiving
// system to file it without a person reading it.
type Context struct {
	Version string // "1.0" or "1.1"
	ID      string // the context's own id
	// PatientIDs are the patient ids, each "root:extension" (an assigning
	// authority OID and the id it assigned).
	PatientIDs []string
	// Type is "category/action": laboratory, radiology, pharmacy,
	// referral or general; order, report, result, query, response or
	// notification.
	Type string
	// Purpose is treatment, payment, operations, emergency or research.
	Purpose string
	// Patient are the patient matching parameters (givenName, surname,
	// dateOfBirth...), in the order given.
	Patient [][2]string
	// Encapsulation is "http" or "hl7v2" when the message carries such a
	// message.
	Encapsulation string
	// Other holds fields this version does not know, kept as they came.
	Other [][2]string
}

var (
	contextCategories = []string{"laboratory", "radiology", "pharmacy", "referral", "general"}
	contextActions    = []string{"order", "report", "result", "query", "response", "notification"}
	contextPurposes   = []string{"treatment", "payment", "operations", "emergency", "research"}
	patientParameters = []string{"givenName", "surname", "middleName", "dateOfBirth", "gender", "socialSecurityNumber",
		"telephoneNumber", "streetAddress", "postalCode"}
	oidRE = regexp.MustCompile(`^[0-2](\.(0|[1-9][0-9]*))+$`)
)

// ParseContext reads and validates a metadata.txt: "name: value" lines as in
// a mail header. A context with a fault returns what was read and an error
// wrapping ErrContext saying what is wrong.
func ParseContext(data []byte) (*Context, error) {
	if len(data) > maxContextSize {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrContext, len(data), maxContextSize)
	}
	c := &Context{}
	var problems []string
	seen := map[string]bool{}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	// Unfold continuation lines.
	var fields []string
	for _, l := range lines {
		if l != "" && (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
			continue
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		name, value, ok := strings.Cut(f, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			problems = append(problems, fmt.Sprintf("line %q is not name: value", printable(f)))
			continue
		}
		if seen[name] {
			problems = append(problems, "field "+name+" appears twice")
			continue
		}
		seen[name] = true
		switch name {
		case "version":
			c.Version = value
		case "id":
			c.ID = value
		case "patient-id":
			for _, p := range strings.Split(value, ";") {
				if p = strings.TrimSpace(p); p != "" {
					c.PatientIDs = append(c.PatientIDs, p)
				}
			}
		case "type":
			c.Type = value
		case "purpose":
			c.Purpose = value
		case "patient":
			for _, p := range strings.Split(value, ";") {
				if p = strings.TrimSpace(p); p == "" {
					continue
				}
				k, v, ok := strings.Cut(p, "=")
				k, v = strings.TrimSpace(k), strings.TrimSpace(v)
				if !ok || k == "" {
					problems = append(problems, fmt.Sprintf("patient parameter %q is not name=value", printable(p)))
					continue
				}
				if !oneOf(k, patientParameters, false) {
					problems = append(problems, fmt.Sprintf("unknown patient parameter %q", printable(k)))
				}
				c.Patient = append(c.Patient, [2]string{k, v})
			}
		case "encapsulation":
			c.Encapsulation = value
		default:
			c.Other = append(c.Other, [2]string{name, value})
		}
	}
	switch {
	case c.Version == "":
		problems = append(problems, "no version")
	case !strings.HasPrefix(c.Version, "1."):
		problems = append(problems, fmt.Sprintf("version %q is not 1.x", printable(c.Version)))
	}
	if c.ID == "" {
		problems = append(problems, "no id")
	}
	for _, p := range c.PatientIDs {
		root, ext, ok := strings.Cut(p, ":")
		if !ok || !oidRE.MatchString(root) || ext == "" {
			problems = append(problems, fmt.Sprintf("patient-id %q is not root:extension with an OID root", printable(p)))
		}
	}
	if c.Type != "" {
		cat, act, ok := strings.Cut(c.Type, "/")
		if !ok || !oneOf(cat, contextCategories, true) || !oneOf(act, contextActions, true) {
			problems = append(problems, fmt.Sprintf("type %q is not category/action of the guide", printable(c.Type)))
		}
	}
	if c.Purpose != "" && !oneOf(c.Purpose, contextPurposes, true) {
		problems = append(problems, fmt.Sprintf("purpose %q is not one of %s", printable(c.Purpose), strings.Join(contextPurposes, ", ")))
	}
	if c.Encapsulation != "" && !oneOf(c.Encapsulation, []string{"http", "hl7v2"}, true) {
		problems = append(problems, fmt.Sprintf("encapsulation %q is not http or hl7v2", printable(c.Encapsulation)))
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("%w: %s", ErrContext, strings.Join(problems, "; "))
	}
	return c, nil
}

func oneOf(s string, list []string, fold bool) bool {
	for _, x := range list {
		if s == x || (fold && strings.EqualFold(s, x)) {
			return true
		}
	}
	return false
}

// Bytes writes the context as a metadata.txt.
func (c *Context) Bytes() []byte {
	var b bytes.Buffer
	line := func(k, v string) {
		if v != "" {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	line("version", c.Version)
	line("id", c.ID)
	line("patient-id", strings.Join(c.PatientIDs, "; "))
	line("type", c.Type)
	line("purpose", c.Purpose)
	var ps []string
	for _, p := range c.Patient {
		ps = append(ps, p[0]+"="+p[1])
	}
	line("patient", strings.Join(ps, "; "))
	line("encapsulation", c.Encapsulation)
	other := append([][2]string(nil), c.Other...)
	sort.SliceStable(other, func(i, j int) bool { return other[i][0] < other[j][0] })
	for _, o := range other {
		line(o[0], o[1])
	}
	return b.Bytes()
}

// PatientCX returns the first patient id in XDS form (ext^^^&root&ISO), or
// "" when there is none usable.
func (c *Context) PatientCX() string {
	for _, p := range c.PatientIDs {
		root, ext, ok := strings.Cut(p, ":")
		if ok && oidRE.MatchString(root) && ext != "" {
			return CX(root, ext)
		}
	}
	return ""
}
