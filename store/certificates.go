package store

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Certificate is a local certificate of an address (address-bound) or a
// domain (organization-bound), with metadata for listing. It never holds
// the private key; HasKey says whether one is stored.
type Certificate struct {
	ID          int64
	Owner       string // address or domain, lower case
	Domain      string // the owner's domain
	DER         []byte
	Chain       [][]byte // intermediates that came with it, leaf excluded; DER
	Fingerprint string   // SHA-256 of DER, lower-case hex
	NotBefore   time.Time
	NotAfter    time.Time
	KeyUsage    x509.KeyUsage
	Subject     string
	Issuer      string
	SAN         string // summary: "email:a@b.example, dns:b.example"
	HasKey      bool
	Created     time.Time
}

// Parse parses the certificate's DER.
func (c Certificate) Parse() (*x509.Certificate, error) {
	return x509.ParseCertificate(c.DER)
}

// Fingerprint returns the lower-case hex SHA-256 of a DER certificate, the
// form the store keeps.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// SANSummary summarizes a certificate's subject alternative names, the form
// the store keeps.
func SANSummary(c *x509.Certificate) string {
	var parts []string
	for _, e := range c.EmailAddresses {
		parts = append(parts, "email:"+e)
	}
	for _, d := range c.DNSNames {
		parts = append(parts, "dns:"+d)
	}
	for _, u := range c.URIs {
		parts = append(parts, "uri:"+u.String())
	}
	for _, ip := range c.IPAddresses {
		parts = append(parts, "ip:"+ip.String())
	}
	return strings.Join(parts, ", ")
}

