package store

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Direction says which way a trust anchor applies for its local domain.
type Direction string

// Directions: inbound anchors decide which senders we accept, outbound ones
// which recipients we send to.
const (
	DirectionIn   Direction = "in"
	DirectionOut  Direction = "out"
	DirectionBoth Direction = "both"
)

// ParseDirection parses "in", "out" or "both".
func ParseDirection(s string) (Direction, error) {
	switch d := Direction(strings.ToLower(s)); d {
	case DirectionIn, DirectionOut, DirectionBoth:
		return d, nil
	}
	return "", fmt.Errorf("invalid direction %q: want in, out or both", s)
}

// Includes reports whether an anchor of direction d applies to direction x
// (DirectionIn or DirectionOut).
func (d Direction) Includes(x Direction) bool {
	return d == DirectionBoth || d == x
}

// Anchor is a trust anchor of a local domain: added by hand (BundleID 0) or
// from a trust bundle.
type Anchor struct {
	ID          int64
	Domain      string
	DER         []byte
	Fingerprint string // SHA-256 of DER, lower-case hex
	Subject     string
	NotAfter    time.Time
	Direction   Direction
	BundleID    int64 // 0: added by hand
	Created     time.Time
}

// Source is "manual" or "bundle N".
func (a Anchor) Source() string {
	if a.BundleID == 0 {
		return "manual"
	}
	return "bundle " + strconv.FormatInt(a.BundleID, 10)
}

// Parse parses the anchor's DER.
func (a Anchor) Parse() (*x509.Certificate, error) {
	return x509.ParseCertificate(a.DER)
}

