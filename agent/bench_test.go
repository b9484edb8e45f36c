package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"
	"time"
)

// BenchmarkOutboundCached is one 10 KB message from a local sender to a
// local recipient with everything cached: the signing key, the recipient's
// certificate and verdict. What remains is one RSA-2048 signature, one
// RSA public-key operation, AES, parsing, and the audit record. Compare
// with BenchmarkRSASign; the rsa-signs/op metric is the ratio.
func BenchmarkOutboundCached(b *testing.B) {
	f := newFixture(b)
	f.agent.reload = DefaultReloadInterval
	body := strings.Repeat("Patient was discharged in good health; follow-up in two weeks.\r\n", 10240/66)
	msg := message("alice@a.example", []string{"bob@b.example"}, nil, "")
	msg = append(msg[:len(msg)-len("Patient was discharged in good health.\r\n")], body...)
	env := Envelope{MailFrom: "alice@a.example", Recipients: []string{"bob@b.example"}}
	ctx := context.Background()
	if _, err := f.agent.Outbound(ctx, env, msg); err != nil {
		b.Fatal(err)
	}
	rsaNs := rsaSignNs(b, f.p.alice.Key.(*rsa.PrivateKey))
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		res, err := f.agent.Outbound(ctx, env, msg)
		if err != nil || res.Sealed == nil {
			b.Fatal(err)
		}
	}
	perOp := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.StopTimer()
	// The RSA time measured before and after the loop, so that a machine
	// whose load changes skews the ratio less.
	rsaNs = (rsaNs + rsaSignNs(b, f.p.alice.Key.(*rsa.PrivateKey))) / 2
	b.ReportMetric(perOp/rsaNs, "rsa-signs/op")
}

// BenchmarkRSASign is one RSA-2048 PKCS #1 v1.5 signature of a SHA-256
// digest: the ceiling of a signing gateway.
func BenchmarkRSASign(b *testing.B) {
	key := testPKI(b).alice.Key.(*rsa.PrivateKey)
	digest := sha256.Sum256([]byte("message"))
	b.ResetTimer()
	for range b.N {
		if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// rsaSignNs measures one RSA signature with key, in nanoseconds.
func rsaSignNs(b *testing.B, key *rsa.PrivateKey) float64 {
	digest := sha256.Sum256([]byte("message"))
	const n = 200
	start := time.Now()
	for range n {
		if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / n
}
