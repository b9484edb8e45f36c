package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
)

// TestMessageOpenFetchesAIA: a message signed with the leaf alone (as the
// Direct Project's Java reference implementation signs) chains to the root
// anchor once `hisp message open` fetches the intermediate from the
// signer's AIA caIssuers URL, served here on loopback; with --no-fetch it
// stays offline and the signer does not chain.
func TestMessageOpenFetchesAIA(t *testing.T) {
	dir := t.TempDir()
	root := testpki.NewCA(t, "AIA test root")
	inter := testpki.Issue(t, root, testpki.Options{CN: "AIA test intermediate", CA: true})
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/pkix-cert")
		w.Write(inter.Cert.Raw)
	}))
	defer srv.Close()
	alice := testpki.Issue(t, inter, testpki.Options{Email: []string{"alice@hospital.example"}, AIA: []string{srv.URL + "/inter.cer"}})
	bob := testpki.Issue(t, root, testpki.Options{Email: []string{"bob@clinic.example"}})
	rootFile, _ := root.WriteFiles(t, dir, "root")
	sc, sk := alice.WriteFiles(t, dir, "alice") // the leaf alone: no chain in the signature
	bc, bk := bob.WriteFiles(t, dir, "bob")

	code, sealed, stderr := runCLI(t, []byte(plainMessage), "message", "seal", "--sign-cert", sc, "--sign-key", sk, "--to", bc)
	if code != 0 {
		t.Fatalf("seal: exit %d: %s", code, stderr)
	}

	code, inner, verdict := runCLI(t, []byte(sealed), "message", "open", "--cert", bc, "--key", bk, "--anchor", rootFile, "--no-fetch")
	if code != 1 || inner != "" || !strings.Contains(verdict, "NOT chained") || hits.Load() != 0 {
		t.Fatalf("--no-fetch: exit %d, stdout %q, stderr %q, %d AIA fetches", code, inner, verdict, hits.Load())
	}

	code, inner, verdict = runCLI(t, []byte(sealed), "message", "open", "--cert", bc, "--key", bk, "--anchor", rootFile)
	if code != 0 || inner != plainMessage {
		t.Fatalf("open: exit %d, stderr %q", code, verdict)
	}
	if !strings.Contains(verdict, "chains to anchor CN=AIA test root") || hits.Load() != 1 {
		t.Errorf("verdict %q after %d AIA fetches", verdict, hits.Load())
	}
}
