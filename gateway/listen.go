package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/imap"
	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/smtp"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
)

// startMail starts the mail side: the agent, the group-committing queue,
// the backbone and submission SMTP servers, the deliverer and IMAP. run
// starts a component that lives until ctx ends.
func (s *server) startMail(ctx context.Context, run func(string, func(context.Context) error), out io.Writer) error {
	cfg := s.cfg
	var err error
	if s.agent, err = s.newAgent(); err != nil {
		return err
	}
	s.queue = store.NewQueue(s.st, store.QueueOptions{})
	tlsConfig, err := LoadTLS(cfg.TLS.Cert, cfg.TLS.Key, cfg.Data, cfg.Hostname)
	if err != nil {
		return err
	}
	// One login limiter for IMAP and submission: guesses at an address's
	// password count together, whichever way they come.
	logins := loginlimit.New(nil)
	run("login-ips", s.rememberLoginIPs(ctx, logins))
	var imapSrv *imap.Server
	if cfg.Listen.IMAP != "" || cfg.Listen.IMAPS != "" {
		// Mail filed by other nodes of a PostgreSQL store wakes IDLE
		// clients here at once (LISTEN/NOTIFY); nil for SQLite.
		changes := s.st.MailNotifications(ctx, func(msg string, err error) { s.log.Warn(msg, "err", err) })
		imapSrv, err = imap.New(imap.Options{Store: s.st, TLSConfig: tlsConfig, Logger: s.log, Loopback: true, Logins: logins,
			MaxMessageSize: int64(cfg.Limits.MessageSize), Changes: changes})
		if err != nil {
			return err
		}
	}
	m := s.newMail(imapSrv)
	s.track.attach(m) // delivery tracking (track.go)
	deliverer, err := s.newDeliverer(m)
	if err != nil {
		return err
	}
	m.wake = deliverer.Wake
	m.handoff = deliverer
	ls, err := s.mailListeners(m, imapSrv, tlsConfig, logins)
	if err != nil {
		return err
	}
	if err := s.serveAll(ls, run, out); err != nil {
		return err
	}
	run("deliverer", deliverer.Run)
	return nil
}

// newAgent is the agent of the configuration: discovery, validation with
// the [trust] revocation policy, per-partner algorithms, clinical content.
func (s *server) newAgent() (*agent.Agent, error) {
	cfg := s.cfg
	policy := map[string]trust.RevocationPolicy{"refuse": trust.RefuseUnavailable, "allow": trust.AllowUnavailable,
		"defer": trust.DeferUnavailable}[cfg.Trust.Revocation]
	agentOpts, err := agentProfiles(agent.Options{
		Store: s.st,
		Discoverer: certs.NewDiscoverer(certs.DiscoveryOptions{Resolver: cfg.DNS.Resolver,
			DNSTimeout: cfg.DNS.Timeout.Duration, LDAPTimeout: cfg.DNS.LDAPTimeout.Duration, Logger: s.log}),
		Validator: trust.NewValidator(trust.Options{Revocation: policy, FailureTTL: cfg.Trust.RefetchAfter.Duration, Logger: s.log}),
		Hostname:  cfg.Hostname,
		Logger:    s.log,
		Content:   contentOptions(cfg), // clinical content (issue 10)
	}, cfg.Outbound) // per-partner algorithms (profiles.go)
	if err != nil {
		return nil, err
	}
	return agent.New(agentOpts), nil
}

// retrySchedule is the queue's one retry schedule, of deliveries and of
// recipients deferred at submission alike ([outbound] retry_*).
func (s *server) retrySchedule() store.Backoff {
	o := s.cfg.Outbound
	return store.Backoff{First: o.RetryFirst.Duration, Max: o.RetryMax.Duration, Attempts: o.RetryAttempts, Jitter: 0.1}
}

// newMail joins the agent, the queue and the mailboxes (filed through the
// IMAP server when it runs, so that IDLE sessions hear of a message at
// once).
func (s *server) newMail(imapSrv *imap.Server) *mail {
	m := &mail{st: s.st, agent: s.agent, queue: s.queue, hostname: s.cfg.Hostname, log: s.log, wake: func() {},
		filed: func() {}, retry: s.retrySchedule(), now: s.now, revocationGrace: s.cfg.Trust.RevocationGrace.Duration}
	if imapSrv != nil {
		m.filed = imapSrv.Notify
	}
	m.deliver = func(ctx context.Context, address, mailbox string, msg []byte, flags []string) error {
		var err error
		if imapSrv != nil {
			_, err = imapSrv.Deliver(ctx, address, mailbox, msg, flags, s.now())
		} else {
			_, err = s.st.Deliver(ctx, address, mailbox, msg, flags, s.now())
		}
		return err
	}
	return m
}

