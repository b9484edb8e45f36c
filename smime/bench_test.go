package smime

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/smime/cms"
)

var benchSizes = []struct {
	name string
	size int
}{{"10KB", 10 << 10}, {"1MB", 1 << 20}, {"25MB", 25 << 20}}

// benchMessage returns a message of about size bytes: headers and a body of
// 76-character lines, like a base64 attachment.
func benchMessage(size int) []byte {
	var b strings.Builder
	b.Grow(size + 200)
	b.WriteString("From: alice@hospital.example\r\nTo: bob@clinic.example\r\nSubject: bench\r\n" +
		"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@hospital.example>\r\n\r\n")
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx", 2)[:76] + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// BenchmarkSeal: wrap, sign (RSA-2048, SHA-256), encrypt (AES-128-CBC,
// OAEP-SHA256) to one recipient. Compare with BenchmarkRSABaseline/seal.
func BenchmarkSeal(b *testing.B) {
	p := getPKI(b)
	signer := Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}
	recips := []cms.Recipient{{Cert: p.r1.Cert}}
	for _, s := range benchSizes {
		msg := benchMessage(s.size)
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := Seal(msg, signer, recips, SealOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen: decrypt, verify, unwrap. Compare with
// BenchmarkRSABaseline/open; B/op over the message size bounds the peak heap.
func BenchmarkOpen(b *testing.B) {
	p := getPKI(b)
	signer := Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}
	keys := p.keys(p.r1)
	for _, s := range benchSizes {
		msg := benchMessage(s.size)
		sealed, err := Seal(msg, signer, []cms.Recipient{{Cert: p.r1.Cert}}, SealOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			// Bound the peak heap once, outside the timed loop: with the
			// collector off, heap growth is everything Open allocates.
			peak := heapGrowth(func() {
				if _, err := Open(sealed, keys); err != nil {
					b.Fatal(err)
				}
			})
			for b.Loop() {
				if _, err := Open(sealed, keys); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(peak)/float64(len(msg)), "peakheap/msgsize")
		})
	}
}

// BenchmarkRSABaseline measures the raw RSA-2048 operations one message
// needs: to seal, one PKCS#1 v1.5 SHA-256 signature and one OAEP-SHA256
// encryption of a content key; to open, one OAEP decryption and one
// signature verification. Seal and open of a small message are judged
// against these.
func BenchmarkRSABaseline(b *testing.B) {
	p := getPKI(b)
	signKey := p.rsaSigner.Key.(*rsa.PrivateKey)
	recipKey := p.r1.Key.(*rsa.PrivateKey)
	digest := sha256.Sum256([]byte("signed attributes"))
	cek := make([]byte, 16)
	sig, _ := rsa.SignPKCS1v15(rand.Reader, signKey, crypto.SHA256, digest[:])
	wrapped, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &recipKey.PublicKey, cek, nil)
	b.Run("seal", func(b *testing.B) {
		for b.Loop() {
			if _, err := rsa.SignPKCS1v15(rand.Reader, signKey, crypto.SHA256, digest[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &recipKey.PublicKey, cek, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			if _, err := rsa.DecryptOAEP(sha256.New(), nil, recipKey, wrapped, nil); err != nil {
				b.Fatal(err)
			}
			if err := rsa.VerifyPKCS1v15(&signKey.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// heapGrowth returns the bytes f allocates with the collector off: an upper
// bound of the live heap f needs at its peak.
func heapGrowth(f func()) uint64 {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
