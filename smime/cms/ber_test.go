package cms

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"testing"
)

// berify rewrites a DER element as legal but unusual BER: constructed
// elements get indefinite lengths, primitive ones non-minimal long-form
// lengths, and OCTET STRINGs are cut into nested constructed segments. With
// chunkImplicit, primitive [0] elements (IMPLICIT OCTET STRINGs in CMS) are
// cut too. Segments nest up to maxNest levels.
func berify(t testing.TB, der []byte, rng *mrand.Rand, chunkImplicit bool, maxNest int) []byte {
	t.Helper()
	e, rest, err := parseBER(der, 0)
	if err != nil || len(rest) != 0 {
		t.Fatalf("berify: %v", err)
	}
	return appendBERified(t, nil, e, rng, chunkImplicit, maxNest)
}

func appendBERified(t testing.TB, dst []byte, e berElement, rng *mrand.Rand, chunkImplicit bool, maxNest int) []byte {
	if e.constructed {
		dst = appendIdentifier(dst, e.class, e.tag, true)
		dst = append(dst, 0x80)
		children, err := berChildren(e, 0)
		if err != nil {
			t.Fatalf("berify: %v", err)
		}
		for _, c := range children {
			dst = appendBERified(t, dst, c, rng, chunkImplicit, maxNest)
		}
		return append(dst, 0, 0)
	}
	if e.is(asn1.ClassUniversal, asn1.TagOctetString) || (chunkImplicit && e.is(asn1.ClassContextSpecific, 0)) {
		if len(e.content) > 0 && rng.IntN(4) != 0 {
			dst = appendIdentifier(dst, e.class, e.tag, true)
			dst = append(dst, 0x80)
			dst = appendSegmentsBER(dst, e.content, rng, maxNest)
			return append(dst, 0, 0)
		}
	}
	dst = appendIdentifier(dst, e.class, e.tag, false)
	dst = appendLongLength(dst, len(e.content), rng)
	return append(dst, e.content...)
}

// appendSegmentsBER writes content as OCTET STRING segments, some of them
// constructed again, up to maxNest levels.
func appendSegmentsBER(dst, content []byte, rng *mrand.Rand, maxNest int) []byte {
	for len(content) > 0 {
		n := 1 + rng.IntN(min(len(content), 5000))
		seg := content[:n]
		content = content[n:]
		if maxNest > 0 && rng.IntN(5) == 0 {
			dst = append(dst, 0x24)
			if rng.IntN(2) == 0 {
				dst = append(dst, 0x80)
				dst = appendSegmentsBER(dst, seg, rng, maxNest-1)
				dst = append(dst, 0, 0)
			} else {
				inner := appendSegmentsBER(nil, seg, rng, maxNest-1)
				dst = appendLongLength(dst, len(inner), rng)
				dst = append(dst, inner...)
			}
			continue
		}
		dst = append(dst, 0x04)
		dst = appendLongLength(dst, len(seg), rng)
		dst = append(dst, seg...)
	}
	return dst
}