// AddAnchor adds a trust anchor to a domain by hand. The domain must exist
// (else an error wrapping ErrNotFound); a certificate the domain already has
// as a manual anchor gives an error wrapping ErrExists, with the existing
// anchor returned.
func (s *Store) AddAnchor(ctx context.Context, domain string, cert *x509.Certificate, dir Direction) (Anchor, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Anchor{}, err
	}
	if _, err := ParseDirection(string(dir)); err != nil {
		return Anchor{}, err
	}
	now := fromMillis(millis(time.Now()))
	a := Anchor{
		Domain:      d,
		DER:         cert.Raw,
		Fingerprint: Fingerprint(cert.Raw),
		Subject:     cert.Subject.String(),
		NotAfter:    fromMillis(millis(cert.NotAfter)),
		Direction:   dir,
		Created:     now,
	}
	var existing Anchor
	err = s.change(ctx, func(tx *txn) error {
		if err := domainExists(ctx, tx, d); err != nil {
			return err
		}
		var err error
		existing, err = scanAnchor(tx.QueryRowContext(ctx, `SELECT `+anchorColumns+` FROM anchors
			WHERE domain = ? AND fingerprint = ? AND bundle_id IS NULL`, d, a.Fingerprint))
		if err == nil {
			return fmt.Errorf("anchor %s for %s (id %d): %w", a.Fingerprint, d, existing.ID, ErrExists)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO anchors (domain, bundle_id, der, fingerprint, subject, not_after, direction, created)
			VALUES (?, NULL, ?, ?, ?, ?, ?, ?) RETURNING id`,
			a.Domain, a.DER, a.Fingerprint, a.Subject, millis(a.NotAfter), string(a.Direction), millis(now)).Scan(&a.ID)
	})
	if errors.Is(err, ErrExists) {
		return existing, fmt.Errorf("add anchor: %w", err)
	} else if err != nil {
		return Anchor{}, fmt.Errorf("add anchor: %w", err)
	}
	return a, nil
}

const anchorColumns = `id, domain, der, fingerprint, subject, not_after, direction, bundle_id, created`

func scanAnchor(r rowScanner) (Anchor, error) {
	var a Anchor
	var notAfter, created int64
	var dir string
	var bundle sql.NullInt64
	if err := r.Scan(&a.ID, &a.Domain, &a.DER, &a.Fingerprint, &a.Subject, &notAfter, &dir, &bundle, &created); err != nil {
		return Anchor{}, err
	}
	a.NotAfter = fromMillis(notAfter)
	a.Direction = Direction(dir)
	a.BundleID = bundle.Int64
	a.Created = fromMillis(created)
	return a, nil
}

// Anchors returns the anchors of a domain (all domains for ""), manual and
// from bundles, ordered by domain and id.
func (s *Store) Anchors(ctx context.Context, domain string) ([]Anchor, error) {
	q := `SELECT ` + anchorColumns + ` FROM anchors`
	q, args, err := whereDomain(q, "domain", domain)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, "list anchors", scanAnchor, q+` ORDER BY domain, id`, args...)
}

// BundleAnchors returns the anchors a bundle holds now, ordered by id.
func (s *Store) BundleAnchors(ctx context.Context, bundleID int64) ([]Anchor, error) {
	return queryAll(ctx, s.db, fmt.Sprintf("list anchors of bundle %d", bundleID), scanAnchor, `SELECT `+anchorColumns+` FROM anchors WHERE bundle_id = ? ORDER BY id`, bundleID)
}

// RemoveAnchor removes a manual anchor of a domain. Anchors that came from
// a bundle go with their bundle; removing one is refused.
func (s *Store) RemoveAnchor(ctx context.Context, domain string, id int64) (Anchor, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Anchor{}, err
	}
	var a Anchor
	err = s.change(ctx, func(tx *txn) error {
		var err error
		a, err = scanAnchor(tx.QueryRowContext(ctx, `SELECT `+anchorColumns+` FROM anchors WHERE id = ? AND domain = ?`, id, d))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("anchor %d of %s: %w", id, d, ErrNotFound)
		} else if err != nil {
			return err
		}
		if a.BundleID != 0 {
			return fmt.Errorf("anchor %d comes from bundle %d: remove or change the bundle instead", id, a.BundleID)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM anchors WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return Anchor{}, fmt.Errorf("remove anchor: %w", err)
	}
	return a, nil
}

// Bundle is a trust bundle source of a local domain: a PKCS#7 file or URL
// whose certificates become the domain's anchors, refreshed on an interval.
type Bundle struct {
	ID        int64
	Domain    string
	Location  string // https URL, http URL or absolute file name
	Signer    []byte // DER of the pinned signer for CMS-signed bundles; nil if unsigned
	Direction Direction
	Refresh   time.Duration

	// Set by the refresher.
	Checksum    string // of the last good bundle data
	LastAttempt time.Time
	LastSuccess time.Time
	LastError   string // of the last attempt; "" after a success
	Anchors     int    // number of anchors it holds now

	Created time.Time
}

// AddBundle adds a bundle source from the Domain, Location, Signer,
// Direction and Refresh of b; the domain must exist. The same location twice
// for a domain gives an error wrapping ErrExists.
func (s *Store) AddBundle(ctx context.Context, b Bundle) (Bundle, error) {
	d, err := NormalizeDomain(b.Domain)
	if err != nil {
		return Bundle{}, err
	}
	if _, err := ParseDirection(string(b.Direction)); err != nil {
		return Bundle{}, err
	}
	if b.Location == "" {
		return Bundle{}, errors.New("add bundle: empty location")
	}
	if b.Refresh <= 0 {
		return Bundle{}, errors.New("add bundle: refresh interval must be positive")
	}
	now := fromMillis(millis(time.Now()))
	nb := Bundle{Domain: d, Location: b.Location, Signer: b.Signer, Direction: b.Direction,
		Refresh: b.Refresh.Truncate(time.Second), Created: now}
	err = s.change(ctx, func(tx *txn) error {
		if err := domainExists(ctx, tx, d); err != nil {
			return err
		}
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM bundles WHERE domain = ? AND location = ?`, d, b.Location).Scan(&id)
		if err == nil {
			return fmt.Errorf("bundle %s for %s (id %d): %w", b.Location, d, id, ErrExists)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO bundles
			(domain, location, signer, direction, refresh_seconds, checksum, last_attempt, last_success, last_error, created)
			VALUES (?, ?, ?, ?, ?, '', NULL, NULL, '', ?) RETURNING id`,
			d, b.Location, nullBytes(b.Signer), string(b.Direction), int64(nb.Refresh/time.Second), millis(now)).Scan(&nb.ID)
	})
	if err != nil {
		return Bundle{}, fmt.Errorf("add bundle: %w", err)
	}
	return nb, nil
}

const bundleQuery = `SELECT b.id, b.domain, b.location, b.signer, b.direction, b.refresh_seconds, b.checksum,
	b.last_attempt, b.last_success, b.last_error, b.created,
	(SELECT COUNT(*) FROM anchors a WHERE a.bundle_id = b.id)
	FROM bundles b`

func scanBundle(r rowScanner) (Bundle, error) {
	var b Bundle
	var dir string
	var refresh, created int64
	var attempt, success sql.NullInt64
	if err := r.Scan(&b.ID, &b.Domain, &b.Location, &b.Signer, &dir, &refresh, &b.Checksum,
		&attempt, &success, &b.LastError, &created, &b.Anchors); err != nil {
		return Bundle{}, err
	}
	b.Direction = Direction(dir)
	b.Refresh = time.Duration(refresh) * time.Second
	b.LastAttempt = nullMillis(attempt)
	b.LastSuccess = nullMillis(success)
	b.Created = fromMillis(created)
	return b, nil
}

// Bundles returns the bundles of a domain (all domains for ""), ordered by
// domain and id.
func (s *Store) Bundles(ctx context.Context, domain string) ([]Bundle, error) {
	q := bundleQuery
	q, args, err := whereDomain(q, "b.domain", domain)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, "list bundles", scanBundle, q+` ORDER BY b.domain, b.id`, args...)
}

// Bundle returns one bundle; an error wrapping ErrNotFound if there is no
// such id.
func (s *Store) Bundle(ctx context.Context, id int64) (Bundle, error) {
	b, err := scanBundle(s.db.QueryRowContext(ctx, bundleQuery+` WHERE b.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Bundle{}, fmt.Errorf("bundle %d: %w", id, ErrNotFound)
	} else if err != nil {
		return Bundle{}, fmt.Errorf("read bundle %d: %w", id, err)
	}
	return b, nil
}

// RemoveBundle removes a bundle of a domain and the anchors it brought.
func (s *Store) RemoveBundle(ctx context.Context, domain string, id int64) (Bundle, error) {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Bundle{}, err
	}
	var b Bundle
	err = s.change(ctx, func(tx *txn) error {
		var err error
		b, err = scanBundle(tx.QueryRowContext(ctx, bundleQuery+` WHERE b.id = ? AND b.domain = ?`, id, d))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("bundle %d of %s: %w", id, d, ErrNotFound)
		} else if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM bundles WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return Bundle{}, fmt.Errorf("remove bundle: %w", err)
	}
	return b, nil
}

