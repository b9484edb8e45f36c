package ccda

import (
	"testing"
)

// FuzzReadHeader: any input either reads or fails with an error; never a
// panic, and Read, Is and HTML agree with it. The seed corpus is in
// testdata/fuzz/FuzzReadHeader.
func FuzzReadHeader(f *testing.F) {
	for _, name := range []string{"discharge-summary.xml", "referral-note.xml", "ccd.xml"} {
		f.Add(load(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := Limits{MaxSize: 1 << 20, MaxDepth: 64}
		h, err := ReadHeader(data, lim)
		if err == nil && h == nil {
			t.Fatal("nil header without error")
		}
		doc, err2 := Read(data, lim)
		if err2 == nil {
			if err != nil {
				t.Fatalf("Read succeeds where ReadHeader fails: %v", err)
			}
			_ = HTML(doc)
		}
		_ = Is(data)
	})
}
