package smtp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/store"
)

func tcheck(t testing.TB, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

// waitFor polls cond until it holds; the bound only keeps a broken test
// from hanging, it asserts nothing about speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger logs to a buffer, and to the test output when -v.
func testLogger(t testing.TB) (*slog.Logger, *testbuf.Buffer) {
	buf := &testbuf.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// waitLog waits for a log line containing all the parts.
func waitLog(t testing.TB, buf *testbuf.Buffer, parts ...string) {
	t.Helper()
	waitFor(t, "log line with "+strings.Join(parts, ", "), func() bool {
		for _, line := range strings.Split(buf.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		return false
	})
}

// testTLS makes a self-signed certificate for localhost and 127.0.0.1 and
// returns a server configuration and a pool that trusts it.
func testTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tcheck(t, err, "generate key")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost", "mx.route.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	tcheck(t, err, "create certificate")
	cert, err := x509.ParseCertificate(der)
	tcheck(t, err, "parse certificate")
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}, pool
}

// testStore opens a store in a temporary directory with the local domain
// a.example and the address alice@a.example (password "alice-password")
// and bob@a.example.
func testStore(t testing.TB) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	tcheck(t, err, "open store")
	t.Cleanup(func() { st.Close() })
	_, err = st.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	for _, a := range []string{"alice@a.example", "bob@a.example"} {
		_, err = st.AddAddress(ctx, a)
		tcheck(t, err, "add address")
	}
	tcheck(t, st.SetPassword(ctx, "alice@a.example", "alice-password"), "set password")
	return st
}

// received is a message a test handler got.
type received struct {
	env Envelope
	msg []byte
}

// recorder is a handler that records messages and answers with reply.
type recorder struct {
	mu    sync.Mutex
	msgs  []received
	reply func(env Envelope, msg []byte) (*Reply, error)
}

func (r *recorder) handle(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
	r.mu.Lock()
	r.msgs = append(r.msgs, received{env, append([]byte(nil), msg...)})
	f := r.reply
	r.mu.Unlock()
	if f != nil {
		return f(env, msg)
	}
	return nil, nil
}

func (r *recorder) Inbound(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
	return r.handle(ctx, env, msg)
}

func (r *recorder) Outbound(ctx context.Context, env Envelope, msg []byte) (*Reply, error) {
	return r.handle(ctx, env, msg)
}

func (r *recorder) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.msgs...)
}

// anyLocal accepts every recipient in a.example and refuses others, like
// LocalRecipients without a store.
type anyLocal struct{}

func (anyLocal) CheckRecipient(ctx context.Context, rcpt string) *Reply {
	if strings.HasSuffix(strings.ToLower(rcpt), "@a.example") {
		return nil
	}
	return errorf(554, "5.7.1", "Relay access denied")
}

// serve runs a server on a loopback listener until the test ends and
// returns its address.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	tcheck(t, err, "listen")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return l.Addr().String()
}

// runPython runs a Python script with arguments and returns its output.
func runPython(t testing.TB, script string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	path := filepath.Join(t.TempDir(), "client.py")
	tcheck(t, os.WriteFile(path, []byte(script), 0o600), "write script")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", append([]string{path}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return string(out)
}
