package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hisp-project/hisp/store"
)

// AddressInfo is a local address as listed.
type AddressInfo struct {
	Address  string    `json:"address"`
	Domain   string    `json:"domain"`
	Login    bool      `json:"login"`
	Created  time.Time `json:"created"`
	CertsNum int       `json:"certificates"`
}

// AddAddress makes a local Direct address with a mailbox and a login
// whose password is password (store.MinPasswordLength characters or more).
func (o *Ops) AddAddress(ctx context.Context, address, password string) (AddressInfo, error) {
	addr, domain, err := store.NormalizeAddress(address)
	if err != nil {
		return AddressInfo{}, invalidf("%v", err)
	}
	if len(password) < store.MinPasswordLength {
		return AddressInfo{}, refusedf("the password is shorter than %d characters", store.MinPasswordLength)
	}
	if _, err := o.domain(ctx, domain); err != nil {
		return AddressInfo{}, err
	}
	a, err := o.st.AddAddress(ctx, addr)
	if errors.Is(err, store.ErrExists) {
		return AddressInfo{}, &kindError{store.ErrExists, fmt.Sprintf("address %s already exists (change its password with %s address passwd)", addr, o.prog())}
	} else if err != nil {
		return AddressInfo{}, err
	}
	if err := o.st.SetPassword(ctx, addr, password); err != nil {
		o.st.RemoveAddress(context.WithoutCancel(ctx), addr)
		return AddressInfo{}, err
	}
	o.audit(ctx, "address.add", addr, "")
	return AddressInfo{Address: a.Address, Domain: a.Domain, Login: true, Created: a.Created.UTC()}, nil
}

// SetPassword changes an address's login password.
func (o *Ops) SetPassword(ctx context.Context, address, password string) error {
	if err := o.st.SetPassword(ctx, address, password); err != nil {
		return err
	}
	o.audit(ctx, "address.passwd", address, "")
	return nil
}

// Quota is an address's mailbox quota and use.
type Quota struct {
	Address string `json:"address"`
	// Default: the quota is [limits] mailbox_quota of hisp serve.
	Default bool `json:"default"`
	// Bytes is the address's own quota; 0 with Default false: none.
	Bytes int64 `json:"bytes"`
	Used  int64 `json:"used"`
}

// SetQuota sets an address's quota: store.QuotaDefault, store.QuotaNone or
// a number of bytes. how is the request as given, for the audit record.
func (o *Ops) SetQuota(ctx context.Context, address string, bytes int64, how string) (Quota, error) {
	addr, _, err := store.NormalizeAddress(address)
	if err != nil {
		return Quota{}, invalidf("%v", err)
	}
	if _, err := o.st.Address(ctx, addr); err != nil {
		return Quota{}, err
	}
	if err := o.st.SetQuota(ctx, addr, bytes); err != nil {
		return Quota{}, err
	}
	o.audit(ctx, "address.quota", addr, how)
	return o.Quota(ctx, addr)
}

// Quota returns an address's quota and use.
func (o *Ops) Quota(ctx context.Context, address string) (Quota, error) {
	addr, _, err := store.NormalizeAddress(address)
	if err != nil {
		return Quota{}, invalidf("%v", err)
	}
	if _, err := o.st.Address(ctx, addr); err != nil {
		return Quota{}, err
	}
	a, err := o.st.MailAccount(ctx, addr)
	if err != nil {
		return Quota{}, err
	}
	return Quota{Address: addr, Default: a.QuotaDefault, Bytes: a.Quota, Used: a.Used}, nil
}

// Addresses lists the addresses of a domain, one address (ADDRESS), or all
// (""), each with whether it has a login and how many certificates.
func (o *Ops) Addresses(ctx context.Context, filter string) ([]AddressInfo, error) {
	var list []store.Address
	var err error
	if filter == "" {
		list, err = o.st.Addresses(ctx, "")
	} else {
		owner, _, perr := store.ParseOwner(filter)
		if perr != nil {
			return nil, invalidf("%v", perr)
		}
		if _, derr := store.NormalizeDomain(owner); derr == nil {
			list, err = o.st.Addresses(ctx, owner)
		} else {
			var a store.Address
			a, err = o.st.Address(ctx, owner)
			list = []store.Address{a}
		}
	}
	if err != nil {
		return nil, err
	}
	out := []AddressInfo{}
	for _, a := range list {
		out = append(out, AddressInfo{Address: a.Address, Domain: a.Domain, Login: a.Login, Created: a.Created.UTC(), CertsNum: a.Certificates})
	}
	return out, nil
}

// RemoveAddress removes an address with its mailbox, login and
// certificates.
func (o *Ops) RemoveAddress(ctx context.Context, address string) (string, error) {
	addr, _, err := store.NormalizeAddress(address)
	if err != nil {
		return "", invalidf("%v", err)
	}
	if err := o.st.RemoveAddress(ctx, addr); err != nil {
		return "", err
	}
	o.audit(ctx, "address.remove", addr, "")
	return addr, nil
}