// newDeliverer is the queue's deliverer: remote recipients over MX or
// [outbound.routes], local ones and DSNs through m, deferred recipients
// sealed again by m.
func (s *server) newDeliverer(m *mail) (*smtp.Deliverer, error) {
	cfg := s.cfg
	routes, mxTLS, err := outboundRoutes(cfg.Outbound) // outbound.go
	if err != nil {
		return nil, err
	}
	return smtp.NewDeliverer(smtp.DelivererConfig{
		Queue: s.st, Local: m, Bouncer: m, Sealer: m, Hostname: cfg.Hostname, Resolver: cfg.DNS.Resolver,
		Port: cfg.Outbound.Port, Routes: routes, TLS: mxTLS,
		Backoff:      s.retrySchedule(),
		DelayedAfter: cfg.Outbound.DelayedDSN.Duration, Logger: s.log,
		Attempts:     s.meter.get().attempts, // GET /metrics (metrics.go)
		ClaimRenewal: cfg.Store.Lease.Duration / 3,
		Leader:       s.leader(smtp.NoticesLease),
	})
}

// mailListener is one listener of the mail side.
type mailListener struct {
	name, addr, what string
	serve            func(context.Context, net.Listener) error
	busy             []byte // the answer over the connection limits
}

// mailListeners are the configured listeners of the mail side: backbone
// and submission SMTP, IMAP and IMAPS.
func (s *server) mailListeners(m *mail, imapSrv *imap.Server, tlsConfig *tls.Config, logins *loginlimit.Limiter) ([]mailListener, error) {
	cfg := s.cfg
	common := smtp.Config{Hostname: cfg.Hostname, TLSConfig: tlsConfig, Logger: s.log, Audit: s.st,
		Transactions: s.meter.get().transactions, Refusals: s.meter.get().refusals} // GET /metrics (metrics.go)
	var ls []mailListener
	if cfg.Listen.SMTP != "" {
		bbCfg := common
		bbCfg.MaxMessageBytes, _ = messageSizes(cfg.Limits) // outbound.go
		bb, err := smtp.NewBackbone(smtp.BackboneConfig{Config: bbCfg, Recipients: smtp.LocalRecipients{Store: s.st}, Handler: m})
		if err != nil {
			return nil, err
		}
		ls = append(ls, mailListener{"smtp", cfg.Listen.SMTP, "backbone, other HISPs deliver here", bb.Serve, smtpBusy(cfg.Hostname)})
	}
	if cfg.Listen.Submission != "" {
		subCfg := common
		subCfg.TLSConfig = relayClientCertificates(tlsConfig, s.st)
		_, subCfg.MaxMessageBytes = messageSizes(cfg.Limits) // outbound.go
		sub, err := smtp.NewSubmission(smtp.SubmissionConfig{Config: subCfg, Auth: smtp.StoreAuthenticator{Store: s.st}, Handler: m,
			Logins: logins})
		if err != nil {
			return nil, err
		}
		ls = append(ls, mailListener{"submission", cfg.Listen.Submission, "mail clients and EHRs, STARTTLS and AUTH", sub.Serve, smtpBusy(cfg.Hostname)})
	}
	if cfg.Listen.IMAP != "" {
		ls = append(ls, mailListener{"imap", cfg.Listen.IMAP, "mailboxes, STARTTLS", imapSrv.Serve, imapBusy})
	}
	if cfg.Listen.IMAPS != "" {
		ls = append(ls, mailListener{"imaps", cfg.Listen.IMAPS, "mailboxes, implicit TLS", imapSrv.ServeTLS, nil})
	}
	return ls, nil
}

// serveAll opens every listener before serving any, so that a taken port
// fails the start as a whole, then serves each with run.
func (s *server) serveAll(ls []mailListener, run func(string, func(context.Context) error), out io.Writer) error {
	opened := make([]net.Listener, 0, len(ls))
	for _, l := range ls {
		nl, err := net.Listen("tcp", l.addr)
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return fmt.Errorf("listen %s %s: %w", l.name, l.addr, err)
		}
		opened = append(opened, s.limits.wrap(l.name, nl, l.busy))
	}
	for i, l := range ls {
		nl, serve := opened[i], l.serve
		run(l.name, func(ctx context.Context) error { return serve(ctx, nl) })
		fmt.Fprintf(out, "  %s (%s): %s\n", l.name, l.what, nl.Addr())
	}
	return nil
}

// relayClientCertificates is the submission listener's TLS configuration:
// base, asking the client for a certificate (without requiring one) only
// while some relay account logs in with one, so that ordinary mail clients
// are not prompted for a certificate. The relay's login checks it
// (smtp.StoreAuthenticator).
func relayClientCertificates(base *tls.Config, st *store.Store) *tls.Config {
	if base == nil {
		return nil
	}
	asking := base.Clone()
	asking.ClientAuth = tls.RequestClientCert
	c := base.Clone()
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		want, err := st.RelaysWantClientCertificates(hello.Context())
		if err != nil || !want {
			return nil, nil
		}
		return asking, nil
	}
	return c
}

// contentOptions is the agent's clinical content layer from [outbound] xdm,
// [outbound.xdm_domains] and [inbound].
func contentOptions(cfg config.Config) *agent.ContentOptions {
	return &agent.ContentOptions{
		XDM:          cfg.Outbound.XDMPolicy(),
		XDMDomains:   cfg.Outbound.XDMDomains,
		XDMDocuments: cfg.Inbound.XDMDocuments,
		CCDAHTML:     cfg.Inbound.CCDAHTML,
		Software:     "hisp (Direct HISP) on " + cfg.Hostname,
	}
}
