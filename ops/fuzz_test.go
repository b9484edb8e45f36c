package ops

import (
	"errors"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/trust"
)

// FuzzParseRefresh: a refresh interval from the web or the API parses to
// one no shorter than trust.MinRefresh, or to an ErrInvalid error.
func FuzzParseRefresh(f *testing.F) {
	for _, s := range []string{"", "6h", "90m", "1d", "0d", "-1d", "1s", "9999999999d", "1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseRefresh(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: error %v is not ErrInvalid", s, err)
			}
			return
		}
		if d < trust.MinRefresh || d > maxRefresh {
			t.Fatalf("%q: %v accepted", s, d)
		}
	})
}

// FuzzBundleLocation: the web's bundle location is an http(s) URL with a
// host or an ErrInvalid error, never a file of the server.
func FuzzBundleLocation(f *testing.F) {
	for _, s := range []string{"https://bundles.example/x.p7b", "http://127.0.0.1:8/x", "file:///etc/passwd", "/etc/passwd", "https://", "ftp://x/y", "HTTPS://x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, err := BundleLocation(s, false)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: error %v is not ErrInvalid", s, err)
			}
			return
		}
		if !strings.HasPrefix(loc, "https://") && !strings.HasPrefix(loc, "http://") {
			t.Fatalf("%q: location %q accepted", s, loc)
		}
	})
}
