package store

import (
	"context"
	"crypto"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// LocalCA is a domain's local certificate authority for trials (the key is
// kept apart; see LocalCAKey).
type LocalCA struct {
	Domain     string
	DER        []byte
	NextSerial int64 // serial number of the next certificate it issues
	CRLNumber  int64 // number of the next CRL it signs
	Created    time.Time
}

// Parse parses the CA certificate.
func (ca LocalCA) Parse() (*x509.Certificate, error) {
	return x509.ParseCertificate(ca.DER)
}

// CreateLocalCA stores a domain's local CA certificate and its key,
// encrypted. Serials and CRL numbers start at 1. If the domain already has a
// CA (another process may have made one at the same time) the error wraps
// ErrExists; a missing domain gives ErrNotFound.
func (s *Store) CreateLocalCA(ctx context.Context, domain string, cert *x509.Certificate, key crypto.Signer) (LocalCA, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return LocalCA{}, err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return LocalCA{}, errors.New("create local CA: private key does not match the certificate")
	}
	sealed, err := s.sealKey(key, keyAAD("local CA", Fingerprint(cert.Raw)))
	if err != nil {
		return LocalCA{}, fmt.Errorf("create local CA: %w", err)
	}
	now := fromMillis(millis(time.Now()))
	err = s.change(ctx, func(tx *txn) error {
		if err := domainExists(ctx, tx, d); err != nil {
			return err
		}
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM local_cas WHERE domain = ?`, d); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("local CA of %s: %w", d, ErrExists)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO local_cas (domain, der, private_key, next_serial, crl_number, created)
			VALUES (?, ?, ?, 1, 1, ?)`, d, cert.Raw, sealed, millis(now))
		return err
	})
	if err != nil {
		return LocalCA{}, fmt.Errorf("create local CA: %w", err)
	}
	return LocalCA{Domain: d, DER: cert.Raw, NextSerial: 1, CRLNumber: 1, Created: now}, nil
}

// LocalCA returns a domain's local CA; an error wrapping ErrNotFound if the
// domain has none yet.
func (s *Store) LocalCA(ctx context.Context, domain string) (LocalCA, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return LocalCA{}, err
	}
	var ca LocalCA
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT domain, der, next_serial, crl_number, created FROM local_cas WHERE domain = ?`, d).
		Scan(&ca.Domain, &ca.DER, &ca.NextSerial, &ca.CRLNumber, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return LocalCA{}, fmt.Errorf("local CA of %s: %w", d, ErrNotFound)
	} else if err != nil {
		return LocalCA{}, fmt.Errorf("read local CA of %s: %w", d, err)
	}
	ca.Created = fromMillis(created)
	return ca, nil
}

// LocalCAKey decrypts and returns the private key of a domain's local CA.
func (s *Store) LocalCAKey(ctx context.Context, domain string) (crypto.Signer, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	var der, sealed []byte
	err = s.db.QueryRowContext(ctx, `SELECT der, private_key FROM local_cas WHERE domain = ?`, d).Scan(&der, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("local CA of %s: %w", d, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read local CA of %s: %w", d, err)
	}
	k, err := s.openKey(sealed, keyAAD("local CA", Fingerprint(der)))
	if err != nil {
		return nil, fmt.Errorf("local CA of %s: %w", d, err)
	}
	return k, nil
}

// NextSerial takes the next certificate serial number of a domain's local
// CA; concurrent callers get distinct numbers.
func (s *Store) NextSerial(ctx context.Context, domain string) (int64, error) {
	return s.takeCounter(ctx, domain, "next_serial")
}

// NextCRLNumber takes the next CRL number of a domain's local CA.
func (s *Store) NextCRLNumber(ctx context.Context, domain string) (int64, error) {
	return s.takeCounter(ctx, domain, "crl_number")
}

func (s *Store) takeCounter(ctx context.Context, domain, column string) (int64, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return 0, err
	}
	var v int64
	// column is one of two constants above, never input.
	err = s.db.QueryRowContext(ctx, `UPDATE local_cas SET `+column+` = `+column+` + 1 WHERE domain = ? RETURNING `+column+` - 1`, d).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("local CA of %s: %w", d, ErrNotFound)
	} else if err != nil {
		return 0, fmt.Errorf("local CA of %s: take %s: %w", d, column, err)
	}
	return v, nil
}

// Revocation is a certificate serial number revoked by a local CA.
type Revocation struct {
	Serial *big.Int
	Time   time.Time
	Reason int // CRL reason code (RFC 5280 5.3.1); 0 unspecified
}

// Revoke records that a domain's local CA revoked a serial number. Revoking
// a serial twice keeps the first record.
func (s *Store) Revoke(ctx context.Context, domain string, serial *big.Int, reason int, at time.Time) error {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	if serial == nil || serial.Sign() < 0 {
		return errors.New("revoke: invalid serial number")
	}
	err = s.change(ctx, func(tx *txn) error {
		if ok, err := exists(ctx, tx, `SELECT COUNT(*) FROM local_cas WHERE domain = ?`, d); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("local CA of %s: %w", d, ErrNotFound)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO revocations (domain, serial, revoked, reason) VALUES (?, ?, ?, ?)
			ON CONFLICT (domain, serial) DO NOTHING`, d, serial.String(), millis(at), reason)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke serial %s of %s: %w", serial, d, err)
	}
	return nil
}

// Revocations returns the serials a domain's local CA revoked, oldest
// first.
func (s *Store) Revocations(ctx context.Context, domain string) ([]Revocation, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT serial, revoked, reason FROM revocations WHERE domain = ? ORDER BY revoked, serial`, d)
	if err != nil {
		return nil, fmt.Errorf("list revocations of %s: %w", d, err)
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var serial string
		var at int64
		var r Revocation
		if err := rows.Scan(&serial, &at, &r.Reason); err != nil {
			return nil, fmt.Errorf("list revocations of %s: %w", d, err)
		}
		n, ok := new(big.Int).SetString(serial, 10)
		if !ok {
			return nil, fmt.Errorf("list revocations of %s: bad stored serial %q", d, serial)
		}
		r.Serial = n
		r.Time = fromMillis(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list revocations of %s: %w", d, err)
	}
	return out, nil
}
