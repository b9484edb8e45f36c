package loadgen

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// sink is an SMTP server that counts what it accepts.
type sink struct{ msgs atomic.Int64 }

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

type sinkSession struct{ s *sink }

func (*sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (*sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user == "alice@hospital.example" && pass == "secret pw" {
			return nil
		}
		return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad"}
	}), nil
}
func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.s.msgs.Add(1)
	return nil
}
func (*sinkSession) Reset()        {}
func (*sinkSession) Logout() error { return nil }

func TestRun(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &sink{}
	srv := smtp.NewServer(be)
	srv.Domain = "sink.localhost"
	srv.AllowInsecureAuth = true
	go srv.Serve(l)
	defer srv.Close()

	for _, reuse := range []bool{false, true} {
		before := be.msgs.Load()
		r, err := Run(context.Background(), Options{Addr: l.Addr().String(), User: "alice@hospital.example", Password: "secret pw",
			To: []string{"bob@clinic.example"}, Concurrency: 4, Messages: 40, Size: 4096, Reuse: reuse, CeilingTime: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if r.Messages != 40 || r.Failed != 0 || be.msgs.Load()-before != 40 {
			t.Fatalf("reuse=%v: %+v, sink got %d", reuse, r, be.msgs.Load()-before)
		}
		if r.RSASignPerSecond <= 0 || r.Ratio <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Fatalf("report: %+v", r)
		}
		if !strings.Contains(r.String(), "of the RSA ceiling") {
			t.Fatal(r.String())
		}
	}
	r, err := Run(context.Background(), Options{Addr: l.Addr().String(), User: "alice@hospital.example", Password: "wrong",
		To: []string{"bob@clinic.example"}, Concurrency: 2, Messages: 4, CeilingTime: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed != 4 || !strings.Contains(r.FirstError, "535") {
		t.Fatalf("bad password: %+v", r)
	}
}
