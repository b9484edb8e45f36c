package smime

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hisp-project/hisp/internal/testpki"
	"github.com/hisp-project/hisp/smime/cms"
)

// pki is the set of test identities shared by the tests of this package,
// written to files for openssl.
type pki struct {
	dir                 string
	ca                  *testpki.Identity
	rsaSigner, ecSigner *testpki.Identity
	r1, r2              *testpki.Identity // recipients
	other               *testpki.Identity // a recipient the messages are not for
	weak                *testpki.Identity // 1024-bit signer
}

type pkiFiles struct{ cert, key string }

var (
	testPKIOnce sync.Once
	testPKI     *pki
)

// getPKI returns identities made once per test binary; their files live in
// a directory removed by TestMain.
func getPKI(t testing.TB) *pki {
	t.Helper()
	testPKIOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hisp-smime-test")
		if err != nil {
			t.Fatal(err)
		}
		ca := testpki.NewCA(t, "hisp test CA")
		p := &pki{
			dir:       dir,
			ca:        ca,
			rsaSigner: testpki.Issue(t, ca, testpki.Options{Email: []string{"alice@hospital.example"}}),
			ecSigner:  testpki.Issue(t, ca, testpki.Options{Email: []string{"alice-ec@hospital.example"}, Curve: "P-256"}),
			r1:        testpki.Issue(t, ca, testpki.Options{Email: []string{"bob@clinic.example"}}),
			r2:        testpki.Issue(t, ca, testpki.Options{DNS: []string{"clinic.example"}, KeyBits: 3072}),
			other:     testpki.Issue(t, ca, testpki.Options{Email: []string{"carol@elsewhere.example"}}),
			weak:      testpki.Issue(t, ca, testpki.Options{Email: []string{"weak@hospital.example"}, KeyBits: 1024}),
		}
		for name, id := range map[string]*testpki.Identity{"ca": p.ca, "rsa": p.rsaSigner, "ec": p.ecSigner,
			"r1": p.r1, "r2": p.r2, "other": p.other, "weak": p.weak} {
			id.WriteFiles(t, dir, name)
		}
		testPKI = p
	})
	if testPKI == nil {
		t.Fatal("test PKI setup failed")
	}
	return testPKI
}

func (p *pki) files(name string) pkiFiles {
	return pkiFiles{filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")}
}

func (p *pki) keys(ids ...*testpki.Identity) []cms.KeyPair {
	var out []cms.KeyPair
	for _, id := range ids {
		out = append(out, cms.KeyPair{Cert: id.Cert, Key: id.Key})
	}
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testPKI != nil {
		os.RemoveAll(testPKI.dir)
	}
	os.Exit(code)
}

// openssl runs the openssl command with stdin and returns its stdout. A
// missing openssl fails the test: interop is not optional.
func openssl(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := opensslErr(stdin, args...)
	if err != nil {
		t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func opensslErr(stdin []byte, args ...string) ([]byte, error) {
	path, err := exec.LookPath("openssl")
	if err != nil {
		return nil, err // make test installs openssl
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &opensslError{err, stderr.String()}
	}
	return stdout.Bytes(), nil
}

type opensslError struct {
	err    error
	stderr string
}

func (e *opensslError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// sampleMessage is a small Direct message with a C-CDA attachment,
// deliberately with bare LF line ends to exercise canonicalization.
func sampleMessage(t testing.TB) []byte {
	t.Helper()
	ccda, err := os.ReadFile(filepath.Join("testdata", "ccda.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("From: Alice Hospital <alice@hospital.example>\n" +
		"To: bob@clinic.example\n" +
		"Cc: nurse@clinic.example\n" +
		"Subject: Discharge summary for patient 12345\n" +
		"Date: Wed, 25 Nov 2026 10:00:00 +0000\n" +
		"Message-ID: <discharge-1@hospital.example>\n" +
		"Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\n\n" +
		"--b1\nContent-Type: text/plain; charset=utf-8\n\nPlease find the discharge summary attached.\n" +
		"--b1\nContent-Type: application/xml; name=\"ccda.xml\"\nContent-Disposition: attachment; filename=\"ccda.xml\"\n\n")
	b.Write(ccda)
	b.WriteString("\n--b1--\n")
	return b.Bytes()
}
