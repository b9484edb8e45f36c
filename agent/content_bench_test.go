package agent

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"

	"github.com/hisp-project/hisp/internal/mimepart"
	"github.com/hisp-project/hisp/internal/testccda"
)

// bigClinical is a message with a 5 MB C-CDA and a 20 MB PDF attached.
func bigClinical() []byte {
	pdf := make([]byte, 20<<20)
	rand.Read(pdf)
	copy(pdf, "%PDF-1.7\n")
	head := "From: alice@a.example\r\nTo: bob@b.example\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n--b\r\n"
	msg := append([]byte(head), mimepart.Attachment("application/xml", "summary.xml", "", testccda.Big(5<<20))...)
	msg = append(msg, "\r\n--b\r\n"...)
	msg = append(msg, mimepart.Attachment("application/pdf", "imaging.pdf", "", pdf)...)
	return append(msg, "\r\n--b--\r\n"...)
}

// BenchmarkContentOutbound: packaging a 5 MB C-CDA and a 20 MB PDF
// (policy "always") into a message before it is signed.
func BenchmarkContentOutbound(b *testing.B) {
	a := &Agent{content: &ContentOptions{XDM: "always"}, now: timeNow, log: slog.Default()}
	msg := bigClinical()
	rr := []RecipientResult{{Recipient: "bob@b.example", Accepted: true}}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		out, _, _ := a.packageOutbound(context.Background(), msg, "alice@a.example", rr)
		if len(out) == len(msg) {
			b.Fatal("not packaged")
		}
	}
}

// BenchmarkContentInbound: receiving that message packaged: the package
// opened and checked, its documents added beside it (here already
// attached), the C-CDA read and rendered as HTML.
func BenchmarkContentInbound(b *testing.B) {
	a := &Agent{content: &ContentOptions{XDM: "always", XDMDocuments: true, CCDAHTML: true}, now: timeNow, log: slog.Default()}
	msg, _, _ := a.packageOutbound(context.Background(), bigClinical(), "alice@a.example", []RecipientResult{{Recipient: "bob@b.example", Accepted: true}})
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		_, notes := a.inboundContent(msg)
		if len(notes) != 2 || notes[1].verdict != "pass" {
			b.Fatalf("%+v", notes)
		}
	}
}
