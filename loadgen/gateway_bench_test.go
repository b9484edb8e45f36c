package loadgen

import (
	"context"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/pgtest"
	"github.com/hisp-project/hisp/internal/testbuf"
	"github.com/hisp-project/hisp/internal/testnet"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
)

// BenchmarkGateway runs hisp's gateway in this process and `hisp bench`'s
// load against it, b.N messages from 16 clients, so that
//
//	go test -run '^$' -bench Gateway -benchtime 2000x -cpuprofile cpu.out ./loadgen/
//
// profiles the server side of the load (the clients' share shows apart,
// under package loadgen and go-smtp's client). "queue": the recipient is
// remote, its certificate published by a test DNS server, its route a
// closed port: every delivery fails at once and waits for its retry, so the
// figure is submission to the durable queue. "local": the recipient is a
// local user, so local delivery (open, verify, file) runs alongside.
// "queue-postgres": "queue" with the store in a PostgreSQL database of
// pgtest's server (skipped without one), to profile what a PostgreSQL
// store costs hisp's process.
func BenchmarkGateway(b *testing.B) {
	for _, mode := range []string{"queue", "local", "queue-postgres"} {
		for _, size := range []int{10 << 10, 1 << 20} {
			b.Run(mode+"/"+sizeName(size), func(b *testing.B) { benchGateway(b, mode, size) })
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MB"
	}
	return strconv.Itoa(n>>10) + "KB"
}

func benchGateway(b *testing.B, mode string, size int) {
	ctx := context.Background()
	dir := b.TempDir()
	const password = "bench password 1"
	caA := testpki.NewCA(b, "CA of hospital.example")
	caB := testpki.NewCA(b, "CA of clinic.example")
	alice := testpki.Issue(b, caA, testpki.Options{Email: []string{"alice@hospital.example"}})
	bob := testpki.Issue(b, caB, testpki.Options{Email: []string{"bob@clinic.example"}})
	carol := testpki.Issue(b, caA, testpki.Options{Email: []string{"carol@hospital.example"}})

	loc := store.Location{Dir: dir}
	if mode == "queue-postgres" {
		loc.URL = pgtest.URL(b)
	}
	st, err := store.OpenAt(ctx, loc)
	if err != nil {
		b.Fatal(err)
	}
	check := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	_, err = st.AddDomain(ctx, "hospital.example")
	check(err)
	for _, u := range []struct {
		addr string
		id   *testpki.Identity
	}{{"alice@hospital.example", alice}, {"carol@hospital.example", carol}} {
		_, err = st.AddAddress(ctx, u.addr)
		check(err)
		check(st.SetPassword(ctx, u.addr, password))
		_, err = st.AddCertificate(ctx, u.addr, u.id.Cert, nil, u.id.Key)
		check(err)
	}
	for _, ca := range []*testpki.Identity{caA, caB} {
		_, err = st.AddAnchor(ctx, "hospital.example", ca.Cert, store.DirectionBoth)
		check(err)
	}
	check(st.Close())

	// clinic.example's DNS, publishing bob's certificate.
	pc, l := testnet.ListenDNS(b)
	dctx, dcancel := context.WithCancel(ctx)
	ddone := make(chan struct{})
	go func() {
		defer close(ddone)
		certs.NewPublisher(staticCerts{"bob.clinic.example": bob.Cert.Raw}, certs.PublisherOptions{}).Serve(dctx, pc, l)
	}()
	defer func() { dcancel(); <-ddone }()
	// A closed port: the route to clinic.example.
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	closed := cl.Addr().String()
	cl.Close()

	cfg := config.Default()
	cfg.Data = dir
	cfg.Store.URL = loc.URL
	cfg.Listen = config.Listen{Submission: "127.0.0.1:0"}
	cfg.DNS.Resolver = pc.LocalAddr().String()
	cfg.Outbound.Routes = config.Routes(map[string]string{"clinic.example": closed})
	cfg.Outbound.RetryFirst = config.Duration{Duration: time.Hour}
	cfg.Outbound.RetryMax = config.Duration{Duration: time.Hour}
	gctx, gcancel := context.WithCancel(ctx)
	var out testbuf.Buffer
	gdone := make(chan error, 1)
	go func() { gdone <- gateway.Run(gctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), &out) }()
	defer func() {
		gcancel()
		if err := <-gdone; err != nil {
			b.Error(err)
		}
	}()
	re := regexp.MustCompile(`submission \(.*\): (\S+)`)
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil && strings.Contains(out.String(), "hisp ready") {
			addr = m[1]
		}
	}
	if addr == "" {
		b.Fatalf("gateway did not start:\n%s", out.String())
	}

	to := "bob@clinic.example"
	if mode == "local" {
		to = "carol@hospital.example"
	}
	rate, _, err := rsaSign(ctx, time.Second)
	check(err)
	seals, err := SealRate(ctx, time.Second, size)
	check(err)
	b.ResetTimer()
	r, err := Run(ctx, Options{Addr: addr, User: "alice@hospital.example", Password: password, To: []string{to},
		Concurrency: 16, Messages: b.N, Size: size, Reuse: true, NoCeiling: true})
	b.StopTimer()
	check(err)
	if r.Failed > 0 {
		b.Fatalf("%d failed: %s", r.Failed, r.FirstError)
	}
	b.ReportMetric(r.PerSecond, "msgs/s")
	b.ReportMetric(r.PerSecond/rate, "ratio")
	b.ReportMetric(r.PerSecond/seals, "seal-ratio")
	b.ReportMetric(float64(r.P50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(r.P99.Microseconds())/1000, "p99-ms")
}

// staticCerts publishes fixed certificates by DNS name.
type staticCerts map[string][]byte

func (s staticCerts) Domains(context.Context) ([]string, error) {
	return []string{"clinic.example"}, nil
}
func (s staticCerts) Certificates(_ context.Context, name string) ([][]byte, error) {
	if c, ok := s[name]; ok {
		return [][]byte{c}, nil
	}
	return nil, nil
}
