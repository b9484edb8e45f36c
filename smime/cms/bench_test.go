package cms

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"testing"
)

func BenchmarkDecrypt(b *testing.B) {
	f := getFixture(b)
	keys := []KeyPair{f.r2048.keyPair()}
	for _, size := range []int{10 << 10, 1 << 20, 25 << 20} {
		b.Run(fmt.Sprintf("%s/aes128-cbc/rsa-oaep-sha256", sizeName(size)), func(b *testing.B) {
			content := testContent(size)
			der, err := Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.r2048.cert, KeyTransport: RSAOAEPSHA256}})
			if err != nil {
				b.Fatal(err)
			}
			// Decrypt works in place, so each round starts from a fresh
			// copy, in a buffer allocated once.
			buf := make([]byte, len(der))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, der)
				if _, err := Decrypt(buf, keys); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncrypt(b *testing.B) {
	f := getFixture(b)
	for _, size := range []int{10 << 10, 1 << 20, 25 << 20} {
		b.Run(fmt.Sprintf("%s/aes128-cbc/rsa-oaep-sha256", sizeName(size)), func(b *testing.B) {
			content := testContent(size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Encrypt(rand.Reader, content, AES128CBC, []Recipient{{Cert: f.r2048.cert}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

// allocated returns the bytes allocated on the heap while fn runs.
// TotalAlloc only grows, so it bounds the growth of the heap from above
// whatever the garbage collector does meanwhile.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMemory checks that a 25 MB message decrypts in place, DER or chunked
// BER, without copies of its content, and that Encrypt makes one copy (the
// output). The bounds are loose on purpose: they catch an extra copy of the
// content, not small changes.
func TestMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("25 MB messages")
	}
	f := getFixture(t)
	keys := []KeyPair{f.r2048.keyPair()}
	const size = 25 << 20
	content := testContent(size)
	for _, c := range []ContentCipher{AES128CBC, AES256GCM} {
		var der []byte
		enc := allocated(func() {
			var err error
			der, err = Encrypt(rand.Reader, content, c, []Recipient{{Cert: f.r2048.cert}, {Cert: f.r3072.cert}})
			if err != nil {
				t.Fatal(err)
			}
		})
		if enc > size*5/4 {
			t.Errorf("%v: Encrypt allocated %d bytes for %d bytes of content", c, enc, size)
		}
		ber := berify(t, der, mrand.New(mrand.NewPCG(8, 9)), true, 2)
		for name, msg := range map[string][]byte{"DER": der, "BER": ber} {
			var got *Decrypted
			dec := allocated(func() {
				var err error
				got, err = Decrypt(msg, keys)
				if err != nil {
					t.Fatal(err)
				}
			})
			if !bytes.Equal(got.Content, content) {
				t.Fatalf("%v %s: content differs", c, name)
			}
			if dec > size/4 {
				t.Errorf("%v %s: Decrypt allocated %d bytes for %d bytes of content", c, name, dec, size)
			}
			t.Logf("%v %s: Encrypt allocated %d bytes, Decrypt %d bytes", c, name, enc, dec)
		}
	}
}
