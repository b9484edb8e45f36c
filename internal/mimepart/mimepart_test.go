package mimepart

import (
	"bytes"
	"io"
	"strings"
	"testing"

	gomessage "github.com/emersion/go-message"
)

const sample = "From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n" +
	"--outer\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
	"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nalt\r\n--inner\r\nContent-Type: text/html\r\n\r\n<p>alt</p>\r\n--inner--\r\n" +
	"--outer\r\nContent-Type: application/xml; name=\"=?UTF-8?Q?r=C3=A9sum=C3=A9.xml?=\"\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <x@y>\r\n\r\nPGE+PC9hPg==\r\n" +
	"--outer--\r\nepilogue\r\n"

func TestParse(t *testing.T) {
	msg := []byte(sample)
	top := Parse(msg)
	if top.MediaType != "multipart/mixed" || len(top.Children) != 3 || len(top.Leaves()) != 4 {
		t.Fatalf("structure: %+v", top)
	}
	xml := top.Children[2]
	data, err := xml.Decode(msg, 1<<20)
	if err != nil || string(data) != "<a></a>" || xml.FileName() != "résumé.xml" || xml.ContentID() != "x@y" {
		t.Fatalf("xml part: %q %v %q %q", data, err, xml.FileName(), xml.ContentID())
	}
	if b := msg[top.Children[0].BodyStart:top.Children[0].End]; string(b) != "hello" {
		t.Fatalf("text body %q", b)
	}
	if top.Parent(top.Children[1].Children[1]) != top.Children[1] {
		t.Fatal("parent")
	}
}

// TestInsert: parts added after others read back with an independent
// parser, and the old parts are unchanged.
func TestInsert(t *testing.T) {
	msg := []byte(sample)
	top := Parse(msg)
	ins := []Insertion{
		After(top, top.Children[2], Attachment("text/html; charset=utf-8", "view.html", "", []byte("<p>view</p>"))),
		After(top.Children[1], top.Children[1].Children[0], Attachment("text/plain", "", "", bytes.Repeat([]byte("x"), 200))),
	}
	out := Apply(msg, ins)
	e, err := gomessage.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	e.Walk(func(_ []int, ent *gomessage.Entity, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		mt, params, _ := ent.Header.ContentType()
		if !strings.HasPrefix(mt, "multipart/") {
			b, _ := io.ReadAll(ent.Body)
			got = append(got, mt+":"+params["charset"]+":"+string(b[:min(len(b), 12)]))
		}
		return nil
	})
	want := []string{"text/plain::hello", "text/plain::alt", "text/plain::xxxxxxxxxxxx", "text/html::<p>alt</p>", "application/xml::<a></a>", "text/html:utf-8:<p>view</p>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for _, p := range Parse(msg).Leaves() {
		if !bytes.Contains(out, msg[p.Start:p.End]) {
			t.Errorf("part changed: %q", msg[p.Start:p.End])
		}
	}
}

func TestLenient(t *testing.T) {
	for _, m := range []string{"", "no header", "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nunterminated",
		"Content-Type: multipart/mixed\r\n\r\nno boundary", "Content-Type: multipart/mixed; boundary=x\r\n\r\n" + strings.Repeat("--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n", 100)} {
		p := Parse([]byte(m))
		if p == nil {
			t.Fatalf("%q: nil", m)
		}
	}
}

// FuzzParse: any message parses into parts whose offsets lie within it and
// nest; inserting after a leaf keeps the message readable. Seeds in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Fuzz(func(t *testing.T, msg []byte) {
		top := Parse(msg)
		var check func(p *Part, lo, hi int)
		check = func(p *Part, lo, hi int) {
			if p.Start < lo || p.BodyStart < p.Start || p.End < p.BodyStart || p.End > hi {
				t.Fatalf("offsets %d %d %d outside %d..%d", p.Start, p.BodyStart, p.End, lo, hi)
			}
			for _, c := range p.Children {
				check(c, p.BodyStart, p.End)
			}
		}
		check(top, 0, len(msg))
		for _, l := range top.Leaves() {
			l.Decode(msg, 1<<20)
			_ = l.FileName()
			if parent := top.Parent(l); parent != nil {
				Apply(msg, []Insertion{After(parent, l, Attachment("text/plain", "a.txt", "", []byte("x")))})
			}
		}
	})
}
