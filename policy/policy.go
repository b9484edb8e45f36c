// Package policy is hisp's trust policy engine: named rules over the fields
// of a certificate (certificate policy OIDs, key usage and extended key
// usage, key type and size, issuer, subject, subjectAltName), combined with
// and, or and not, that a local domain attaches to a direction: the signers
// it accepts (in), the recipients it encrypts to (out), or both. A
// certificate that trust validation accepts must also meet every rule of the
// domain and direction; one that fails is refused with the rule's name.
// This is what a trust community's certificate policy asks (the DirectTrust
// preset), and what the Direct Project's reference implementation offers as
// its policy engine.
//
// A rule is written as an expression:
//
//	policy(1.3.6.1.4.1.41179.1.*) and (key-usage(keyEncipherment) or key-usage(digitalSignature))
//	not issuer("Test CA") and key-type(rsa) and key-size(>=2048)
//
// Predicates: policy(OID or OID.*), key-usage(NAME), ext-key-usage(NAME or
// OID), key-type(rsa|ecdsa), key-size(OP BITS) with OP one of >= > <= < =,
// issuer(TEXT) and subject(TEXT) (the distinguished name contains TEXT, any
// case), san(PATTERN) (an rfc822Name or dNSName matches PATTERN, * any run
// of characters, any case). "and" binds tighter than "or"; parentheses
// group. Words reads an expression back in plain words.
package policy

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Expr is a parsed rule expression.
type Expr interface {
	// Eval reports whether cert meets the expression, and when it does not
	// why, in words.
	Eval(cert *x509.Certificate) (bool, string)
	// Words says what the expression asks of a certificate, in plain words
	// following "the certificate".
	Words() string
	// String is the expression in the rule language, as Parse reads it.
	String() string
}

// Parse reads a rule expression.
func Parse(s string) (Expr, error) {
	p := &parser{toks: nil}
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p.toks = toks
	if len(toks) == 0 {
		return nil, fmt.Errorf("empty rule")
	}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, fmt.Errorf("unexpected %q after a complete rule", p.toks[p.i].text)
	}
	return e, nil
}

type token struct {
	text   string
	quoted bool
}

// tokenize splits s into words, parentheses and quoted strings.
func tokenize(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{text: string(c)})
			i++
		case c == '"':
			j := i + 1
			var b strings.Builder
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated quoted text at %d", i)
			}
			out = append(out, token{text: b.String(), quoted: true})
			i = j + 1
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r(),\"", rune(s[j])) {
				j++
			}
			out = append(out, token{text: s[i:j]})
			i = j
		}
	}
	return out, nil
}

type parser struct {
	toks []token
	i    int
}

func (p *parser) peek(word string) bool {
	return p.i < len(p.toks) && !p.toks[p.i].quoted && strings.EqualFold(p.toks[p.i].text, word)
}

func (p *parser) or() (Expr, error) {
	e, err := p.and()
	if err != nil {
		return nil, err
	}
	list := []Expr{e}
	for p.peek("or") {
		p.i++
		e, err := p.and()
		if err != nil {
			return nil, err
		}
		list = append(list, e)
	}
	if len(list) == 1 {
		return list[0], nil
	}
	return orExpr(list), nil
}

func (p *parser) and() (Expr, error) {
	e, err := p.factor()
	if err != nil {
		return nil, err
	}
	list := []Expr{e}
	for p.peek("and") {
		p.i++
		e, err := p.factor()
		if err != nil {
			return nil, err
		}
		list = append(list, e)
	}
	if len(list) == 1 {
		return list[0], nil
	}
	return andExpr(list), nil
}

func (p *parser) factor() (Expr, error) {
	if p.i >= len(p.toks) {
		return nil, fmt.Errorf("the rule ends where a condition was expected")
	}
	switch {
	case p.peek("not"):
		p.i++
		e, err := p.factor()
		if err != nil {
			return nil, err
		}
		return notExpr{e}, nil
	case p.peek("("):
		p.i++
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if !p.peek(")") {
			return nil, fmt.Errorf("missing )")
		}
		p.i++
		return e, nil
	}
	name := p.toks[p.i]
	p.i++
	if name.quoted || !p.peek("(") {
		return nil, fmt.Errorf("expected a condition such as policy(OID), got %q", name.text)
	}
	p.i++
	var args []string
	for !p.peek(")") {
		if p.i >= len(p.toks) {
			return nil, fmt.Errorf("missing ) after %s(", name.text)
		}
		if p.peek(",") {
			p.i++
			continue
		}
		args = append(args, p.toks[p.i].text)
		p.i++
	}
	p.i++
	return predicate(strings.ToLower(name.text), args)
}

