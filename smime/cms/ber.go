package cms

import (
	"bytes"
	"encoding/asn1"
	"fmt"
)

// This file reads BER (X.690 section 8) without copying and rewrites small
// BER elements as DER (X.690 section 10) for encoding/asn1, which reads DER
// only. Streaming CMS encoders write indefinite lengths and constructed
// OCTET STRINGs; RFC 5652 section 1.2 allows BER for everything but signed
// attributes.

// maxBERDepth bounds the nesting of constructed elements, so that hostile
// input cannot exhaust the stack. CMS messages nest fewer than 20 levels.
const maxBERDepth = 64

// berElement is one BER element inside a buffer. Its slices point into that
// buffer.
type berElement struct {
	class       int // asn1.ClassUniversal and so on
	tag         int
	constructed bool
	indefinite  bool   // length given as indefinite (constructed only)
	full        []byte // the whole element: header, content and end-of-contents octets
	content     []byte // the content octets, without end-of-contents octets
}

func (e berElement) is(class, tag int) bool {
	return e.class == class && e.tag == tag
}

// describe names the element's tag for error messages.
func (e berElement) describe() string {
	switch e.class {
	case asn1.ClassUniversal:
		return fmt.Sprintf("universal tag %d", e.tag)
	case asn1.ClassContextSpecific:
		return fmt.Sprintf("[%d]", e.tag)
	case asn1.ClassApplication:
		return fmt.Sprintf("[APPLICATION %d]", e.tag)
	}
	return fmt.Sprintf("[PRIVATE %d]", e.tag)
}

