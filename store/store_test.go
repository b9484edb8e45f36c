package store

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tcheck(t *testing.T, err error, msg string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
}

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := testOpen(t, dir)
	tcheck(t, err, "open store")
	t.Cleanup(func() { s.Close() })
	return s
}

var serial int64

// testCert makes a self-signed certificate for the SANs, with a P-256 key
// unless rsaBits is set.
func testCert(t *testing.T, rsaBits int, emails, dns []string, isCA bool) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	var key crypto.Signer
	var err error
	if rsaBits > 0 {
		key, err = rsa.GenerateKey(rand.Reader, rsaBits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	tcheck(t, err, "generate key")
	serial++
	cn := "test"
	if len(emails) > 0 {
		cn = emails[0]
	} else if len(dns) > 0 {
		cn = dns[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		EmailAddresses:        emails,
		DNSNames:              dns,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	tcheck(t, err, "create certificate")
	c, err := x509.ParseCertificate(der)
	tcheck(t, err, "parse certificate")
	return c, key
}

func TestOpenTwiceAndPragmas(t *testing.T) {
	sqliteOnly(t) // files, modes and pragmas of the SQLite database
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := testOpen(t, dir)
	tcheck(t, err, "first open")
	_, err = s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	tcheck(t, s.Close(), "close")

	fi, err := os.Stat(dir)
	tcheck(t, err, "stat data dir")
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %04o, want 0700", fi.Mode().Perm())
	}
	fi, err = os.Stat(filepath.Join(dir, DBFile))
	tcheck(t, err, "stat db")
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("db mode %04o, want no group/other access", fi.Mode().Perm())
	}

	s = openTest(t, dir)
	v, err := s.SchemaVersion(ctx)
	tcheck(t, err, "schema version")
	ms, err := migrations(engineSQLite)
	tcheck(t, err, "migrations")
	if v != len(ms) || v < 1 {
		t.Errorf("schema version %d, want %d", v, len(ms))
	}
	var n int
	tcheck(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n), "count migrations")
	if n != len(ms) {
		t.Errorf("%d migration rows after two opens, want %d", n, len(ms))
	}
	if _, err := s.Domain(ctx, "a.example"); err != nil {
		t.Errorf("domain lost across reopen: %v", err)
	}

	var mode string
	tcheck(t, s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode), "journal_mode")
	if mode != "wal" {
		t.Errorf("journal_mode %q, want wal", mode)
	}
	var fk, sync int
	tcheck(t, s.db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk), "foreign_keys")
	tcheck(t, s.db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync), "synchronous")
	if fk != 1 || sync != 2 {
		t.Errorf("foreign_keys=%d synchronous=%d, want 1 and 2 (FULL)", fk, sync)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	_, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied) VALUES (999, 'future', 0)`)
	tcheck(t, err, "insert future migration")
	s.Close()
	if _, err := testOpen(t, dir); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open with newer schema: %v, want refusal", err)
	}
}

func TestMasterKeyMode(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	s.Close()
	path := filepath.Join(dir, MasterKeyFile)
	fi, err := os.Stat(path)
	tcheck(t, err, "stat master key")
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("master.key mode %04o, want 0600", fi.Mode().Perm())
	}
	if fi.Size() != masterKeySize {
		t.Fatalf("master.key has %d bytes, want %d", fi.Size(), masterKeySize)
	}
	key1, err := os.ReadFile(path)
	tcheck(t, err, "read master key")

	tcheck(t, os.Chmod(path, 0o644), "chmod")
	_, err = testOpen(t, dir)
	if err == nil || !strings.Contains(err.Error(), "0644") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("open with master.key 0644: %v, want a refusal naming the mode and the fix", err)
	}
	tcheck(t, os.Chmod(path, 0o400), "chmod")
	s = openTest(t, dir) // narrower is fine
	s.Close()
	key2, err := os.ReadFile(path)
	tcheck(t, err, "read master key")
	if !bytes.Equal(key1, key2) {
		t.Fatal("master key changed across opens")
	}
}

func TestDomainsAndAddresses(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())

	d, err := s.AddDomain(ctx, "A.Example.")
	tcheck(t, err, "add domain")
	if d.Name != "a.example" {
		t.Errorf("domain name %q, want normalized a.example", d.Name)
	}
	if _, err := s.AddDomain(ctx, "a.example"); !errors.Is(err, ErrExists) {
		t.Errorf("add domain twice: %v, want ErrExists", err)
	}
	for _, bad := range []string{"", "a..example", "-a.example", "a b.example", "bob@a.example"} {
		if _, err := s.AddDomain(ctx, bad); err == nil {
			t.Errorf("add domain %q: no error", bad)
		}
	}
	_, err = s.AddDomain(ctx, "b.example")
	tcheck(t, err, "add domain b")

	a, err := s.AddAddress(ctx, "Bob@A.example")
	tcheck(t, err, "add address")
	if a.Address != "bob@a.example" || a.Domain != "a.example" {
		t.Errorf("address %+v", a)
	}
	if _, err := s.AddAddress(ctx, "bob@a.example"); !errors.Is(err, ErrExists) {
		t.Errorf("add address twice: %v, want ErrExists", err)
	}
	if _, err := s.AddAddress(ctx, "x@nowhere.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("add address of unknown domain: %v, want ErrNotFound", err)
	}
	_, err = s.AddAddress(ctx, "carol@b.example")
	tcheck(t, err, "add address carol")

	all, err := s.Addresses(ctx, "")
	tcheck(t, err, "list addresses")
	if len(all) != 2 {
		t.Errorf("%d addresses, want 2", len(all))
	}
	inA, err := s.Addresses(ctx, "a.example")
	tcheck(t, err, "list addresses of a")
	if len(inA) != 1 || inA[0].Address != "bob@a.example" {
		t.Errorf("addresses of a.example: %+v", inA)
	}
	got, err := s.Address(ctx, "BOB@a.example")
	tcheck(t, err, "get address")
	if got.Address != "bob@a.example" {
		t.Errorf("got %+v", got)
	}

	ds, err := s.Domains(ctx)
	tcheck(t, err, "list domains")
	if len(ds) != 2 || ds[0].Name != "a.example" || ds[0].Addresses != 1 {
		t.Errorf("domains %+v", ds)
	}

	tcheck(t, s.RemoveAddress(ctx, "bob@a.example"), "remove address")
	if err := s.RemoveAddress(ctx, "bob@a.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove address twice: %v, want ErrNotFound", err)
	}
	if _, err := s.Domain(ctx, "c.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown domain: %v", err)
	}
	_, err = s.RemoveDomain(ctx, "b.example")
	tcheck(t, err, "remove domain")
	if _, err := s.RemoveDomain(ctx, "b.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove domain twice: %v, want ErrNotFound", err)
	}
}

func TestCertificatesAndKeys(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	_, err := s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")

	cert, key := testCert(t, 2048, []string{"bob@a.example"}, nil, false)
	ca, _ := testCert(t, 0, nil, nil, true)
	c, err := s.AddCertificate(ctx, "Bob@a.example", cert, []*x509.Certificate{ca}, key)
	tcheck(t, err, "add certificate")
	if c.ID == 0 || c.Owner != "bob@a.example" || c.Domain != "a.example" || !c.HasKey {
		t.Errorf("added %+v", c)
	}
	if _, err := s.AddCertificate(ctx, "bob@a.example", cert, nil, key); !errors.Is(err, ErrExists) {
		t.Errorf("add same certificate twice: %v, want ErrExists", err)
	}
	if _, err := s.AddCertificate(ctx, "bob@z.example", cert, nil, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("add certificate for unknown domain: %v, want ErrNotFound", err)
	}
	_, otherKey := testCert(t, 0, nil, nil, false)
	if _, err := s.AddCertificate(ctx, "a.example", cert, nil, otherKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("add certificate with wrong key: %v", err)
	}

	dcert, _ := testCert(t, 0, nil, []string{"a.example"}, false)
	dc, err := s.AddCertificate(ctx, "a.example", dcert, nil, nil)
	tcheck(t, err, "add domain certificate without key")
	if dc.HasKey {
		t.Error("certificate without key reports HasKey")
	}

	list, err := s.Certificates(ctx, CertFilter{Domain: "a.example"})
	tcheck(t, err, "list certificates")
	if len(list) != 2 {
		t.Fatalf("%d certificates, want 2", len(list))
	}
	byOwner, err := s.Certificates(ctx, CertFilter{Owner: "BOB@a.example"})
	tcheck(t, err, "list by owner")
	if len(byOwner) != 1 {
		t.Fatalf("%d certificates of bob, want 1", len(byOwner))
	}
	got := byOwner[0]
	if !bytes.Equal(got.DER, cert.Raw) || got.Fingerprint != Fingerprint(cert.Raw) || !got.HasKey ||
		got.SAN != "email:bob@a.example" || got.KeyUsage != cert.KeyUsage || !got.NotAfter.Equal(cert.NotAfter) ||
		len(got.Chain) != 1 || !bytes.Equal(got.Chain[0], ca.Raw) || got.Subject != cert.Subject.String() {
		t.Errorf("listed %+v", got)
	}

	k, err := s.PrivateKey(ctx, c.ID)
	tcheck(t, err, "private key")
	if !key.(*rsa.PrivateKey).Equal(k) {
		t.Error("private key round trip: keys differ")
	}
	if _, err := s.PrivateKey(ctx, dc.ID); !errors.Is(err, ErrNoKey) {
		t.Errorf("key of certificate without key: %v, want ErrNoKey", err)
	}
	if _, err := s.PrivateKey(ctx, 9999); !errors.Is(err, ErrNotFound) {
		t.Errorf("key of unknown certificate: %v, want ErrNotFound", err)
	}

	// A sealed key is bound to its row: moved to another row it does not open.
	ecert, ekey := testCert(t, 0, []string{"eve@a.example"}, nil, false)
	ec, err := s.AddCertificate(ctx, "eve@a.example", ecert, nil, ekey)
	tcheck(t, err, "add eve")
	_, err = s.db.ExecContext(ctx, `UPDATE certificates SET private_key = (SELECT private_key FROM certificates WHERE id = ?) WHERE id = ?`, c.ID, ec.ID)
	tcheck(t, err, "swap sealed key")
	if _, err := s.PrivateKey(ctx, ec.ID); err == nil {
		t.Error("a sealed key moved to another row opened")
	}

	// The PKCS#8 key never appears in the database files.
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	tcheck(t, err, "marshal key")
	d := key.(*rsa.PrivateKey).D.Bytes()
	check := func(when string) {
		t.Helper()
		if testPostgres() {
			// The stored bytes themselves (the files are PostgreSQL's).
			rows, err := s.db.QueryContext(ctx, `SELECT private_key FROM certificates WHERE private_key IS NOT NULL`)
			tcheck(t, err, "read stored keys")
			defer rows.Close()
			for rows.Next() {
				var stored []byte
				tcheck(t, rows.Scan(&stored), "scan stored key")
				if bytes.Contains(stored, pkcs8) || bytes.Contains(stored, d) {
					t.Errorf("%s: a stored key is in the clear", when)
				}
			}
			return
		}
		files, _ := filepath.Glob(filepath.Join(dir, DBFile+"*"))
		if len(files) == 0 {
			t.Fatal("no database files")
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			tcheck(t, err, "read "+f)
			if bytes.Contains(data, pkcs8) || bytes.Contains(data, d) {
				t.Errorf("%s: %s contains the private key", when, f)
			}
		}
	}
	check("open")
	if !testPostgres() {
		s.Close()
		check("closed")
	}

	s = openTest(t, dir)
	removed, err := s.RemoveCertificate(ctx, c.ID)
	tcheck(t, err, "remove certificate")
	if removed.ID != c.ID {
		t.Errorf("removed %+v", removed)
	}
	if _, err := s.Certificate(ctx, c.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed certificate still there: %v", err)
	}
	if _, err := s.RemoveCertificate(ctx, c.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove twice: %v", err)
	}
}

func TestAnchorsAndBundles(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	_, err := s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")

	ca1, _ := testCert(t, 0, nil, nil, true)
	ca2, _ := testCert(t, 0, nil, nil, true)
	ca3, _ := testCert(t, 0, nil, nil, true)
	a1, err := s.AddAnchor(ctx, "a.example", ca1, DirectionIn)
	tcheck(t, err, "add anchor")
	if a1.ID == 0 || a1.Direction != DirectionIn || a1.Source() != "manual" {
		t.Errorf("anchor %+v", a1)
	}
	if got, err := s.AddAnchor(ctx, "a.example", ca1, DirectionBoth); !errors.Is(err, ErrExists) || got.ID != a1.ID {
		t.Errorf("add anchor twice: %v (id %d), want ErrExists with id %d", err, got.ID, a1.ID)
	}
	if _, err := s.AddAnchor(ctx, "a.example", ca2, Direction("sideways")); err == nil {
		t.Error("bad direction accepted")
	}
	if _, err := s.AddAnchor(ctx, "z.example", ca2, DirectionOut); !errors.Is(err, ErrNotFound) {
		t.Errorf("anchor for unknown domain: %v", err)
	}

	b, err := s.AddBundle(ctx, Bundle{Domain: "a.example", Location: "https://bundles.example/x.p7b", Direction: DirectionBoth, Refresh: time.Hour})
	tcheck(t, err, "add bundle")
	if _, err := s.AddBundle(ctx, Bundle{Domain: "a.example", Location: "https://bundles.example/x.p7b", Direction: DirectionBoth, Refresh: time.Hour}); !errors.Is(err, ErrExists) {
		t.Errorf("add bundle twice: %v", err)
	}
	b2, err := s.AddBundle(ctx, Bundle{Domain: "a.example", Location: "/etc/b.p7b", Signer: ca3.Raw, Direction: DirectionOut, Refresh: 90 * time.Minute})
	tcheck(t, err, "add bundle with signer")

	now := time.Now().Truncate(time.Millisecond)
	tcheck(t, s.SetBundleAnchors(ctx, b.ID, []*x509.Certificate{ca2, ca3, ca2}, "sum1", now), "set bundle anchors")
	tcheck(t, s.BundleFailed(ctx, b2.ID, now, "fetch: connection refused"), "bundle failed")

	anchors, err := s.Anchors(ctx, "a.example")
	tcheck(t, err, "list anchors")
	if len(anchors) != 3 {
		t.Fatalf("%d anchors, want 3 (1 manual, 2 from the bundle)", len(anchors))
	}
	var fromBundle Anchor
	for _, a := range anchors {
		if a.BundleID == b.ID {
			fromBundle = a
		}
	}
	if fromBundle.Source() != "bundle "+itoa(b.ID) || fromBundle.Direction != DirectionBoth {
		t.Errorf("bundle anchor %+v", fromBundle)
	}
	if _, err := s.RemoveAnchor(ctx, "a.example", fromBundle.ID); err == nil {
		t.Error("removing a bundle anchor by hand was allowed")
	}

	ba, err := s.BundleAnchors(ctx, b.ID)
	tcheck(t, err, "bundle anchors")
	if len(ba) != 2 || !bytes.Equal(ba[0].DER, ca2.Raw) || !bytes.Equal(ba[1].DER, ca3.Raw) {
		t.Errorf("bundle anchors %+v", ba)
	}
	got, err := s.Bundle(ctx, b.ID)
	tcheck(t, err, "get bundle")
	if got.Anchors != 2 || got.Checksum != "sum1" || !got.LastSuccess.Equal(now) || got.LastError != "" || got.Refresh != time.Hour {
		t.Errorf("bundle %+v", got)
	}
	bs, err := s.Bundles(ctx, "a.example")
	tcheck(t, err, "list bundles")
	if len(bs) != 2 || !bytes.Equal(bs[1].Signer, ca3.Raw) || bs[1].LastError == "" || !bs[1].LastSuccess.IsZero() || bs[0].Signer != nil {
		t.Errorf("bundles %+v", bs)
	}

	// Same checksum: no change. New data: swap.
	v0, _ := s.Changed(ctx)
	tcheck(t, s.SetBundleAnchors(ctx, b.ID, nil, "sum1", now), "same checksum")
	if v1, _ := s.Changed(ctx); v1 != v0 {
		t.Error("unchanged bundle moved the change counter")
	}
	tcheck(t, s.SetBundleAnchors(ctx, b.ID, []*x509.Certificate{ca1}, "sum2", now), "new checksum")
	if got, _ := s.Bundle(ctx, b.ID); got.Anchors != 1 {
		t.Errorf("after swap bundle has %d anchors, want 1", got.Anchors)
	}
	// A failure keeps the last good set.
	tcheck(t, s.BundleFailed(ctx, b.ID, now, "bad signature"), "bundle failed")
	if got, _ := s.Bundle(ctx, b.ID); got.Anchors != 1 || got.LastError != "bad signature" {
		t.Errorf("after failure: %+v", got)
	}

	_, err = s.RemoveAnchor(ctx, "a.example", a1.ID)
	tcheck(t, err, "remove anchor")
	if _, err := s.RemoveAnchor(ctx, "a.example", a1.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove anchor twice: %v", err)
	}
	_, err = s.RemoveBundle(ctx, "a.example", b.ID)
	tcheck(t, err, "remove bundle")
	anchors, err = s.Anchors(ctx, "")
	tcheck(t, err, "list anchors")
	if len(anchors) != 0 {
		t.Errorf("%d anchors left after removing the bundle and the manual anchor", len(anchors))
	}
}

func itoa(n int64) string { return big.NewInt(n).String() }

func TestLocalCA(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	_, err := s.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	if _, err := s.LocalCA(ctx, "a.example"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("local CA before creation: %v", err)
	}
	cert, key := testCert(t, 0, nil, nil, true)
	_, err = s.CreateLocalCA(ctx, "a.example", cert, key)
	tcheck(t, err, "create local CA")
	if _, err := s.CreateLocalCA(ctx, "a.example", cert, key); !errors.Is(err, ErrExists) {
		t.Errorf("create twice: %v", err)
	}
	ca, err := s.LocalCA(ctx, "a.example")
	tcheck(t, err, "get local CA")
	if !bytes.Equal(ca.DER, cert.Raw) || ca.NextSerial != 1 {
		t.Errorf("local CA %+v", ca)
	}
	k, err := s.LocalCAKey(ctx, "a.example")
	tcheck(t, err, "local CA key")
	if !key.(*ecdsa.PrivateKey).Equal(k) {
		t.Error("CA key round trip: keys differ")
	}
	for want := int64(1); want <= 3; want++ {
		n, err := s.NextSerial(ctx, "a.example")
		tcheck(t, err, "next serial")
		if n != want {
			t.Errorf("serial %d, want %d", n, want)
		}
	}
	if n, _ := s.NextCRLNumber(ctx, "a.example"); n != 1 {
		t.Errorf("first CRL number %d", n)
	}
	if _, err := s.NextSerial(ctx, "b.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("serial without CA: %v", err)
	}
	at := time.Now().Truncate(time.Millisecond)
	big1 := new(big.Int).Lsh(big.NewInt(1), 100)
	tcheck(t, s.Revoke(ctx, "a.example", big.NewInt(2), 1, at), "revoke")
	tcheck(t, s.Revoke(ctx, "a.example", big.NewInt(2), 4, at.Add(time.Hour)), "revoke again")
	tcheck(t, s.Revoke(ctx, "a.example", big1, 0, at.Add(time.Minute)), "revoke big serial")
	revs, err := s.Revocations(ctx, "a.example")
	tcheck(t, err, "revocations")
	if len(revs) != 2 || revs[0].Serial.Int64() != 2 || revs[0].Reason != 1 || !revs[0].Time.Equal(at) || revs[1].Serial.Cmp(big1) != 0 {
		t.Errorf("revocations %+v", revs)
	}
}

func TestAudit(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	v0, _ := s.Changed(ctx)
	tcheck(t, s.Audit(ctx, Event{Actor: "cli", Action: "domain.add", Subject: "a.example", Verdict: "ok"}), "audit")
	tcheck(t, s.Audit(ctx, Event{Actor: "b.example", Action: "message.inbound", Subject: "<1@b>", Verdict: "refused", Reason: "untrusted signer"}), "audit")
	evs, err := s.AuditEvents(ctx, 10)
	tcheck(t, err, "audit events")
	if len(evs) != 2 || evs[0].Verdict != "refused" || evs[0].Reason != "untrusted signer" || evs[1].Action != "domain.add" || evs[0].Time.IsZero() {
		t.Errorf("events %+v", evs)
	}
	if v1, _ := s.Changed(ctx); v1 != v0 {
		t.Error("audit moved the change counter")
	}
}

func TestRemoveDomainCascade(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	for _, d := range []string{"a.example", "keep.example"} {
		_, err := s.AddDomain(ctx, d)
		tcheck(t, err, "add domain")
		_, err = s.AddAddress(ctx, "bob@"+d)
		tcheck(t, err, "add address")
		cert, key := testCert(t, 0, []string{"bob@" + d}, nil, false)
		_, err = s.AddCertificate(ctx, "bob@"+d, cert, nil, key)
		tcheck(t, err, "add certificate")
		ca, cakey := testCert(t, 0, nil, nil, true)
		_, err = s.AddAnchor(ctx, d, ca, DirectionBoth)
		tcheck(t, err, "add anchor")
		b, err := s.AddBundle(ctx, Bundle{Domain: d, Location: "/x.p7b", Direction: DirectionBoth, Refresh: time.Hour})
		tcheck(t, err, "add bundle")
		tcheck(t, s.SetBundleAnchors(ctx, b.ID, []*x509.Certificate{ca}, "x", time.Now()), "bundle anchors")
		_, err = s.CreateLocalCA(ctx, d, ca, cakey)
		tcheck(t, err, "create CA")
		tcheck(t, s.Revoke(ctx, d, big.NewInt(7), 0, time.Now()), "revoke")
	}
	removed, err := s.RemoveDomain(ctx, "a.example")
	tcheck(t, err, "remove domain")
	if removed.Addresses != 1 || removed.Certificates != 1 || removed.Anchors != 2 || removed.Bundles != 1 {
		t.Errorf("removed %+v", removed)
	}
	tables := []string{"addresses", "certificates", "anchors", "bundles", "local_cas", "revocations"}
	for _, table := range tables {
		var n int
		tcheck(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n), "count "+table)
		want := 1
		if table == "anchors" {
			want = 2 // manual and from the bundle
		}
		if n != want {
			t.Errorf("%s: %d rows left, want %d (of keep.example)", table, n, want)
		}
	}
	var n int
	tcheck(t, s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM certificates WHERE domain = 'a.example' OR owner LIKE '%@a.example'`).Scan(&n), "count")
	if n != 0 {
		t.Errorf("%d orphaned certificates", n)
	}
}

