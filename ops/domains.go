package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hisp-project/hisp/store"
)

// DomainInfo is a local domain with what it holds, as listed.
type DomainInfo struct {
	Name         string    `json:"name"`
	Addresses    int       `json:"addresses"`
	Certificates int       `json:"certificates"`
	Anchors      int       `json:"anchors"`
	Bundles      int       `json:"bundles"`
	Created      time.Time `json:"created"`
}

func domainInfo(d store.Domain) DomainInfo {
	return DomainInfo{d.Name, d.Addresses, d.Certificates, d.Anchors, d.Bundles, d.Created}
}

// AddDomain makes name a local Direct domain.
func (o *Ops) AddDomain(ctx context.Context, name string) (DomainInfo, error) {
	n, err := store.NormalizeDomain(name)
	if err != nil {
		return DomainInfo{}, invalidf("%v", err)
	}
	d, err := o.st.AddDomain(ctx, n)
	if errors.Is(err, store.ErrExists) {
		return DomainInfo{}, &kindError{store.ErrExists, fmt.Sprintf("domain %s already exists", n)}
	} else if err != nil {
		return DomainInfo{}, err
	}
	o.audit(ctx, "domain.add", d.Name, "")
	return domainInfo(d), nil
}

// Domains lists the local domains.
func (o *Ops) Domains(ctx context.Context) ([]DomainInfo, error) {
	ds, err := o.st.Domains(ctx)
	if err != nil {
		return nil, err
	}
	out := []DomainInfo{}
	for _, d := range ds {
		out = append(out, domainInfo(d))
	}
	return out, nil
}

// RemoveDomain removes a local domain with its addresses, certificates
// and keys, anchors, bundles and local CA; it returns what went.
func (o *Ops) RemoveDomain(ctx context.Context, name string) (DomainInfo, error) {
	n, err := o.domain(ctx, name)
	if err != nil {
		return DomainInfo{}, err
	}
	d, err := o.st.RemoveDomain(ctx, n)
	if err != nil {
		return DomainInfo{}, err
	}
	o.audit(ctx, "domain.remove", d.Name, "with "+DomainContents(domainInfo(d)))
	return domainInfo(d), nil
}

// DomainContents says what a removed domain held.
func DomainContents(d DomainInfo) string {
	return fmt.Sprintf("%d addresses, %d certificates, %d anchors, %d bundles", d.Addresses, d.Certificates, d.Anchors, d.Bundles)
}