// AddCertificate stores a certificate for owner (an address or a domain,
// see ParseOwner) with its chain and, when key is not nil, its private key,
// encrypted. The owner's domain must exist (else an error wrapping
// ErrNotFound); the same certificate twice for one owner gives an error
// wrapping ErrExists. The caller checks that the certificate binds to the
// owner and is fit for Direct; the store checks only that the key matches.
func (s *Store) AddCertificate(ctx context.Context, owner string, cert *x509.Certificate, chain []*x509.Certificate, key crypto.Signer) (Certificate, error) {
	owner, domain, err := ParseOwner(owner)
	if err != nil {
		return Certificate{}, err
	}
	fp := Fingerprint(cert.Raw)
	var sealed []byte
	if key != nil {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if pub, ok := key.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
			return Certificate{}, errors.New("add certificate: private key does not match the certificate")
		}
		if sealed, err = s.sealKey(key, keyAAD("certificate", fp)); err != nil {
			return Certificate{}, fmt.Errorf("add certificate: %w", err)
		}
	}
	var chainDER []byte
	var chainList [][]byte
	for _, c := range chain {
		chainDER = append(chainDER, c.Raw...)
		chainList = append(chainList, c.Raw)
	}
	now := fromMillis(millis(time.Now()))
	c := Certificate{
		Owner:       owner,
		Domain:      domain,
		DER:         cert.Raw,
		Chain:       chainList,
		Fingerprint: fp,
		NotBefore:   fromMillis(millis(cert.NotBefore)),
		NotAfter:    fromMillis(millis(cert.NotAfter)),
		KeyUsage:    cert.KeyUsage,
		Subject:     cert.Subject.String(),
		Issuer:      cert.Issuer.String(),
		SAN:         SANSummary(cert),
		HasKey:      key != nil,
		Created:     now,
	}
	err = s.change(ctx, func(tx *txn) error {
		if err := domainExists(ctx, tx, domain); err != nil {
			return err
		}
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM certificates WHERE owner = ? AND fingerprint = ?`, owner, fp).Scan(&id)
		if err == nil {
			return fmt.Errorf("certificate %s for %s (id %d): %w", fp, owner, id, ErrExists)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO certificates
			(owner, domain, der, chain, fingerprint, not_before, not_after, key_usage, subject, issuer, san, private_key, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			c.Owner, c.Domain, c.DER, nullBytes(chainDER), c.Fingerprint, millis(c.NotBefore), millis(c.NotAfter),
			int64(c.KeyUsage), c.Subject, c.Issuer, c.SAN, nullBytes(sealed), millis(now)).Scan(&c.ID)
	})
	if err != nil {
		return Certificate{}, fmt.Errorf("add certificate: %w", err)
	}
	return c, nil
}

const certColumns = `id, owner, domain, der, chain, fingerprint, not_before, not_after, key_usage,
	subject, issuer, san, CASE WHEN private_key IS NULL THEN 0 ELSE 1 END, created`

func scanCertificate(r rowScanner) (Certificate, error) {
	var c Certificate
	var chain []byte
	var notBefore, notAfter, ku, hasKey, created int64
	err := r.Scan(&c.ID, &c.Owner, &c.Domain, &c.DER, &chain, &c.Fingerprint, &notBefore, &notAfter, &ku,
		&c.Subject, &c.Issuer, &c.SAN, &hasKey, &created)
	if err != nil {
		return Certificate{}, err
	}
	if len(chain) > 0 {
		certs, err := x509.ParseCertificates(chain)
		if err != nil {
			return Certificate{}, fmt.Errorf("certificate %d: stored chain: %w", c.ID, err)
		}
		for _, x := range certs {
			c.Chain = append(c.Chain, x.Raw)
		}
	}
	c.NotBefore = fromMillis(notBefore)
	c.NotAfter = fromMillis(notAfter)
	c.KeyUsage = x509.KeyUsage(ku)
	c.HasKey = hasKey != 0
	c.Created = fromMillis(created)
	return c, nil
}

// CertFilter selects certificates. Zero fields match everything.
type CertFilter struct {
	Owner  string // exactly this owner (address or domain)
	Domain string // every certificate of the domain, address- and organization-bound
}

// Certificates returns the certificates the filter selects, ordered by
// owner and id. Keys are not included.
func (s *Store) Certificates(ctx context.Context, f CertFilter) ([]Certificate, error) {
	var where []string
	var args []any
	if f.Owner != "" {
		o, _, err := ParseOwner(f.Owner)
		if err != nil {
			return nil, err
		}
		where = append(where, "owner = ?")
		args = append(args, o)
	}
	if f.Domain != "" {
		d, err := NormalizeDomain(f.Domain)
		if err != nil {
			return nil, err
		}
		where = append(where, "domain = ?")
		args = append(args, d)
	}
	q := `SELECT ` + certColumns + ` FROM certificates`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	return queryAll(ctx, s.db, "list certificates", scanCertificate, q+` ORDER BY domain, owner, id`, args...)
}

// Certificate returns one certificate (without its key); an error wrapping
// ErrNotFound if there is no such id.
func (s *Store) Certificate(ctx context.Context, id int64) (Certificate, error) {
	c, err := scanCertificate(s.db.QueryRowContext(ctx, `SELECT `+certColumns+` FROM certificates WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Certificate{}, fmt.Errorf("certificate %d: %w", id, ErrNotFound)
	} else if err != nil {
		return Certificate{}, fmt.Errorf("read certificate %d: %w", id, err)
	}
	return c, nil
}

// PrivateKey decrypts and returns the private key of a certificate: an
// error wrapping ErrNotFound if there is no such certificate, ErrNoKey if it
// has no key. This is the only way a certificate's key leaves the store.
func (s *Store) PrivateKey(ctx context.Context, certID int64) (crypto.Signer, error) {
	var fp string
	var sealed []byte
	err := s.db.QueryRowContext(ctx, `SELECT fingerprint, private_key FROM certificates WHERE id = ?`, certID).Scan(&fp, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("certificate %d: %w", certID, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read certificate %d: %w", certID, err)
	}
	if sealed == nil {
		return nil, fmt.Errorf("certificate %d: %w", certID, ErrNoKey)
	}
	k, err := s.openKey(sealed, keyAAD("certificate", fp))
	if err != nil {
		return nil, fmt.Errorf("certificate %d: %w", certID, err)
	}
	return k, nil
}

// RemoveCertificate removes a certificate and its key, returning what was
// removed.
func (s *Store) RemoveCertificate(ctx context.Context, id int64) (Certificate, error) {
	var c Certificate
	err := s.change(ctx, func(tx *txn) error {
		var err error
		c, err = scanCertificate(tx.QueryRowContext(ctx, `SELECT `+certColumns+` FROM certificates WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("certificate %d: %w", id, ErrNotFound)
		} else if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM certificates WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return Certificate{}, fmt.Errorf("remove certificate: %w", err)
	}
	return c, nil
}