// berHeader reads an identifier and length (X.690 sections 8.1.2 and 8.1.3).
// length is -1 for the indefinite form.
func berHeader(b []byte) (class, tag int, constructed bool, length, headerLen int, err error) {
	if len(b) < 2 {
		return 0, 0, false, 0, 0, malformed("truncated element header")
	}
	class = int(b[0] >> 6)
	constructed = b[0]&0x20 != 0
	tag = int(b[0] & 0x1f)
	i := 1
	if tag == 0x1f {
		// High tag number form: base 128, at least one octet, no leading
		// zero bits (X.690 section 8.1.2.4.2).
		tag = 0
		for {
			if i >= len(b) {
				return 0, 0, false, 0, 0, malformed("truncated element tag")
			}
			c := b[i]
			i++
			if tag == 0 && c == 0x80 {
				return 0, 0, false, 0, 0, malformed("tag number with a leading zero octet")
			}
			if tag >= 1<<21 {
				return 0, 0, false, 0, 0, malformed("tag number too large")
			}
			tag = tag<<7 | int(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
		if tag < 0x1f {
			return 0, 0, false, 0, 0, malformed("tag number %d in the high tag form", tag)
		}
	}
	if i >= len(b) {
		return 0, 0, false, 0, 0, malformed("truncated element length")
	}
	c := b[i]
	i++
	switch {
	case c < 0x80:
		length = int(c)
	case c == 0x80:
		if !constructed {
			return 0, 0, false, 0, 0, malformed("indefinite length on a primitive element")
		}
		length = -1
	case c == 0xff:
		return 0, 0, false, 0, 0, malformed("reserved length octet 0xff")
	default:
		// Long form. BER allows leading zero octets; DER does not, but
		// being lenient here costs nothing.
		n := int(c & 0x7f)
		if i+n > len(b) {
			return 0, 0, false, 0, 0, malformed("truncated element length")
		}
		for _, d := range b[i : i+n] {
			if length > (1<<31-1)>>8 {
				return 0, 0, false, 0, 0, malformed("element length too large")
			}
			length = length<<8 | int(d)
		}
		i += n
	}
	return class, tag, constructed, length, i, nil
}

// parseBER reads the element at the start of b and returns it and the bytes
// after it. depth is the nesting level of the element, for maxBERDepth.
func parseBER(b []byte, depth int) (e berElement, rest []byte, err error) {
	if depth > maxBERDepth {
		return e, nil, malformed("elements nested more than %d deep", maxBERDepth)
	}
	class, tag, constructed, length, h, err := berHeader(b)
	if err != nil {
		return e, nil, err
	}
	e.class, e.tag, e.constructed = class, tag, constructed
	if length >= 0 {
		if length > len(b)-h {
			return e, nil, malformed("truncated: %s claims %d bytes, %d remain", e.describe(), length, len(b)-h)
		}
		e.full = b[:h+length]
		e.content = b[h : h+length]
		return e, b[h+length:], nil
	}
	// Indefinite length (X.690 section 8.1.3.6): children up to the
	// end-of-contents octets 00 00.
	e.indefinite = true
	p := b[h:]
	for {
		if len(p) >= 2 && p[0] == 0 && p[1] == 0 {
			n := len(b) - len(p)
			e.content = b[h:n]
			e.full = b[:n+2]
			return e, b[n+2:], nil
		}
		if len(p) == 0 {
			return e, nil, malformed("truncated: %s of indefinite length has no end-of-contents", e.describe())
		}
		_, p, err = parseBER(p, depth+1)
		if err != nil {
			return e, nil, err
		}
	}
}

// berChildren returns the children of a constructed element.
func berChildren(e berElement, depth int) ([]berElement, error) {
	if !e.constructed {
		return nil, malformed("%s is primitive, want constructed", e.describe())
	}
	var out []berElement
	p := e.content
	for len(p) > 0 {
		c, rest, err := parseBER(p, depth+1)
		if err != nil {
			return nil, err
		}
		if c.is(asn1.ClassUniversal, 0) {
			return nil, malformed("unexpected end-of-contents inside %s", e.describe())
		}
		out = append(out, c)
		p = rest
	}
	return out, nil
}

// parseContentInfo reads the ContentInfo (RFC 5652 section 3) at the
// start of b: its content type, and its content, the one SEQUENCE inside
// [0] EXPLICIT. Only zero bytes may follow it, and only when zeroPadding
// is set.
func parseContentInfo(b []byte, zeroPadding bool) (asn1.ObjectIdentifier, berElement, error) {
	ci, rest, err := parseBER(b, 0)
	if err != nil {
		return nil, berElement{}, err
	}
	if zeroPadding {
		rest = bytes.Trim(rest, "\x00")
	}
	if len(rest) != 0 {
		return nil, berElement{}, malformed("%d bytes of trailing data after the ContentInfo", len(rest))
	}
	if !ci.is(asn1.ClassUniversal, asn1.TagSequence) || !ci.constructed {
		return nil, berElement{}, malformed("ContentInfo is %s, want SEQUENCE", ci.describe())
	}
	fields, err := berChildren(ci, 0)
	if err != nil {
		return nil, berElement{}, err
	}
	if len(fields) != 2 {
		return nil, berElement{}, malformed("ContentInfo has %d fields, want 2", len(fields))
	}
	var contentType asn1.ObjectIdentifier
	if err := unmarshalBER(fields[0].full, &contentType, "ContentInfo content type"); err != nil {
		return nil, berElement{}, err
	}
	if !fields[1].is(asn1.ClassContextSpecific, 0) || !fields[1].constructed {
		return nil, berElement{}, malformed("ContentInfo content is %s, want [0] EXPLICIT", fields[1].describe())
	}
	inner, err := berChildren(fields[1], 1)
	if err != nil {
		return nil, berElement{}, err
	}
	if len(inner) != 1 || !inner[0].is(asn1.ClassUniversal, asn1.TagSequence) || !inner[0].constructed {
		return nil, berElement{}, malformed("ContentInfo content is not one SEQUENCE")
	}
	return contentType, inner[0], nil
}

// takeField takes the first of fields when it has class and tag: how the
// parsers read a SEQUENCE whose optional fields are told by their tags.
func takeField(fields *[]berElement, class, tag int) (berElement, bool) {
	if len(*fields) > 0 && (*fields)[0].is(class, tag) {
		f := (*fields)[0]
		*fields = (*fields)[1:]
		return f, true
	}
	return berElement{}, false
}

// isStringTag reports whether a universal tag is a string type, whose
// constructed BER form is a sequence of segments (X.690 section 8.21,
// 8.6 for BIT STRING, 8.7 for OCTET STRING).
func isStringTag(tag int) bool {
	// Universal tags that encoding/asn1 has no constants for.
	const (
		tagObjectDescriptor = 7
		tagVideotexString   = 21
		tagGraphicString    = 25
		tagVisibleString    = 26
		tagUniversalString  = 28
	)
	switch tag {
	case asn1.TagBitString, asn1.TagOctetString, tagObjectDescriptor, asn1.TagUTF8String,
		asn1.TagNumericString, asn1.TagPrintableString, asn1.TagT61String, tagVideotexString,
		asn1.TagIA5String, asn1.TagUTCTime, asn1.TagGeneralizedTime, tagGraphicString,
		tagVisibleString, asn1.TagGeneralString, tagUniversalString, asn1.TagBMPString:
		return true
	}
	return false
}

// appendDERHeader appends an identifier and a minimal definite length.
func appendDERHeader(dst []byte, class, tag int, constructed bool, length int) []byte {
	return appendDERLength(appendIdentifier(dst, class, tag, constructed), length)
}

// appendIdentifier appends identifier octets (X.690 section 8.1.2), in the
// high tag number form for tags of 31 and more.
func appendIdentifier(dst []byte, class, tag int, constructed bool) []byte {
	b := byte(class<<6) & 0xc0
	if constructed {
		b |= 0x20
	}
	if tag < 0x1f {
		return append(dst, b|byte(tag))
	}
	dst = append(dst, b|0x1f)
	n := 1
	for t := tag >> 7; t > 0; t >>= 7 {
		n++
	}
	for i := n - 1; i >= 0; i-- {
		c := byte(tag>>(7*i)) & 0x7f
		if i > 0 {
			c |= 0x80
		}
		dst = append(dst, c)
	}
	return dst
}

// appendDERLength appends a minimal definite length (X.690 section 10.1).
func appendDERLength(dst []byte, length int) []byte {
	if length < 0x80 {
		return append(dst, byte(length))
	}
	n := 0
	for l := length; l > 0; l >>= 8 {
		n++
	}
	dst = append(dst, 0x80|byte(n))
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(length>>(8*i)))
	}
	return dst
}