// Key usage names, as RFC 5280 section 4.2.1.3 spells them.
var keyUsages = []struct {
	name string
	ku   x509.KeyUsage
}{
	{"digitalSignature", x509.KeyUsageDigitalSignature},
	{"nonRepudiation", x509.KeyUsageContentCommitment},
	{"contentCommitment", x509.KeyUsageContentCommitment},
	{"keyEncipherment", x509.KeyUsageKeyEncipherment},
	{"dataEncipherment", x509.KeyUsageDataEncipherment},
	{"keyAgreement", x509.KeyUsageKeyAgreement},
	{"keyCertSign", x509.KeyUsageCertSign},
	{"cRLSign", x509.KeyUsageCRLSign},
}

// Extended key usage names (RFC 5280 section 4.2.1.12).
var extKeyUsages = map[string]asn1.ObjectIdentifier{
	"emailProtection": {1, 3, 6, 1, 5, 5, 7, 3, 4},
	"clientAuth":      {1, 3, 6, 1, 5, 5, 7, 3, 2},
	"serverAuth":      {1, 3, 6, 1, 5, 5, 7, 3, 1},
	"any":             {2, 5, 29, 37, 0},
}

func predicate(name string, args []string) (Expr, error) {
	one := func() (string, error) {
		if len(args) != 1 || args[0] == "" {
			return "", fmt.Errorf("%s() takes one argument", name)
		}
		return args[0], nil
	}
	switch name {
	case "policy":
		a, err := one()
		if err != nil {
			return nil, err
		}
		prefix := strings.HasSuffix(a, ".*")
		oid, err := parseOID(strings.TrimSuffix(a, ".*"))
		if err != nil {
			return nil, fmt.Errorf("policy(%s): %w", a, err)
		}
		return policyPred{oid: oid, prefix: prefix}, nil
	case "key-usage":
		a, err := one()
		if err != nil {
			return nil, err
		}
		for _, k := range keyUsages {
			if strings.EqualFold(k.name, a) {
				return kuPred{name: k.name, ku: k.ku}, nil
			}
		}
		return nil, fmt.Errorf("key-usage(%s): want digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, keyAgreement, keyCertSign or cRLSign", a)
	case "ext-key-usage":
		a, err := one()
		if err != nil {
			return nil, err
		}
		for n, oid := range extKeyUsages {
			if strings.EqualFold(n, a) {
				return ekuPred{name: n, oid: oid}, nil
			}
		}
		oid, err := parseOID(a)
		if err != nil {
			return nil, fmt.Errorf("ext-key-usage(%s): want emailProtection, clientAuth, serverAuth, any or an OID", a)
		}
		return ekuPred{name: a, oid: oid}, nil
	case "key-type":
		a, err := one()
		if err != nil {
			return nil, err
		}
		switch t := strings.ToLower(a); t {
		case "rsa", "ecdsa":
			return keyTypePred(t), nil
		}
		return nil, fmt.Errorf("key-type(%s): want rsa or ecdsa", a)
	case "key-size":
		a := strings.Join(args, "")
		op := strings.TrimRight(a, "0123456789")
		bits, err := strconv.Atoi(a[len(op):])
		if err != nil || bits <= 0 {
			return nil, fmt.Errorf("key-size(%s): want an operator and a number of bits, as in key-size(>=2048)", a)
		}
		switch op {
		case ">=", ">", "<=", "<", "=", "==":
		case "":
			op = ">="
		default:
			return nil, fmt.Errorf("key-size(%s): operator %q: want >=, >, <=, < or =", a, op)
		}
		if op == "==" {
			op = "="
		}
		return keySizePred{op: op, bits: bits}, nil
	case "issuer", "subject":
		a, err := one()
		if err != nil {
			return nil, err
		}
		return dnPred{field: name, text: a}, nil
	case "san":
		a, err := one()
		if err != nil {
			return nil, err
		}
		if _, err := path.Match(strings.ToLower(a), ""); err != nil {
			return nil, fmt.Errorf("san(%s): %w", a, err)
		}
		return sanPred(a), nil
	}
	return nil, fmt.Errorf("unknown condition %s(): want policy, key-usage, ext-key-usage, key-type, key-size, issuer, subject or san", name)
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%q is not an OID", s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not an OID", s)
		}
		oid[i] = n
	}
	return oid, nil
}