func TestChangedAcrossHandles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s1 := openTest(t, dir)
	s2 := openTest(t, dir) // as a second process would
	v0, err := s2.Changed(ctx)
	tcheck(t, err, "changed")
	_, err = s1.AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	v1, err := s2.Changed(ctx)
	tcheck(t, err, "changed")
	if v1 <= v0 {
		t.Fatalf("change counter %d after a write through another handle, was %d", v1, v0)
	}
	cert, key := testCert(t, 0, nil, []string{"a.example"}, false)
	_, err = s1.AddCertificate(ctx, "a.example", cert, nil, key)
	tcheck(t, err, "add certificate")
	v2, _ := s2.Changed(ctx)
	if v2 <= v1 {
		t.Fatalf("change counter did not move after adding a certificate")
	}
	// A failed change does not move it.
	if _, err := s1.AddDomain(ctx, "a.example"); err == nil {
		t.Fatal("duplicate domain accepted")
	}
	if v3, _ := s2.Changed(ctx); v3 != v2 {
		t.Errorf("failed change moved the counter")
	}
	// The second handle sees the data, too.
	if _, err := s2.Domain(ctx, "a.example"); err != nil {
		t.Errorf("second handle: %v", err)
	}
}

func TestConcurrentFirstOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	loc := testLocation(t, dir)
	const n = 4
	stores := make(chan *Store, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			s, err := OpenAt(ctx, loc)
			if err != nil {
				errs <- err
				return
			}
			stores <- s
		}()
	}
	var opened []*Store
	for range n {
		select {
		case err := <-errs:
			t.Errorf("concurrent open: %v", err)
		case s := <-stores:
			opened = append(opened, s)
		}
	}
	// Every handle uses the same master key: a key sealed through one opens
	// through the others.
	_, err := opened[0].AddDomain(ctx, "a.example")
	tcheck(t, err, "add domain")
	cert, key := testCert(t, 0, []string{"bob@a.example"}, nil, false)
	c, err := opened[0].AddCertificate(ctx, "bob@a.example", cert, nil, key)
	tcheck(t, err, "add certificate")
	for i, s := range opened {
		if _, err := s.PrivateKey(ctx, c.ID); err != nil {
			t.Errorf("handle %d: %v", i, err)
		}
		s.Close()
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{"Bob@A.Example": "bob@a.example", "a.b@x.example.": "a.b@x.example"} {
		got, _, err := NormalizeAddress(in)
		if err != nil || got != want {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"bob", "@a.example", "bob@", "b ob@a.example", "bob@a_b.example"} {
		if _, _, err := NormalizeAddress(bad); err == nil {
			t.Errorf("NormalizeAddress(%q): no error", bad)
		}
	}
	o, d, err := ParseOwner("A.example")
	if err != nil || o != "a.example" || d != "a.example" {
		t.Errorf("ParseOwner(domain) = %q %q %v", o, d, err)
	}
	o, d, err = ParseOwner("X@A.example")
	if err != nil || o != "x@a.example" || d != "a.example" {
		t.Errorf("ParseOwner(address) = %q %q %v", o, d, err)
	}
}

// TestReadsDoNotWaitForWriters: listing the queue or the tracking reads a
// snapshot while a write transaction is open, and sees only what was
// committed.
func TestReadsDoNotWaitForWriters(t *testing.T) {
	ctx := context.Background()
	s, err := testOpen(t, t.TempDir())
	tcheck(t, err, "open")
	defer s.Close()
	_, err = s.Enqueue(ctx, testMessage(1, "bob@b.example"))
	tcheck(t, err, "enqueue")

	inTx, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.tx(ctx, func(tx *txn) error {
			if _, err := tx.ExecContext(ctx, `UPDATE queue_recipients SET last_error = 'uncommitted'`); err != nil {
				return err
			}
			close(inTx)
			<-release
			return nil
		})
	}()
	<-inTx
	read := make(chan error, 1)
	go func() {
		q, err := s.QueueList(ctx, true)
		if err == nil && (len(q) != 1 || q[0].Recipients[0].LastError != "") {
			err = fmt.Errorf("read %+v", q)
		}
		if err == nil {
			_, err = s.TrackedMessages(ctx, TrackFilter{})
		}
		read <- err
	}()
	select {
	case err := <-read:
		tcheck(t, err, "read during a write")
	case <-time.After(5 * time.Second):
		t.Fatal("reads waited for the open write transaction")
	}
	close(release)
	tcheck(t, <-done, "write")
}

