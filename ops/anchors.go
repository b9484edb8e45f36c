package ops

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/store"
)

// AnchorInfo is a trust anchor as listed: where it came from, never more
// than its certificate.
type AnchorInfo struct {
	ID          int64      `json:"id"`
	Domain      string     `json:"domain"`
	Direction   string     `json:"direction"`
	Source      string     `json:"source"` // manual or bundle
	BundleID    int64      `json:"bundle_id,omitempty"`
	Subject     string     `json:"subject"`
	NotAfter    time.Time  `json:"not_after"`
	Fingerprint string     `json:"fingerprint_sha256"`
	Created     *time.Time `json:"created,omitempty"`
}

func anchorInfo(a store.Anchor) AnchorInfo {
	j := AnchorInfo{ID: a.ID, Domain: a.Domain, Direction: string(a.Direction), Source: "manual", BundleID: a.BundleID,
		Subject: a.Subject, NotAfter: a.NotAfter, Fingerprint: a.Fingerprint, Created: optTime(a.Created)}
	if a.BundleID != 0 {
		j.Source = "bundle"
	}
	return j
}

// AnchorAdded is one certificate of AddAnchors: a new anchor, or one the
// domain had (Existing; its direction is kept), with warnings.
type AnchorAdded struct {
	Anchor   AnchorInfo
	Existing bool
	Warnings []string
}

// AddAnchors makes each certificate an anchor of a local domain in a
// direction (TA-01): in trusts the signers of received mail, out the
// recipients of sent mail. A certificate that is not a CA anchors only
// itself, an expired one nothing: both are added with a warning.
func (o *Ops) AddAnchors(ctx context.Context, domainArg string, certs []*x509.Certificate, dir store.Direction) ([]AnchorAdded, error) {
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, invalidf("no certificate to add as an anchor")
	}
	if dir == "" {
		dir = store.DirectionBoth
	}
	if _, err := store.ParseDirection(string(dir)); err != nil {
		return nil, invalidf("%v", err)
	}
	now := o.now()
	var out []AnchorAdded
	for _, cert := range certs {
		var res AnchorAdded
		if !cert.IsCA {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is not a CA certificate; it will anchor only itself", cert.Subject))
		}
		if now.After(cert.NotAfter) {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s expired on %s", cert.Subject, day(cert.NotAfter)))
		}
		a, err := o.st.AddAnchor(ctx, domain, cert, dir)
		if errors.Is(err, store.ErrExists) {
			res.Existing = true
		} else if err != nil {
			return out, err
		} else {
			o.audit(ctx, "anchor.add", domain, fmt.Sprintf("anchor %d (%s) %s", a.ID, a.Direction, a.Fingerprint))
		}
		res.Anchor = anchorInfo(a)
		out = append(out, res)
	}
	return out, nil
}

// AddAnchorsPEM is AddAnchors of the certificates in data: PEM (one or
// several) or DER.
func (o *Ops) AddAnchorsPEM(ctx context.Context, domain string, data []byte, dir store.Direction) ([]AnchorAdded, error) {
	certs, err := certfile.ParseCertificates(data)
	if err != nil {
		return nil, invalidf("the anchor is not a certificate: %v", err)
	}
	return o.AddAnchors(ctx, domain, certs, dir)
}

// Anchors lists the anchors of a local domain, or of all ("").
func (o *Ops) Anchors(ctx context.Context, domainArg string) ([]AnchorInfo, error) {
	domain := ""
	if domainArg != "" {
		var err error
		if domain, err = o.domain(ctx, domainArg); err != nil {
			return nil, err
		}
	}
	list, err := o.st.Anchors(ctx, domain)
	if err != nil {
		return nil, err
	}
	out := []AnchorInfo{}
	for _, a := range list {
		out = append(out, anchorInfo(a))
	}
	return out, nil
}

// RemoveAnchor removes an anchor added by hand; one that came with a
// bundle goes with its bundle (the store says so).
func (o *Ops) RemoveAnchor(ctx context.Context, domainArg string, id int64) (AnchorInfo, error) {
	domain, err := o.domain(ctx, domainArg)
	if err != nil {
		return AnchorInfo{}, err
	}
	list, err := o.st.Anchors(ctx, domain)
	if err != nil {
		return AnchorInfo{}, err
	}
	found := false
	for _, a := range list {
		if a.ID == id {
			found = true
			if a.BundleID != 0 {
				return AnchorInfo{}, refusedf("anchor %d comes from bundle %d: remove or change the bundle instead", id, a.BundleID)
			}
		}
	}
	if !found {
		return AnchorInfo{}, &kindError{store.ErrNotFound, fmt.Sprintf("%s has no anchor %d (see %s anchor list %s)", domain, id, o.prog(), domain)}
	}
	a, err := o.st.RemoveAnchor(ctx, domain, id)
	if err != nil {
		return AnchorInfo{}, err
	}
	o.audit(ctx, "anchor.remove", domain, fmt.Sprintf("anchor %d %s", a.ID, a.Fingerprint))
	return anchorInfo(a), nil
}