type andExpr []Expr

func (e andExpr) Eval(c *x509.Certificate) (bool, string) {
	for _, x := range e {
		if ok, why := x.Eval(c); !ok {
			return false, why
		}
	}
	return true, ""
}

func (e andExpr) Words() string { return join(e, " and ", Expr.Words) }

func (e andExpr) String() string { return join(e, " and ", Expr.String) }

type orExpr []Expr

func (e orExpr) Eval(c *x509.Certificate) (bool, string) {
	var whys []string
	for _, x := range e {
		ok, why := x.Eval(c)
		if ok {
			return true, ""
		}
		whys = append(whys, why)
	}
	return false, "none of: " + strings.Join(whys, "; ")
}

func (e orExpr) Words() string { return "either " + join(e, " or ", Expr.Words) }

func (e orExpr) String() string { return join(e, " or ", Expr.String) }

// join writes the parts of a compound, parenthesized where they are
// compounds themselves.
func join(list []Expr, sep string, f func(Expr) string) string {
	parts := make([]string, len(list))
	for i, x := range list {
		s := f(x)
		switch x.(type) {
		case andExpr, orExpr:
			s = "(" + s + ")"
		}
		parts[i] = s
	}
	return strings.Join(parts, sep)
}

type notExpr struct{ e Expr }

func (e notExpr) Eval(c *x509.Certificate) (bool, string) {
	if ok, _ := e.e.Eval(c); ok {
		return false, "the certificate " + e.Words()[len("is not one that "):] + ", which it must not"
	}
	return true, ""
}

func (e notExpr) Words() string {
	switch e.e.(type) {
	case andExpr, orExpr:
		return "is not one that (" + e.e.Words() + ")"
	}
	return "is not one that " + e.e.Words()
}

func (e notExpr) String() string {
	switch e.e.(type) {
	case andExpr, orExpr:
		return "not (" + e.e.String() + ")"
	}
	return "not " + e.e.String()
}

type policyPred struct {
	oid    asn1.ObjectIdentifier
	prefix bool
}

func (p policyPred) Eval(c *x509.Certificate) (bool, string) {
	var have []string
	for _, o := range c.PolicyIdentifiers {
		// OID.* is any policy under the arc, not the arc itself.
		if (!p.prefix && o.Equal(p.oid)) || (p.prefix && len(o) > len(p.oid) && o[:len(p.oid)].Equal(p.oid)) {
			return true, ""
		}
		have = append(have, o.String())
	}
	if len(have) == 0 {
		return false, "the certificate asserts no certificate policy, want " + p.want()
	}
	return false, fmt.Sprintf("the certificate asserts policies %s, not %s", strings.Join(have, ", "), p.want())
}

func (p policyPred) want() string {
	if p.prefix {
		return "one under " + p.oid.String()
	}
	return p.oid.String()
}

func (p policyPred) Words() string { return "asserts a certificate policy " + p.wantWords() }

func (p policyPred) wantWords() string {
	if p.prefix {
		return "under " + p.oid.String()
	}
	return p.oid.String()
}

func (p policyPred) String() string {
	if p.prefix {
		return "policy(" + p.oid.String() + ".*)"
	}
	return "policy(" + p.oid.String() + ")"
}

type kuPred struct {
	name string
	ku   x509.KeyUsage
}

func (p kuPred) Eval(c *x509.Certificate) (bool, string) {
	if c.KeyUsage&p.ku != 0 {
		return true, ""
	}
	return false, "the certificate's key usage lacks " + p.name
}

func (p kuPred) Words() string { return "has key usage " + p.name }

func (p kuPred) String() string { return "key-usage(" + p.name + ")" }

type ekuPred struct {
	name string
	oid  asn1.ObjectIdentifier
}