// appendLongLength writes a length, sometimes in a long form with leading
// zero octets (BER allows it, DER does not).
func appendLongLength(dst []byte, n int, rng *mrand.Rand) []byte {
	if rng.IntN(2) == 0 {
		return appendDERLength(dst, n)
	}
	return append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// TestDecryptBER decrypts our own messages rewritten in many BER forms.
func TestDecryptBER(t *testing.T) {
	f := getFixture(t)
	rng := mrand.New(mrand.NewPCG(1, 2))
	for _, c := range allCiphers {
		for _, size := range []int{0, 1, 100, 20000} {
			content := testContent(size)
			der, err := Encrypt(rand.Reader, content, c, []Recipient{{Cert: f.r2048.cert}, {Cert: f.r3072.cert, UseSKI: true}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 8 {
				ber := berify(t, der, rng, true, 3)
				if bytes.Equal(ber, der) {
					continue
				}
				for _, p := range []*party{f.r2048, f.r3072} {
					got, err := Decrypt(ber, []KeyPair{p.keyPair()})
					if err != nil {
						t.Fatalf("%v, %d bytes, variant %d, %s: %v\n%s", c, size, i, p.name, err, hex.EncodeToString(ber[:min(len(ber), 200)]))
					}
					if !bytes.Equal(got.Content, content) {
						t.Fatalf("%v, %d bytes, variant %d: content differs", c, size, i)
					}
					ber = berify(t, der, rng, true, 3) // Decrypt overwrote it
				}
			}
		}
	}
}

func TestToDER(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Already DER.
		{"0500", "0500"},
		{"3003020101", "3003020101"},
		// Indefinite SEQUENCE.
		{"30800201010000", "3003020101"},
		// Non-minimal long-form length.
		{"30840000000302010a", "300302010a"},
		// Constructed OCTET STRING, nested, indefinite.
		{"2480040161248004016204016300000000", "0403616263"},
		{"24800401612406040162040163" + "0000", "0403616263"},
		{"24800401610000", "040161"},
		// Empty constructed OCTET STRING.
		{"2400", "0400"},
		// Constructed BIT STRING: unused bits only in the last segment.
		{"2380030200ff03020780" + "0000", "030307ff80"},
		// BOOLEAN true in BER.
		{"010101", "0101ff"},
		// Context-specific constructed stays constructed.
		{"a0800401610000", "a003040161"},
		// High tag number.
		{"9f2101ff", "9f2101ff"},
		{"bf818001800000", "bf81800100"},
	} {
		in, _ := hex.DecodeString(tc.in)
		got, err := toDER(in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("%s: got %x, want %s", tc.in, got, tc.want)
		}
	}
}

func TestToDERErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"30",                          // no length
		"3005020101",                  // short
		"308002010100",                // missing end-of-contents
		"0480",                        // indefinite primitive
		"04ff",                        // reserved length
		"1f05",                        // low tag number in high tag form
		"1f8005",                      // leading zero in the tag number
		"1f",                          // truncated tag
		"9f81",                        // truncated tag
		"0485000000000000",            // length too long
		"2403020100",                  // BIT STRING segment in an OCTET STRING
		"23020300",                    // empty BIT STRING segment
		"238003020101030100" + "0000", // unused bits before the last segment
		"3003020101ff",                // trailing data
		"30030000",                    // end-of-contents inside a definite length
		"2380030109" + "0000",         // 9 unused bits
		"30800000" + "00",             // trailing data after indefinite
		strings.Repeat("3080", 70) + "0500" + strings.Repeat("0000", 70), // too deep
	} {
		b, err := hex.DecodeString(in)
		if err != nil {
			t.Fatalf("bad test input %q", in)
		}
		if _, err := toDER(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", in, err)
		}
	}
}

// TestCompactOctets checks the in-place gathering of segments.
func TestCompactOctets(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	for range 200 {
		content := make([]byte, rng.IntN(20000)+1)
		for i := range content {
			content[i] = byte(rng.IntN(256))
		}
		ber := append([]byte{0xa0, 0x80}, appendSegmentsBER(nil, content, rng, 3)...)
		ber = append(ber, 0, 0)
		e, rest, err := parseBER(ber, 0)
		if err != nil || len(rest) != 0 {
			t.Fatal(err)
		}
		got, err := compactOctets(e, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Fatal("content differs")
		}
		if &got[0] != &ber[0] || len(got) > len(ber)-2 {
			t.Fatal("not compacted in place at the start of the element")
		}
	}
	// A segment of the wrong type.
	e, _, _ := parseBER([]byte{0xa0, 0x80, 0x02, 0x01, 0x00, 0, 0}, 0)
	if _, err := compactOctets(e, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("INTEGER segment: got %v", err)
	}
}