// derHeaderLen is the size of a header with a one-octet tag and the given length.
func derHeaderLen(length int) int {
	if length < 0x80 {
		return 2
	}
	n := 2
	for l := length; l > 0; l >>= 8 {
		n++
	}
	return n
}

// toDER rewrites one BER element, the whole of b, as DER: definite minimal
// lengths, primitive encodings of constructed universal strings, BOOLEAN true
// as 0xff. Constructed elements with context-specific, application or private
// tags stay constructed, because the tag alone does not say whether they are
// IMPLICIT strings. SET OF elements are not re-sorted; encoding/asn1 does not
// check their order. toDER copies; use it for small elements only.
func toDER(b []byte) ([]byte, error) {
	e, rest, err := parseBER(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("%d bytes of trailing data after %s", len(rest), e.describe())
	}
	return appendDER(make([]byte, 0, len(b)), e, 0)
}

func appendDER(dst []byte, e berElement, depth int) ([]byte, error) {
	if !e.constructed {
		content := e.content
		if e.is(asn1.ClassUniversal, asn1.TagBoolean) && len(content) == 1 && content[0] != 0 {
			content = []byte{0xff}
		}
		dst = appendDERHeader(dst, e.class, e.tag, false, len(content))
		return append(dst, content...), nil
	}
	if e.class == asn1.ClassUniversal && isStringTag(e.tag) {
		s, err := joinSegments(e, e.tag, depth)
		if err != nil {
			return nil, err
		}
		dst = appendDERHeader(dst, e.class, e.tag, false, len(s))
		return append(dst, s...), nil
	}
	children, err := berChildren(e, depth)
	if err != nil {
		return nil, err
	}
	var inner []byte
	for _, c := range children {
		inner, err = appendDER(inner, c, depth+1)
		if err != nil {
			return nil, err
		}
	}
	dst = appendDERHeader(dst, e.class, e.tag, true, len(inner))
	return append(dst, inner...), nil
}

