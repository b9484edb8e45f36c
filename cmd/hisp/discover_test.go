package main

import (
	"context"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/internal/testnet"

	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/internal/testpki"
)

// staticCerts publishes fixed certificates for one remote zone.
type staticCerts struct {
	zone  string
	names map[string][][]byte
}

func (s staticCerts) Domains(context.Context) ([]string, error) { return []string{s.zone}, nil }
func (s staticCerts) Certificates(_ context.Context, name string) ([][]byte, error) {
	return s.names[name], nil
}

// startDNS serves src on a loopback port with hisp's own publisher and
// returns its address.
func startDNS(t *testing.T, src certs.CertSource) string {
	t.Helper()
	pc, l := testnet.ListenDNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		certs.NewPublisher(src, certs.PublisherOptions{}).Serve(ctx, pc, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String()
}

func TestDiscoverCommand(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	remoteCA := testpki.NewCA(t, "remote CA")
	otherCA := testpki.NewCA(t, "other CA")
	bob := testpki.Issue(t, remoteCA, testpki.Options{Email: []string{"bob@remote.example"}})
	resolver := startDNS(t, staticCerts{zone: "remote.example", names: map[string][][]byte{
		"bob.remote.example": {bob.Cert.Raw},
	}})
	anchorFile, _ := remoteCA.WriteFiles(t, dir, "remote-ca")
	otherFile, _ := otherCA.WriteFiles(t, dir, "other-ca")
	for _, args := range [][]string{
		{"domain", "add", "local.example", data},
		{"domain", "add", "second.example", data},
		{"anchor", "add", "local.example", anchorFile, "--direction", "out", data},
		{"anchor", "add", "second.example", otherFile, data},
	} {
		if code, _, stderr := runCLI(t, nil, args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}

	code, out, stderr := runCLI(t, nil, "discover", "bob@remote.example", "--resolver", resolver, "--domain", "local.example", data)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"step dns-address", "bob@remote.example", "verdict:   trusted", "result: 1 trusted certificate(s) from step dns-address"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The other local domain does not trust the remote CA: found, not
	// trusted, exit 1.
	code, out, _ = runCLI(t, nil, "discover", "bob@remote.example", "--resolver", resolver, "--domain", "second.example", data)
	if code != 1 || !strings.Contains(out, "NOT trusted") {
		t.Errorf("untrusted: exit %d\n%s", code, out)
	}
	// Nothing published: exit 1.
	code, out, _ = runCLI(t, nil, "discover", "nobody@remote.example", "--resolver", resolver, data)
	if code != 1 || !strings.Contains(out, "result: no") {
		t.Errorf("nothing published: exit %d\n%s", code, out)
	}
	// A local address is answered from the store.
	if code, _, stderr := runCLI(t, nil, "cert", "issue", "alice@local.example", data); code != 0 {
		t.Fatalf("cert issue: %s", stderr)
	}
	code, out, _ = runCLI(t, nil, "discover", "alice@local.example", "--domain", "local.example", data)
	if !strings.Contains(out, "step local") {
		t.Errorf("local address: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, nil, "discover", data); code != 2 {
		t.Errorf("no address: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, nil, "discover", "bob@remote.example", "--domain", "unknown.example", data); code != 1 {
		t.Errorf("unknown local domain: exit %d, want 1", code)
	}
}
