package agent

import (
	"context"
	"crypto"

	"github.com/hisp-project/hisp/store"
)

// Store is the part of the store the agent uses; *store.Store implements
// it, on SQLite and on PostgreSQL alike.
type Store interface {
	Directory
	AuditLog
}

// Directory is what the agent reads and caches (cache.go, policy.go): the
// local domains with their anchors and trust policies, the local
// certificates and their keys, and which addresses take mail.
type Directory interface {
	// Changed is the configuration's change counter; the agent reloads its
	// cache when it moves.
	Changed(ctx context.Context) (int64, error)
	Domains(ctx context.Context) ([]store.Domain, error)
	Anchors(ctx context.Context, domain string) ([]store.Anchor, error)
	TrustPolicies(ctx context.Context, domain string) ([]store.TrustPolicy, error)

	// Certificates of a local owner (an address or a domain) and the
	// private key of one of them (AS-06, IN-02).
	Certificates(ctx context.Context, f store.CertFilter) ([]store.Certificate, error)
	PrivateKey(ctx context.Context, certID int64) (crypto.Signer, error)

	// TakesMail reports whether an address has a taker: a local address,
	// or one a relay account sent as.
	TakesMail(ctx context.Context, address string) (bool, error)
}

// AuditLog receives the agent's audit records: one at a time with
// Options.SyncAudit, else in batches from the agent's audit writer.
type AuditLog interface {
	Audit(ctx context.Context, e store.Event) error
	AuditBatch(ctx context.Context, events []store.Event) error
}