// joinSegments returns the value of a constructed string: the concatenated
// contents of its primitive segments (X.690 section 8.21.6), each of which has
// the universal tag of the string type, tag, and may itself be constructed.
// e itself may have another tag when it is an IMPLICIT string. For a BIT
// STRING each segment starts with its count of unused bits, and only the last
// one may have unused bits (X.690 section 8.6.4).
func joinSegments(e berElement, tag int, depth int) ([]byte, error) {
	bits := tag == asn1.TagBitString
	var out []byte
	if bits {
		out = []byte{0}
	}
	var walk func(e berElement, depth int) error
	walk = func(e berElement, depth int) error {
		children, err := berChildren(e, depth)
		if err != nil {
			return err
		}
		for _, c := range children {
			if !c.is(asn1.ClassUniversal, tag) {
				return malformed("segment of a constructed string has %s, want universal tag %d", c.describe(), tag)
			}
			if c.constructed {
				if err := walk(c, depth+1); err != nil {
					return err
				}
				continue
			}
			if !bits {
				out = append(out, c.content...)
				continue
			}
			if len(c.content) == 0 {
				return malformed("empty BIT STRING segment")
			}
			if out[0] != 0 {
				return malformed("BIT STRING segment with unused bits before the last segment")
			}
			if unused := c.content[0]; unused > 7 || (len(c.content) == 1 && unused != 0) {
				return malformed("BIT STRING segment with %d unused bits", unused)
			}
			out[0] = c.content[0]
			out = append(out, c.content[1:]...)
		}
		return nil
	}
	if err := walk(e, depth); err != nil {
		return nil, err
	}
	return out, nil
}

// unmarshalBER decodes one BER element, the whole of b, into v with
// encoding/asn1 after rewriting it as DER.
func unmarshalBER(b []byte, v any, what string) error {
	d, err := toDER(b)
	if err != nil {
		return inField(what, err)
	}
	rest, err := asn1.Unmarshal(d, v)
	if err != nil {
		return malformed("%s: %v", what, err)
	}
	if len(rest) != 0 {
		return malformed("%s: trailing data", what)
	}
	return nil
}

// compactOctets returns the value of an OCTET STRING element given in BER,
// primitive or constructed from segments (X.690 section 8.7.3). A primitive
// value is returned as is. The segments of a constructed one are moved
// together to the start of e.full, overwriting its headers; the result is a
// prefix of e.full, shorter than e.full by at least two bytes. No copy of the
// value is made, so this suits the large encryptedContent field.
//
// tag is the expected tag of the segments: the universal OCTET STRING tag.
// The element itself may carry any tag (encryptedContent is [0] IMPLICIT).
func compactOctets(e berElement, depth int) ([]byte, error) {
	if !e.constructed {
		return e.content, nil
	}
	dst := e.full
	n := 0
	// Reads stay ahead of writes: every segment's content is preceded by
	// at least its own two header bytes and the outer header, so the
	// write position n is always before the segment being read, and
	// copy handles the overlap.
	var walk func(p []byte, depth int) error
	walk = func(p []byte, depth int) error {
		for len(p) > 0 {
			c, rest, err := parseBER(p, depth)
			if err != nil {
				return err
			}
			if !c.is(asn1.ClassUniversal, asn1.TagOctetString) {
				return malformed("segment of a constructed OCTET STRING has %s", c.describe())
			}
			if c.constructed {
				if err := walk(c.content, depth+1); err != nil {
					return err
				}
			} else {
				n += copy(dst[n:], c.content)
			}
			p = rest
		}
		return nil
	}
	if err := walk(e.content, depth+1); err != nil {
		return nil, err
	}
	return dst[:n], nil
}
