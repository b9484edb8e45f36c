package gateway

import (
	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/imap"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/track"
)

// The gateway hands its one *store.Store, on SQLite or PostgreSQL, to
// consumers that declare what they need of it as interfaces of their own.
var (
	_ agent.Store = (*store.Store)(nil)
	_ imap.Store  = (*store.Store)(nil)

	_ smtp.AuthStore  = (*store.Store)(nil)
	_ smtp.Auditor    = (*store.Store)(nil)
	_ smtp.LocalStore = (*store.Store)(nil)
	_ smtp.Queue      = (*store.Store)(nil)

	_ track.Store        = (*store.Store)(nil)
	_ track.WebhookStore = (*store.Store)(nil)
)
