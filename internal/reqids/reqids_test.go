package reqids

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// citation is what a requirement id looks like: two to four capitals, a
// hyphen, two digits (SHA-256 or AES-128 have three). Only the prefixes
// docs/requirements.md uses count (CRC-32 is no citation).
var citation = regexp.MustCompile(`\b[A-Z]{2,4}-[0-9]{2}\b`)

// defined is an id's row in docs/requirements.md.
var defined = regexp.MustCompile(`(?m)^\| ([A-Z]{2,4}-[0-9]{2}) \|`)

func TestCitedIDsAreDefined(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "requirements.md"))
	if err != nil {
		t.Fatal(err)
	}
	ids, prefixes := map[string]bool{}, map[string]bool{}
	for _, m := range defined.FindAllStringSubmatch(string(doc), -1) {
		ids[m[1]] = true
		prefixes[m[1][:strings.IndexByte(m[1], '-')]] = true
	}
	if len(ids) < 50 {
		t.Fatalf("docs/requirements.md defines %d ids", len(ids))
	}
	missing := map[string][]string{}
	cited := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, id := range citation.FindAllString(string(src), -1) {
			if !prefixes[id[:strings.IndexByte(id, '-')]] {
				continue
			}
			cited++
			if !ids[id] {
				rel, _ := filepath.Rel(root, path)
				if !slices.Contains(missing[id], rel) {
					missing[id] = append(missing[id], rel)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, files := range missing {
		t.Errorf("%s is cited in %s but not defined in docs/requirements.md", id, strings.Join(files, ", "))
	}
	t.Logf("%d citations of %d defined ids checked", cited, len(ids))
}