func (p ekuPred) Eval(c *x509.Certificate) (bool, string) {
	for _, u := range c.ExtKeyUsage {
		if oid, ok := extKeyUsageOID(u); ok && oid.Equal(p.oid) {
			return true, ""
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(p.oid) {
			return true, ""
		}
	}
	return false, "the certificate's extended key usage lacks " + p.name
}

func (p ekuPred) Words() string { return "has extended key usage " + p.name }

func (p ekuPred) String() string { return "ext-key-usage(" + p.name + ")" }

// extKeyUsageOID maps the extended key usages crypto/x509 knows by name.
func extKeyUsageOID(u x509.ExtKeyUsage) (asn1.ObjectIdentifier, bool) {
	switch u {
	case x509.ExtKeyUsageEmailProtection:
		return extKeyUsages["emailProtection"], true
	case x509.ExtKeyUsageClientAuth:
		return extKeyUsages["clientAuth"], true
	case x509.ExtKeyUsageServerAuth:
		return extKeyUsages["serverAuth"], true
	case x509.ExtKeyUsageAny:
		return extKeyUsages["any"], true
	}
	return nil, false
}

type keyTypePred string

func keyType(c *x509.Certificate) (string, int) {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return "rsa", k.N.BitLen()
	case *ecdsa.PublicKey:
		return "ecdsa", k.Curve.Params().BitSize
	}
	return strings.ToLower(c.PublicKeyAlgorithm.String()), 0
}

func (p keyTypePred) Eval(c *x509.Certificate) (bool, string) {
	if t, _ := keyType(c); t == string(p) {
		return true, ""
	}
	t, _ := keyType(c)
	return false, fmt.Sprintf("the certificate has a %s key, not %s", t, p)
}

func (p keyTypePred) Words() string { return "has an " + strings.ToUpper(string(p)) + " key" }

func (p keyTypePred) String() string { return "key-type(" + string(p) + ")" }

type keySizePred struct {
	op   string // ">=", ">", "<=", "<", "="
	bits int
}

func (p keySizePred) Eval(c *x509.Certificate) (bool, string) {
	_, n := keyType(c)
	ok := false
	switch p.op {
	case ">=":
		ok = n >= p.bits
	case ">":
		ok = n > p.bits
	case "<=":
		ok = n <= p.bits
	case "<":
		ok = n < p.bits
	case "=":
		ok = n == p.bits
	}
	if ok {
		return true, ""
	}
	return false, fmt.Sprintf("the certificate's key has %d bits, want %s", n, p.wantWords())
}

func (p keySizePred) wantWords() string {
	switch p.op {
	case ">=":
		return fmt.Sprintf("at least %d", p.bits)
	case ">":
		return fmt.Sprintf("more than %d", p.bits)
	case "<=":
		return fmt.Sprintf("at most %d", p.bits)
	case "<":
		return fmt.Sprintf("fewer than %d", p.bits)
	}
	return fmt.Sprintf("exactly %d", p.bits)
}

func (p keySizePred) Words() string { return "has a key of " + p.wantWords() + " bits" }

func (p keySizePred) String() string { return fmt.Sprintf("key-size(%s%d)", p.op, p.bits) }

type dnPred struct {
	field string // "issuer" or "subject"
	text  string
}

func (p dnPred) Eval(c *x509.Certificate) (bool, string) {
	dn := c.Subject.String()
	if p.field == "issuer" {
		dn = c.Issuer.String()
	}
	if strings.Contains(strings.ToLower(dn), strings.ToLower(p.text)) {
		return true, ""
	}
	return false, fmt.Sprintf("the certificate's %s %q does not contain %q", p.field, dn, p.text)
}

func (p dnPred) Words() string { return fmt.Sprintf("has an %s containing %q", p.field, p.text) }

func (p dnPred) String() string { return p.field + "(" + quote(p.text) + ")" }

// quote writes text as the tokenizer reads it back: in double quotes, with
// backslash before '"' and '\'.
func quote(text string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(text) + `"`
}

type sanPred string

func (p sanPred) Eval(c *x509.Certificate) (bool, string) {
	names := append(append([]string{}, c.EmailAddresses...), c.DNSNames...)
	for _, n := range names {
		if ok, _ := path.Match(strings.ToLower(string(p)), strings.ToLower(n)); ok {
			return true, ""
		}
	}
	return false, fmt.Sprintf("no subjectAltName of the certificate (%s) matches %s", strings.Join(names, ", "), string(p))
}

func (p sanPred) Words() string { return "names " + string(p) + " in its subjectAltName" }

func (p sanPred) String() string { return "san(" + quote(string(p)) + ")" }
