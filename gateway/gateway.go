// Package gateway joins hisp's parts into one running HISP: the store, the
// Security/Trust Agent, the SMTP listeners and the deliverer, the IMAP
// mailboxes, DNS publishing of local certificates, the CRLs of the local
// CAs and the trust bundle refresher. `hisp serve` and `hisp sandbox` run
// it; end-to-end tests run it in-process.
package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/certs"
	"github.com/hisp-project/hisp/certs/devca"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/trust"
	"github.com/hisp-project/hisp/web"
)

// server is one running hisp: its store and listeners.
type server struct {
	cfg   config.Config
	st    *store.Store
	log   *slog.Logger
	crlMu sync.Mutex // one CRL signing at a time, so CRL numbers increase
	crls  map[string]cachedCRL
	meter gatewayMetrics // the counters of GET /metrics (metrics.go)
	// limits bounds every listener's connections (limits.go).
	limits *listenerLimits
	queue  *store.Queue
	agent  *agent.Agent
	track  *tracking // delivery tracking (track.go)
	// jobs are the jobs this node runs under a job lease (leader),
	// released at shutdown.
	jobs []string
}

type cachedCRL struct {
	der     []byte
	version int64 // store change counter it was made at
	until   time.Time
}

// StoreLocation is where the store of cfg is: SQLite in the data
// directory, or the PostgreSQL database of [store] url.
func StoreLocation(cfg config.Config) store.Location {
	return store.Location{Dir: cfg.Data, URL: cfg.Store.URL, MasterKeyFile: cfg.Store.MasterKeyFile}
}

// Run serves cfg until ctx ends, then shuts down in order: stop accepting,
// let running transactions finish, stop the deliverer, close the store. It
// prints what it listens on to out.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, out io.Writer) error {
	st, err := store.OpenAt(ctx, StoreLocation(cfg))
	if err != nil {
		return err
	}
	defer st.Close()
	// This process as a node of the store: its claims on the queue and its
	// jobs last [store] lease without a renewal.
	node := cfg.Store.Node
	if node == "" {
		node = store.DefaultNode(st.Dir())
	}
	st.SetNode(node, cfg.Store.Lease.Duration)
	if err := st.HoldNode(ctx); err != nil {
		return err
	}
	if st.Location().Postgres() {
		// Several nodes log to one place: each line says whose it is.
		logger = logger.With("node", node)
	}
	// [limits] mailbox_quota: the quota of addresses without their own.
	st.SetDefaultQuota(int64(cfg.Limits.MailboxQuota))
	// A failing component stops the others through ctx.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st.SetCredentialCache(cfg.Limits.CredentialCache.Duration)
	s := &server{cfg: cfg, st: st, log: logger, crls: map[string]cachedCRL{}}
	s.limits = newListenerLimits(cfg.Limits.Connections, cfg.Limits.ConnectionsPerIP, countListeners(cfg.Listen),
		s.meter.get().connRefused, logger)

	var wg sync.WaitGroup
	errc := make(chan error, 32) // room for every component to fail at once
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	abort := func(err error) error { cancel(); wg.Wait(); return err }
	fmt.Fprintf(out, "hisp serving data directory %s\n", cfg.Data)
	if st.Location().Postgres() {
		run("node", s.holdNode)
	}
	ldapTarget, ldapPort, err := s.startLDAP(run, out) // ldap.go
	if err != nil {
		return abort(err)
	}
	if err := s.startDNS(run, out, ldapTarget, ldapPort); err != nil {
		return abort(err)
	}
	if err := s.startAdmin(run, out); err != nil {
		return abort(err)
	}
	s.track = s.startTracking(run)
	// The refreshed anchors reach validation through the store
	// (storeBundles.SaveState); the Refresher's own set is its bookkeeping.
	refresher := trust.NewRefresher(storeBundles{st}, &trust.Bundles{}, trust.RefresherOptions{Logger: logger,
		Leader: s.leader("bundles")})
	run("bundles", refresher.Run)

	if err := s.startMail(ctx, run, out); err != nil {
		return abort(err)
	}
	fmt.Fprintln(out, "hisp ready")
	logger.Info("hisp started", "data", cfg.Data)
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err = <-errc:
		logger.Error("stopping after failure", "err", err)
		cancel()
	}
	wg.Wait()
	// Listeners and the deliverer are done: nothing enqueues or audits
	// any more.
	if s.queue != nil {
		s.queue.Close()
		// Messages per commit show how well the group commit works.
		qs := s.queue.Stats()
		logger.Info("queue stopped", "messages", qs.Messages, "commits", qs.Commits, "failed", qs.Failed)
	}
	if s.agent != nil {
		s.agent.Close()
	}
	// Hand this node's jobs over at once (a drained node), instead of when
	// their leases run out.
	for _, job := range s.jobs {
		if rerr := st.ReleaseLease(context.WithoutCancel(ctx), job); rerr != nil {
			logger.Warn("release job lease", "job", job, "err", rerr)
		}
	}
	return err
}

