package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/store"
)

// TestServeRefreshesBundles: a trust bundle recorded in the store (as
// `hisp bundle add --no-fetch` leaves it) is fetched by the running
// server, its anchors stored for the domain and its success recorded.
func TestServeRefreshesBundles(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	partner := testpki.NewCA(t, "partner CA")
	dir := t.TempDir()
	caFile, _ := partner.WriteFiles(t, dir, "partner")
	p7b := filepath.Join(dir, "bundle.p7b")
	run(t, nil, "openssl", "crl2pkcs7", "-nocrl", "-certfile", caFile, "-outform", "DER", "-out", p7b)
	ctx := context.Background()
	b, err := a.st.AddBundle(ctx, store.Bundle{Domain: a.domain, Location: p7b, Direction: store.DirectionBoth, Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a.start(t, "127.0.0.1:1", nil, nil)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, err := a.st.Bundle(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.LastSuccess.IsZero() {
			if got.LastError != "" || got.Checksum == "" {
				t.Fatalf("bundle state after the fetch: %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not fetch the bundle: %+v", got)
		}
	}
	anchors, err := a.st.BundleAnchors(ctx, b.ID)
	if err != nil || len(anchors) != 1 {
		t.Fatalf("bundle anchors: %d, %v", len(anchors), err)
	}
	if c, _ := anchors[0].Parse(); c == nil || !c.Equal(partner.Cert) {
		t.Fatal("the bundle's anchor is not the partner CA")
	}
}

// TestIMAPSListener: [listen] imaps serves IMAP with implicit TLS.
func TestIMAPSListener(t *testing.T) {
	a := newInstance(t, "hospital.example", "alice")
	a.start(t, "127.0.0.1:1", nil, func(c *config.Config) { c.Listen.IMAPS = "127.0.0.1:0" })
	conn, err := tls.Dial("tcp", a.addrs["imaps"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("imaps %q: %v", a.addrs["imaps"], err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "* OK") {
		t.Fatalf("greeting %q: %v", line, err)
	}
}