// SetBundleAnchors records a successful fetch of a bundle at time at: when
// checksum differs from the stored one, the bundle's anchors are replaced by
// certs in one transaction (readers see the old set or the new one, never a
// mix); when it is the same, only the times are updated. Duplicate
// certificates are stored once.
func (s *Store) SetBundleAnchors(ctx context.Context, id int64, certs []*x509.Certificate, checksum string, at time.Time) error {
	err := s.tx(ctx, func(tx *txn) error {
		var domain, dir, old string
		err := tx.QueryRowContext(ctx, `SELECT domain, direction, checksum FROM bundles WHERE id = ?`, id).Scan(&domain, &dir, &old)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("bundle %d: %w", id, ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE bundles SET checksum = ?, last_attempt = ?, last_success = ?, last_error = '' WHERE id = ?`,
			checksum, millis(at), millis(at), id); err != nil {
			return err
		}
		if checksum == old && checksum != "" {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM anchors WHERE bundle_id = ?`, id); err != nil {
			return err
		}
		seen := map[string]bool{}
		now := millis(time.Now())
		for _, c := range certs {
			fp := Fingerprint(c.Raw)
			if seen[fp] {
				continue
			}
			seen[fp] = true
			if _, err := tx.ExecContext(ctx, `INSERT INTO anchors (domain, bundle_id, der, fingerprint, subject, not_after, direction, created)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				domain, id, c.Raw, fp, c.Subject.String(), millis(c.NotAfter), dir, now); err != nil {
				return err
			}
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("set bundle anchors: %w", err)
	}
	return nil
}

// BundleFailed records a failed fetch of a bundle at time at; its anchors
// stay as they were (the last good set).
func (s *Store) BundleFailed(ctx context.Context, id int64, at time.Time, reason string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE bundles SET last_attempt = ?, last_error = ? WHERE id = ?`, millis(at), reason, id)
	if err != nil {
		return fmt.Errorf("record bundle failure: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("record bundle failure: %w", err)
	} else if n == 0 {
		return fmt.Errorf("record bundle failure: bundle %d: %w", id, ErrNotFound)
	}
	return nil
}
