package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/gateway"
)

// sink is an SMTP server that counts what it accepts. With refuse set it
// refuses every third message in DATA, and it keeps the Message-IDs of
// the messages it took.
type sink struct {
	msgs   atomic.Int64
	refuse bool
	mu     sync.Mutex
	ids    map[string]bool
}

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
	b, _ := io.ReadAll(r)
	n := s.s.msgs.Add(1)
	if s.s.refuse && n%3 == 0 {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "refused for the test"}
	}
	if _, rest, ok := strings.Cut(string(b), "Message-ID: "); ok {
		id, _, _ := strings.Cut(rest, "\r\n")
		s.s.mu.Lock()
		if s.s.ids == nil {
			s.s.ids = map[string]bool{}
		}
		s.s.ids[id] = true
		s.s.mu.Unlock()
	}
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
		if want := map[bool]int{true: 4, false: 40}[reuse]; r.Connections != want || r.ConnectMax < r.ConnectP50 || r.ConnectP50 <= 0 {
			t.Fatalf("reuse=%v: %d connections (want %d), setup p50 %s max %s", reuse, r.Connections, want, r.ConnectP50, r.ConnectMax)
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

// TestOnResult: each message's Message-ID and outcome reach OnResult, and
// the ones reported accepted are exactly those the server took.
func TestOnResult(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &sink{refuse: true}
	srv := smtp.NewServer(be)
	srv.Domain = "sink.localhost"
	srv.AllowInsecureAuth = true
	go srv.Serve(l)
	defer srv.Close()

	var mu sync.Mutex
	accepted, refused := map[string]bool{}, 0
	r, err := Run(context.Background(), Options{Addr: l.Addr().String(), User: "alice@hospital.example", Password: "secret pw",
		To: []string{"bob@clinic.example"}, Concurrency: 3, Messages: 30, Size: 1024, Reuse: true, NoCeiling: true,
		OnResult: func(id string, err error) {
			mu.Lock()
			defer mu.Unlock()
			var se *smtp.SMTPError
			switch {
			case err == nil:
				if accepted[id] {
					t.Errorf("%s reported twice", id)
				}
				accepted[id] = true
			case errors.As(err, &se) && se.Code == 554:
				refused++
			default:
				t.Errorf("%s: %v", id, err)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if r.RSASignPerSecond != 0 || r.Ratio != 0 {
		t.Errorf("NoCeiling measured the ceiling: %+v", r)
	}
	if len(accepted) != 20 || refused != 10 || r.Messages != 20 || r.Failed != 10 {
		t.Fatalf("accepted %d, refused %d; report %+v", len(accepted), refused, r)
	}
	for id := range accepted {
		if !strings.HasPrefix(id, "<load-") || !be.ids[id] {
			t.Errorf("accepted %s, not taken by the server", id)
		}
	}
}

// TestSealRate: the seal ceiling seals real Direct messages of the size
// asked for.
func TestSealRate(t *testing.T) {
	rate, err := SealRate(context.Background(), 200*time.Millisecond, 10<<10)
	if err != nil || rate <= 0 {
		t.Fatalf("seal rate %v, %v", rate, err)
	}
}

// TestResumptionAndServerCPU: with a connection per message the clients
// resume their TLS sessions unless told not to, and with a server process
// to watch the report gives its CPU per message in RSA-2048 signatures.
func TestResumptionAndServerCPU(t *testing.T) {
	tlsConfig, err := gateway.LoadTLS("", "", t.TempDir(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(&sink{})
	srv.Domain, srv.TLSConfig, srv.AllowInsecureAuth = "sink.localhost", tlsConfig, true
	go srv.Serve(l)
	defer srv.Close()
	for _, noResume := range []bool{false, true} {
		r, err := Run(context.Background(), Options{Addr: l.Addr().String(), User: "alice@hospital.example", Password: "secret pw",
			To: []string{"bob@clinic.example"}, Concurrency: 2, Messages: 60, Size: 10240, StartTLS: "require",
			NoResume: noResume, ServerPID: os.Getpid(), DBPID: os.Getpid(), CeilingTime: 200 * time.Millisecond})
		if err != nil || r.Failed != 0 {
			t.Fatalf("no-resume=%v: %v, %+v", noResume, err, r)
		}
		if noResume && r.Resumed != 0 || !noResume && r.Resumed < 50 {
			t.Errorf("no-resume=%v: %d of %d connections resumed", noResume, r.Resumed, r.Connections)
		}
		if r.ServerCPUPerMessage <= 0 || r.RSASignCPU <= 0 || !strings.Contains(r.String(), "RSA-2048 signatures") {
			t.Errorf("no server CPU in the report: %+v\n%s", r, r)
		}
		// The "database" here is this process too.
		if r.DBCPUPerMessage <= 0 || !strings.Contains(r.String(), "database CPU:") {
			t.Errorf("no database CPU in the report: %+v\n%s", r, r)
		}
	}
}

// TestProcessTreeCPU: a server's CPU with its children counts a child
// that has exited (PostgreSQL's backends end with their connections).
func TestProcessTreeCPU(t *testing.T) {
	if os.Getenv("LOADGEN_BURN") == "1" {
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		}
		return
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	own0, tree0 := processCPU(os.Getpid()), processTreeCPU(os.Getpid())
	cmd := exec.Command(os.Args[0], "-test.run=^TestProcessTreeCPU$")
	cmd.Env = append(os.Environ(), "LOADGEN_BURN=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	own, tree := processCPU(os.Getpid())-own0, processTreeCPU(os.Getpid())-tree0
	// Ticks are 10 ms: allow two of them.
	if tree-own < child-20*time.Millisecond {
		t.Errorf("tree CPU grew %s, own %s: the exited child's %s is missing", tree, own, child)
	}
}
