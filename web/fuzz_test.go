package web

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzNotice: whatever a link puts in the query, the page's notice is one
// of its own sentences with numbers, never text from the link.
func FuzzNotice(f *testing.F) {
	for _, s := range []string{"done=retry&id=1&n=2", "done=anchor&id=3&n=0", "done=bundle&id=1&n=5", "done=drop&id=<b>", "done=x&id=1&n=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		n := notice(v)
		if n == "" {
			return
		}
		for _, r := range n {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789 ():,", r) {
				t.Fatalf("%q: notice %q has %q", q, n, r)
			}
		}
	})
}