// startDNS starts the authoritative DNS server that publishes the local
// certificates ([listen] dns), pointing at the LDAP directory when one
// runs.
func (s *server) startDNS(run func(string, func(context.Context) error), out io.Writer, ldapTarget string, ldapPort uint16) error {
	if s.cfg.Listen.DNS == "" {
		return nil
	}
	pc, l, err := listenDNS(s.cfg.Listen.DNS)
	if err != nil {
		return err
	}
	l = s.limits.wrap("dns", l, nil)
	limited := s.meter.get().dnsLimited // GET /metrics (metrics.go)
	pub := certs.NewPublisher(storeCerts{s.st}, certs.PublisherOptions{Hostname: s.cfg.Hostname, Logger: s.log,
		RateLimit: certs.RateLimit{Limited: func(slipped bool) {
			if slipped {
				limited.Inc("slipped")
			} else {
				limited.Inc("dropped")
			}
		}}, LDAPTarget: ldapTarget, LDAPPort: ldapPort, MX: s.cfg.PublishedMX()})
	run("dns", func(ctx context.Context) error { return pub.Serve(ctx, pc, l) })
	fmt.Fprintf(out, "  dns (CERT publishing, UDP and TCP): %s\n", l.Addr())
	return nil
}

// startAdmin starts the admin listeners: plain HTTP ([listen] admin, meant
// for loopback) and HTTPS ([listen] admin_https).
func (s *server) startAdmin(run func(string, func(context.Context) error), out io.Writer) error {
	cfg := s.cfg
	if cfg.Listen.Admin == "" && cfg.Listen.AdminHTTPS == "" {
		return nil
	}
	handler := s.adminHandler()
	serveHTTP := func(name string, l net.Listener) {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(s.log.With("listener", name).Handler(), slog.LevelWarn)}
		run(name, func(ctx context.Context) error {
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
			}()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if cfg.Listen.Admin != "" {
		l, err := net.Listen("tcp", cfg.Listen.Admin)
		if err != nil {
			return fmt.Errorf("listen admin %s: %w", cfg.Listen.Admin, err)
		}
		if !isLoopbackListener(l) {
			s.log.Warn("the admin listener is not on loopback and has no TLS: admin logins and API tokens cross the network in clear; use [listen] admin_https",
				"addr", l.Addr().String())
		}
		serveHTTP("admin", s.limits.wrap("admin", l, adminBusy))
		fmt.Fprintf(out, "  admin (HTTP: CRLs at /crl/DOMAIN.crl, API at /api/v1/): http://%s/\n", l.Addr())
	}
	if cfg.Listen.AdminHTTPS != "" {
		tlsConfig, err := LoadTLS(cfg.TLS.Cert, cfg.TLS.Key, cfg.Data, cfg.Hostname)
		if err != nil {
			return err
		}
		l, err := net.Listen("tcp", cfg.Listen.AdminHTTPS)
		if err != nil {
			return fmt.Errorf("listen admin_https %s: %w", cfg.Listen.AdminHTTPS, err)
		}
		serveHTTP("admin_https", s.limits.wrapTLS("admin_https", l, tlsConfig))
		fmt.Fprintf(out, "  admin_https (HTTPS: the admin page, API, metrics and CRLs): https://%s/\n", l.Addr())
	}
	return nil
}

// listenDNS opens UDP and TCP on the same address (port 0: one free port).
func listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	for range 10 {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen dns %s: %w", addr, err)
		}
		pc, err := net.ListenPacket("udp", l.Addr().String())
		if err == nil {
			return pc, l, nil
		}
		l.Close()
		if !strings.HasSuffix(addr, ":0") {
			return nil, nil, fmt.Errorf("listen dns %s: %w", addr, err)
		}
	}
	return nil, nil, fmt.Errorf("listen dns %s: no port free for both UDP and TCP", addr)
}

