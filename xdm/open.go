package xdm

import (
	"archive/zip"
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strings"
)

// Limits bound what Open reads of a package. The zero value of a field
// takes the default.
type Limits struct {
	// MaxEntries is the most entries (files and folders) a package may
	// hold; default 1,000.
	MaxEntries int
	// MaxSize is the most bytes all entries together may hold
	// uncompressed; default 128 MiB.
	MaxSize int64
	// MaxRatio is the highest compression ratio of an entry larger than
	// 1 MiB, and of the package as a whole; default 200.
	MaxRatio int
	// MaxDepth is the most folders an entry's path may nest; default 8.
	MaxDepth int
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = 1000
	}
	if l.MaxSize <= 0 {
		l.MaxSize = 128 << 20
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = 200
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = 8
	}
	return l
}

// ratioFloor is the size under which an entry's compression ratio is not
// judged: small files of repeated bytes compress absurdly well and harm
// nobody.
const ratioFloor = 1 << 20

// Package is an opened XDM package.
type Package struct {
	Metadata *Metadata
	// Documents has one entry per DocumentEntry, in the metadata's order.
	Documents []OpenedDocument
}

// OpenedDocument is one document of a package.
type OpenedDocument struct {
	Entry DocumentEntry
	// Path is the document's path in the zip, as the zip spells it.
	Path string
	// Name is its file name (the last part of Path).
	Name string
	// Data is the document; nil when Err is set.
	Data []byte
	// Err is why the document was set aside: ErrHashMismatch,
	// ErrSizeMismatch, ErrMissingDocument or ErrUnreadable (wrapped).
	Err error
}

// Valid reports whether every document of the package matched its
// metadata.
func (p *Package) Valid() bool {
	for _, d := range p.Documents {
		if d.Err != nil {
			return false
		}
	}
	return true
}

// LooksLikeZip reports whether data starts as a zip archive does.
func LooksLikeZip(data []byte) bool {
	return len(data) >= 4 && bytes.Equal(data[:4], []byte("PK\x03\x04"))
}

// Open reads an XDM package from memory (XD-01, XD-02). It returns an error
// wrapping ErrNotZip or ErrNotXDM for an attachment that is no XDM package,
// one wrapping ErrTooManyEntries, ErrTooLarge, ErrRatio, ErrNesting,
// ErrUnsafeName or ErrMetadata for a package it refuses as a whole, and
// otherwise the package, each document with its own Err when it does not
// match its metadata. Nothing is written anywhere.
func Open(data []byte, lim Limits) (*Package, error) {
	lim = lim.withDefaults()
	if !LooksLikeZip(data) {
		return nil, ErrNotZip
	}
	// The entry count from the end record, before archive/zip reads a
	// central directory of any size.
	if n, ok := declaredEntries(data); ok && n > lim.MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, over the limit of %d", ErrTooManyEntries, n, lim.MaxEntries)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotZip, err)
	}
	if len(zr.File) > lim.MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, over the limit of %d", ErrTooManyEntries, len(zr.File), lim.MaxEntries)
	}
	// Every name is checked, read or not: a package with a hostile name
	// is hostile as a whole.
	byName := make(map[string]*zip.File, len(zr.File))
	var metas []*zip.File
	var total, compressed uint64
	for _, f := range zr.File {
		if err := checkName(f.Name, lim.MaxDepth); err != nil {
			return nil, err
		}
		up := strings.ToUpper(f.Name)
		if _, dup := byName[up]; dup {
			return nil, fmt.Errorf("%w: %q appears twice (names are matched case-insensitively)", ErrUnsafeName, f.Name)
		}
		byName[up] = f
		parts := strings.Split(up, "/")
		if len(parts) == 3 && parts[0] == "IHE_XDM" && parts[2] == "METADATA.XML" {
			metas = append(metas, f)
		}
		total += f.UncompressedSize64
		compressed += f.CompressedSize64
		if total > uint64(lim.MaxSize) {
			return nil, fmt.Errorf("%w: entries hold more than %d bytes uncompressed", ErrTooLarge, lim.MaxSize)
		}
		if f.UncompressedSize64 > ratioFloor && f.UncompressedSize64/max(f.CompressedSize64, 1) > uint64(lim.MaxRatio) {
			return nil, fmt.Errorf("%w: %q expands %d bytes to %d (over %d:1)", ErrRatio, f.Name, f.CompressedSize64, f.UncompressedSize64, lim.MaxRatio)
		}
	}
	if total > ratioFloor && total/max(compressed, 1) > uint64(lim.MaxRatio) {
		return nil, fmt.Errorf("%w: the package expands %d bytes to %d (over %d:1)", ErrRatio, compressed, total, lim.MaxRatio)
	}
	if len(metas) == 0 {
		return nil, ErrNotXDM
	}
	pkg := &Package{Metadata: &Metadata{}}
	for i, mf := range metas {
		raw, err := readEntry(mf, MaxMetadataSize)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrMetadata, mf.Name, err)
		}
		m, err := ParseMetadata(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", mf.Name, err)
		}
		if i == 0 {
			pkg.Metadata.SubmissionSet = m.SubmissionSet
		}
		pkg.Metadata.Documents = append(pkg.Metadata.Documents, m.Documents...)
		dir := path.Dir(mf.Name)
		for _, e := range m.Documents {
			pkg.Documents = append(pkg.Documents, openDocument(e, dir, byName, metas, len(m.Documents)))
		}
	}
	return pkg, nil
}

