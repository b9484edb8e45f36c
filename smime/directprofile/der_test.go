package directprofile_test

import (
	"bytes"
	"encoding/asn1"
	"testing"
)

// A minimal DER rewriter for the tests: it replaces an algorithm
// identifier in a message openssl made with another of any length, and
// re-encodes the lengths of the elements around it.

// node is one DER element: its tag bytes and either its content
// (primitive) or its children (constructed).
type node struct {
	tag      []byte
	content  []byte
	children []*node
}

func parseDER(b []byte) ([]*node, error) {
	var out []*node
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, asn1.SyntaxError{Msg: "truncated"}
		}
		tagLen := 1
		if b[0]&0x1f == 0x1f {
			for tagLen < len(b) && b[tagLen]&0x80 != 0 {
				tagLen++
			}
			tagLen++
		}
		if tagLen >= len(b) {
			return nil, asn1.SyntaxError{Msg: "truncated tag"}
		}
		n, lenLen := int(b[tagLen]), 1
		if n == 0x80 {
			return nil, asn1.SyntaxError{Msg: "indefinite length: want DER"}
		}
		if n > 0x80 {
			k := n & 0x7f
			n = 0
			for i := 0; i < k; i++ {
				n = n<<8 | int(b[tagLen+1+i])
			}
			lenLen += k
		}
		start := tagLen + lenLen
		if start+n > len(b) {
			return nil, asn1.SyntaxError{Msg: "truncated content"}
		}
		e := &node{tag: b[:tagLen], content: b[start : start+n]}
		if b[0]&0x20 != 0 {
			children, err := parseDER(e.content)
			if err != nil {
				return nil, err
			}
			e.children, e.content = children, nil
		}
		out = append(out, e)
		b = b[start+n:]
	}
	return out, nil
}

func (e *node) encode() []byte {
	content := e.content
	if e.children != nil || e.tag[0]&0x20 != 0 {
		content = nil
		for _, c := range e.children {
			content = append(content, c.encode()...)
		}
	}
	out := append([]byte{}, e.tag...)
	switch n := len(content); {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 0x100:
		out = append(out, 0x81, byte(n))
	case n < 0x10000:
		out = append(out, 0x82, byte(n>>8), byte(n))
	default:
		out = append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, content...)
}

// oids returns the OBJECT IDENTIFIER elements equal to oid, in order.
func oids(nodes []*node, oid []byte, out []*node) []*node {
	for _, e := range nodes {
		if len(e.tag) == 1 && e.tag[0] == 0x06 && bytes.Equal(e.content, oid) {
			out = append(out, e)
		}
		out = oids(e.children, oid, out)
	}
	return out
}

func oidContent(t *testing.T, oid asn1.ObjectIdentifier) []byte {
	t.Helper()
	b, err := asn1.Marshal(oid)
	if err != nil {
		t.Fatal(err)
	}
	return b[2:] // short OIDs: one tag byte, one length byte
}

// rewrite replaces from with to in der: every occurrence, or only the
// last.
func rewrite(t *testing.T, der []byte, from, to asn1.ObjectIdentifier, lastOnly bool) []byte {
	t.Helper()
	nodes, err := parseDER(der)
	if err != nil {
		t.Fatal(err)
	}
	found := oids(nodes, oidContent(t, from), nil)
	if len(found) == 0 {
		t.Fatalf("%v not in the message", from)
	}
	if lastOnly {
		found = found[len(found)-1:]
	}
	for _, e := range found {
		e.content = oidContent(t, to)
	}
	var out []byte
	for _, e := range nodes {
		out = append(out, e.encode()...)
	}
	return out
}

func swapOID(t *testing.T, der []byte, from, to asn1.ObjectIdentifier) []byte {
	return rewrite(t, der, from, to, false)
}

func swapLastOID(t *testing.T, der []byte, from, to asn1.ObjectIdentifier) []byte {
	return rewrite(t, der, from, to, true)
}