// adminHandler serves the admin listener: local CA CRLs (the CRL
// distribution point of certificates from hisp cert issue), a health
// check, metrics, and package web's admin page and API.
func (s *server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.st.Changed(r.Context()); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /crl/{file}", func(w http.ResponseWriter, r *http.Request) {
		// Unknown and malformed names are the client's mistake (or a
		// scan): 404 and one short line, never the requested name at
		// ERROR (a malformed one is not logged at all).
		name, ok := strings.CutSuffix(r.PathValue("file"), ".crl")
		domain, err := store.NormalizeDomain(name)
		if !ok || err != nil {
			s.log.Info("CRL not found: malformed name", "remote", r.RemoteAddr, "len", len(r.PathValue("file")))
			http.NotFound(w, r)
			return
		}
		der, err := s.crl(r.Context(), domain)
		if errors.Is(err, store.ErrNotFound) {
			s.log.Info("CRL not found: no local CA", "remote", r.RemoteAddr, "domain", domain)
			http.NotFound(w, r)
			return
		}
		if err != nil {
			s.log.Error("make CRL", "domain", domain, "err", err)
			http.Error(w, "CRL unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(der)
	})
	mux.Handle("GET /metrics", s.metricsAuth(s.metricsHandler())) // Prometheus (metrics.go)
	// The admin page and the JSON API (tracking and admin operations).
	web.Register(mux, web.Options{Store: s.st, Log: s.log, Hostname: s.cfg.Hostname, CRLBase: s.cfg.BaseURL()})
	return mux
}

// crl returns the current CRL of a domain's local CA, signing a new one
// when revocations changed or the last one is a day old.
func (s *server) crl(ctx context.Context, domain string) ([]byte, error) {
	version, err := s.st.Changed(ctx)
	if err != nil {
		return nil, err
	}
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	now := time.Now()
	if c, ok := s.crls[domain]; ok && c.version == version && now.Before(c.until) {
		return c.der, nil
	}
	lca, err := s.st.LocalCA(ctx, domain)
	if err != nil {
		return nil, err
	}
	key, err := s.st.LocalCAKey(ctx, domain)
	if err != nil {
		return nil, err
	}
	ca, err := devca.Load(domain, lca.DER, key)
	if err != nil {
		return nil, err
	}
	revs, err := s.st.Revocations(ctx, domain)
	if err != nil {
		return nil, err
	}
	entries := make([]x509.RevocationListEntry, 0, len(revs))
	for _, r := range revs {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.Time, ReasonCode: r.Reason})
	}
	n, err := s.st.NextCRLNumber(ctx, domain)
	if err != nil {
		return nil, err
	}
	der, err := ca.CRL(big.NewInt(n), entries, now)
	if err != nil {
		return nil, err
	}
	// NextCRLNumber wrote to the store; remember the counter after it.
	if v, err := s.st.Changed(ctx); err == nil {
		version = v
	}
	s.crls[domain] = cachedCRL{der: der, version: version, until: now.Add(24 * time.Hour)}
	return der, nil
}