// openDocument finds, reads and checks one DocumentEntry's document.
func openDocument(e DocumentEntry, dir string, byName map[string]*zip.File, metas []*zip.File, entries int) OpenedDocument {
	od := OpenedDocument{Entry: e}
	f := findDocument(e, dir, byName, metas, entries)
	if f == nil {
		od.Err = fmt.Errorf("%w: %s (%s)", ErrMissingDocument, firstNonEmpty(e.URI, "no URI"), e.ID)
		return od
	}
	od.Path, od.Name = f.Name, path.Base(f.Name)
	if e.Size >= 0 && uint64(e.Size) != f.UncompressedSize64 {
		od.Err = fmt.Errorf("%w: %s: metadata says %d bytes, the package holds %d", ErrSizeMismatch, od.Name, e.Size, f.UncompressedSize64)
		return od
	}
	data, err := readEntry(f, f.UncompressedSize64)
	if err != nil {
		od.Err = fmt.Errorf("%w: %s: %v", ErrUnreadable, od.Name, err)
		return od
	}
	if e.Hash != "" {
		sum := sha1.Sum(data)
		if got := hex.EncodeToString(sum[:]); got != strings.ToLower(e.Hash) {
			od.Err = fmt.Errorf("%w: %s: metadata says SHA-1 %s, the document has %s", ErrHashMismatch, od.Name, e.Hash, got)
			return od
		}
	}
	od.Data = data
	return od
}

// findDocument looks a DocumentEntry's document up, case-insensitively:
// its URI relative to the subset folder, then from the root; an entry
// without a URI, when it is the only one, takes the only other file of its
// folder.
func findDocument(e DocumentEntry, dir string, byName map[string]*zip.File, metas []*zip.File, entries int) *zip.File {
	if e.URI != "" {
		uri := strings.TrimPrefix(strings.ReplaceAll(e.URI, `\`, "/"), "./")
		if checkName(uri, 16) != nil {
			return nil
		}
		if f := byName[strings.ToUpper(dir+"/"+uri)]; f != nil {
			return f
		}
		return byName[strings.ToUpper(uri)]
	}
	if entries != 1 {
		return nil
	}
	var only *zip.File
	for up, f := range byName {
		if strings.HasSuffix(up, "/") || path.Dir(up) != strings.ToUpper(dir) || strings.HasSuffix(up, "/METADATA.XML") {
			continue
		}
		if only != nil {
			return nil
		}
		only = f
	}
	return only
}

// readEntry reads an entry whose size was checked, refusing more bytes than
// it declared (archive/zip checks the CRC and the size at the end).
func readEntry(f *zip.File, limit uint64) ([]byte, error) {
	if f.UncompressedSize64 > limit {
		return nil, fmt.Errorf("%d bytes, over %d", f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, f.UncompressedSize64)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, err
	}
	// Reading on to EOF makes archive/zip check the CRC-32 and that the
	// entry holds no more than it declared.
	var one [1]byte
	if n, err := rc.Read(one[:]); n > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			err = fmt.Errorf("more data than declared")
		}
		return nil, err
	}
	return buf, nil
}

// checkName refuses entry names that could write outside a folder if
// someone unzipped the package, or that hide what they are.
func checkName(name string, maxDepth int) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %q: %s", ErrUnsafeName, printable(name), why)
	}
	switch {
	case name == "":
		return bad("empty name")
	case strings.ContainsRune(name, 0):
		return bad("NUL in the name")
	case strings.ContainsRune(name, '\\'):
		return bad("backslash in the name")
	case strings.HasPrefix(name, "/"):
		return bad("absolute path")
	case len(name) >= 2 && name[1] == ':':
		return bad("drive letter")
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return bad("control character in the name")
	}
	parts := strings.Split(strings.TrimSuffix(name, "/"), "/")
	for _, p := range parts {
		if p == ".." {
			return bad("parent folder (..) in the path")
		}
	}
	if len(parts)-1 > maxDepth {
		return fmt.Errorf("%w: %q is %d folders deep, over the limit of %d", ErrNesting, printable(name), len(parts)-1, maxDepth)
	}
	return nil
}

func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

// declaredEntries reads the entry count of the zip's end of central
// directory record (zip64's when the classic one says 0xFFFF).
func declaredEntries(data []byte) (int, bool) {
	const eocdLen = 22
	start := max(0, len(data)-(eocdLen+65535))
	i := bytes.LastIndex(data[start:], []byte("PK\x05\x06"))
	if i < 0 {
		return 0, false
	}
	i += start
	if i+eocdLen > len(data) {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint16(data[i+10:]))
	if n != 0xFFFF {
		return n, true
	}
	// Zip64 end of central directory locator, just before.
	if i < 20 || !bytes.Equal(data[i-20:i-16], []byte("PK\x06\x07")) {
		return 0, false
	}
	off := binary.LittleEndian.Uint64(data[i-20+8:])
	if off+56 > uint64(len(data)) || !bytes.Equal(data[off:off+4], []byte("PK\x06\x06")) {
		return 0, false
	}
	n64 := binary.LittleEndian.Uint64(data[off+32:])
	if n64 > 1<<30 {
		return 1 << 30, true
	}
	return int(n64), true
}
