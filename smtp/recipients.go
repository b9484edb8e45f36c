package smtp

import (
	"context"
	"errors"

	"github.com/hisp-project/hisp/store"
)

// LocalStore is what LocalRecipients asks; *store.Store implements it.
type LocalStore interface {
	Domain(ctx context.Context, name string) (store.Domain, error)
	TakesMail(ctx context.Context, address string) (bool, error)
}

// LocalRecipients is the backbone's RecipientChecker over the store: the
// recipient's domain must be a local domain (else 554 5.7.1, relaying
// denied) and the address one that takes mail (store.TakesMail: a local
// address, or one a relay account sent as; else 550 5.1.1). It asks the
// store each time, so admin changes apply at once.
type LocalRecipients struct {
	Store LocalStore
}

// CheckRecipient implements RecipientChecker.
func (l LocalRecipients) CheckRecipient(ctx context.Context, rcpt string) *Reply {
	addr, domain, err := store.NormalizeAddress(rcpt)
	if err != nil {
		return errorf(501, "5.1.3", "Bad recipient address syntax")
	}
	if _, err := l.Store.Domain(ctx, domain); errors.Is(err, store.ErrNotFound) {
		return errorf(554, "5.7.1", "Relay access denied: %s is not a domain of this server", domain)
	} else if err != nil {
		return errorf(451, "4.3.0", "Temporary local problem, try again later")
	}
	if ok, err := l.Store.TakesMail(ctx, addr); err != nil {
		return errorf(451, "4.3.0", "Temporary local problem, try again later")
	} else if !ok {
		return errorf(550, "5.1.1", "No such recipient <%s>", addr)
	}
	return nil
}