// storeCerts publishes the store's local certificates in DNS (CD-02):
// address-bound ones at the address name, organization-bound ones at the
// domain.
type storeCerts struct{ st *store.Store }

func (s storeCerts) Domains(ctx context.Context) ([]string, error) {
	ds, err := s.st.Domains(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Name
	}
	return out, nil
}

func (s storeCerts) Certificates(ctx context.Context, name string) ([][]byte, error) {
	ds, err := s.Domains(ctx)
	if err != nil {
		return nil, err
	}
	owner := certs.OwnerOfName(name, ds)
	if owner == "" {
		return nil, nil
	}
	list, err := s.st.Certificates(ctx, store.CertFilter{Owner: owner})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out [][]byte
	for _, c := range list {
		if now.After(c.NotAfter) {
			continue // expired certificates are not published
		}
		out = append(out, c.DER)
	}
	return out, nil
}

// leader returns whether this node runs a job that one node at a time runs
// when several share the store (tracking timeouts, webhooks, bundle
// refreshes): the job's lease in the store, taken or renewed as the job's
// loop asks (store.Job). A change of hands is logged.
func (s *server) leader(job string) func(context.Context) bool {
	s.jobs = append(s.jobs, job)
	j := s.st.Job(job)
	return func(ctx context.Context) bool {
		held, changed, err := j.Held(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			s.log.Error("job lease", "job", job, "err", err)
		}
		if changed {
			s.log.Info("job lease", "job", job, "this_node", held)
		}
		return held
	}
}

// holdNode checks, as often as the node renews its leases, that this
// process still holds its node's name (store.HoldNode), taking it again on
// a new session when the database lost the old one; another process that
// took the name meanwhile stops this one, whose claims it now shares.
func (s *server) holdNode(ctx context.Context) error {
	_, lease := s.st.Node()
	t := time.NewTicker(lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := s.st.HoldNode(ctx)
		switch {
		case errors.Is(err, store.ErrNodeInUse):
			return err
		case err != nil && ctx.Err() == nil:
			s.log.Warn("node name: cannot check its lock, trying again", "err", err)
		}
	}
}

// storeBundles lets the trust bundle refresher read bundle sources from
// the store and record each fetch there.
type storeBundles struct{ st *store.Store }

func (s storeBundles) Sources(ctx context.Context) ([]trust.BundleSource, error) {
	bs, err := s.st.Bundles(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]trust.BundleSource, 0, len(bs))
	for _, b := range bs {
		src, err := trust.NewBundleSource(b.ID, b.Domain, b.Location, b.Signer, b.Refresh)
		if err != nil {
			return nil, err
		}
		out = append(out, src)
	}
	return out, nil
}

func (s storeBundles) SaveState(ctx context.Context, id int64, state trust.BundleState) error {
	if state.LastError != "" {
		return s.st.BundleFailed(ctx, id, state.LastAttempt, state.LastError)
	}
	return s.st.SetBundleAnchors(ctx, id, state.Anchors, state.Checksum, state.LastAttempt)
}

func (s storeBundles) LoadState(ctx context.Context, id int64) (trust.BundleState, bool, error) {
	b, err := s.st.Bundle(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return trust.BundleState{}, false, nil
	}
	if err != nil || b.Checksum == "" {
		return trust.BundleState{}, false, err
	}
	anchors, err := s.st.BundleAnchors(ctx, id)
	if err != nil {
		return trust.BundleState{}, false, err
	}
	st := trust.BundleState{Checksum: b.Checksum, LastAttempt: b.LastAttempt, LastSuccess: b.LastSuccess, LastError: b.LastError}
	for _, a := range anchors {
		c, err := a.Parse()
		if err != nil {
			return trust.BundleState{}, false, err
		}
		st.Anchors = append(st.Anchors, c)
	}
	return st, true, nil
}

func (s *server) now() time.Time { return time.Now() }

// isLoopbackListener reports whether a listener is bound to a loopback
// address.
func isLoopbackListener(l net.Listener) bool {
	a, ok := l.Addr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}