// TestOpenExisting: a directory without a store is refused and left as it
// was (no directory, no master key); one made by Open opens; a database
// whose master key went missing is refused rather than given a new key.
func TestOpenExisting(t *testing.T) {
	sqliteOnly(t) // data directories without a database file
	ctx := context.Background()
	root := t.TempDir()
	missing := filepath.Join(root, "typo")
	if _, err := OpenExisting(ctx, missing); !errors.Is(err, ErrNoStore) {
		t.Fatalf("missing directory: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenExisting made %s: %v", missing, err)
	}
	empty := filepath.Join(root, "empty")
	tcheck(t, os.Mkdir(empty, 0o700), "mkdir")
	if _, err := OpenExisting(ctx, empty); !errors.Is(err, ErrNoStore) {
		t.Fatalf("empty directory: %v", err)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("OpenExisting wrote into an empty directory: %v", entries)
	}
	dir := filepath.Join(root, "data")
	s, err := testOpen(t, dir)
	tcheck(t, err, "open")
	s.Close()
	s, err = OpenExisting(ctx, dir)
	tcheck(t, err, "open existing")
	s.Close()
	tcheck(t, os.Remove(filepath.Join(dir, MasterKeyFile)), "remove master key")
	if _, err := OpenExisting(ctx, dir); err == nil || !strings.Contains(err.Error(), MasterKeyFile) {
		t.Fatalf("database without master key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, MasterKeyFile)); err == nil {
		t.Fatal("OpenExisting made a new master key")
	}
}

// TestWrongMasterKeyRefused: a store opened with another master key than
// the one it was made with is refused at open, naming the key file, before
// any private key fails to decrypt; its own key opens it again.
func TestWrongMasterKeyRefused(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	s.Close()
	path := filepath.Join(dir, MasterKeyFile)
	key, err := os.ReadFile(path)
	tcheck(t, err, "read master key")
	other := make([]byte, len(key))
	rand.Read(other)
	tcheck(t, os.WriteFile(path, other, 0o600), "write another key")
	if _, err := testOpen(t, dir); err == nil || !strings.Contains(err.Error(), "is not the key of store") || !strings.Contains(err.Error(), path) {
		t.Fatalf("open with another master key: %v", err)
	}
	tcheck(t, os.WriteFile(path, key, 0o600), "restore the key")
	openTest(t, dir)
}

// TestAddressesLoginAndCertificates: a listing of addresses says which
// have a login and how many certificates each owns (one query for all),
// and so does one address read alone.
func TestAddressesLoginAndCertificates(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	for _, d := range []string{"a.example", "b.example"} {
		_, err := s.AddDomain(ctx, d)
		tcheck(t, err, "add domain")
	}
	for _, a := range []string{"bob@a.example", "carol@a.example", "dave@b.example"} {
		_, err := s.AddAddress(ctx, a)
		tcheck(t, err, "add address")
	}
	tcheck(t, s.SetPassword(ctx, "bob@a.example", "correct horse battery"), "set password")
	for range 2 {
		cert, key := testCert(t, 2048, []string{"bob@a.example"}, nil, false)
		_, err := s.AddCertificate(ctx, "bob@a.example", cert, nil, key)
		tcheck(t, err, "add certificate")
	}
	cert, _ := testCert(t, 2048, []string{"a.example"}, nil, false)
	_, err := s.AddCertificate(ctx, "a.example", cert, nil, nil) // the domain's, no address's
	tcheck(t, err, "add domain certificate")

	list, err := s.Addresses(ctx, "a.example")
	tcheck(t, err, "list addresses")
	if len(list) != 2 || list[0].Address != "bob@a.example" || !list[0].Login || list[0].Certificates != 2 ||
		list[1].Address != "carol@a.example" || list[1].Login || list[1].Certificates != 0 || list[1].Created.IsZero() {
		t.Errorf("addresses of a.example: %+v", list)
	}
	all, err := s.Addresses(ctx, "")
	tcheck(t, err, "list all addresses")
	if len(all) != 3 || all[2].Address != "dave@b.example" {
		t.Errorf("all addresses: %+v", all)
	}
	a, err := s.Address(ctx, "Bob@A.example")
	tcheck(t, err, "read address")
	if !a.Login || a.Certificates != 2 || a.Domain != "a.example" {
		t.Errorf("bob: %+v", a)
	}
	if _, err := s.Address(ctx, "nobody@a.example"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown address: %v", err)
	}
}

// TestLoginIPs: logins are remembered per name and client IP, a later one
// replaces an earlier one (never the other way), and old ones are
// forgotten.
func TestLoginIPs(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	t0 := time.Now().Truncate(time.Millisecond)
	tcheck(t, s.RememberLoginIP(ctx, "alice@a.example", "192.0.2.1", t0, time.Time{}), "remember")
	tcheck(t, s.RememberLoginIP(ctx, "alice@a.example", "2001:db8::", t0.Add(time.Minute), time.Time{}), "remember v6")
	tcheck(t, s.RememberLoginIP(ctx, "alice@a.example", "192.0.2.1", t0.Add(-time.Hour), time.Time{}), "remember an older one")
	tcheck(t, s.RememberLoginIP(ctx, "bob@a.example", "192.0.2.9", t0.Add(-48*time.Hour), time.Time{}), "remember bob")
	got, err := s.LoginIPs(ctx, t0.Add(-24*time.Hour))
	tcheck(t, err, "list")
	if len(got) != 2 || got[0].IP != "192.0.2.1" || !got[0].LastGood.Equal(t0) || got[1].IP != "2001:db8::" {
		t.Fatalf("logins since a day: %+v", got)
	}
	// A login forgets those older than asked.
	tcheck(t, s.RememberLoginIP(ctx, "carol@a.example", "192.0.2.3", t0, t0.Add(-24*time.Hour)), "remember carol")
	all, err := s.LoginIPs(ctx, time.Time{})
	tcheck(t, err, "list all")
	for _, l := range all {
		if l.Name == "bob@a.example" {
			t.Fatalf("bob's two-day-old login kept: %+v", all)
		}
	}
	if len(all) != 3 {
		t.Fatalf("all logins: %+v", all)
	}
}
