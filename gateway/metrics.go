package gateway

// Prometheus metrics on the admin listener: GET /metrics in the text
// exposition format (version 0.0.4, package metrics), for loopback
// clients and holders of an API token not limited to domains (metricsAuth);
// it shows counts, ages and times only, never an address, a message, a key
// or a credential (bundle locations lose their user information and query).
//
// Counted in process, since this hisp started (the counters live in the
// server and are handed to the SMTP servers and the deliverer):
//
//	hisp_smtp_transactions_total{listener,outcome}  backbone|submission; accepted|refused|failed
//	hisp_smtp_refusals_total{listener,command}      auth|mail|rcpt|data
//	hisp_queue_delivery_attempts_total{outcome}     delivered|deferred|bounced, per recipient
//	hisp_connections_refused_total{listener,reason} over [limits]: total|per_ip
//	hisp_connections_open{listener}                 open connections now
//	hisp_password_checks_total{result}              cached|hashed (bcrypt ran)
//	hisp_connections_limit{listener}                the most a listener holds
//	hisp_dns_rate_limited_total{action}             UDP answers over a client's rate: slipped (sent truncated)|dropped
//
// Read from the store at each scrape (store.Stats):
//
//	hisp_queue_recipients{state}                    queued|delivering|delivered|failed|bounced
//	hisp_queue_oldest_age_seconds                   oldest message with a recipient still to deliver; 0: none
//	hisp_deferred_submissions                       submissions waiting for certificate look-ups
//	hisp_tracked_recipients_24h{state}              queued|relayed|processed|dispatched|failed
//	hisp_certificates_expiring_30d                  local certificates with a key expiring within 30 days
//	hisp_certificates_earliest_expiry_timestamp_seconds   earliest NotAfter of a valid local certificate
//	hisp_trust_bundle_success_age_seconds{bundle,domain,location}   since the last good refresh (or since added)
//	hisp_trust_bundle_refresh_failed{bundle,domain,location}        1 when the last refresh failed
//	hisp_store_up                                   0 when the store could not be read (the above are missing)
//
// Of the process: go_goroutines, go_memstats_heap_inuse_bytes and
// process_start_time_seconds (when this hisp started serving).

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	runtimemetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hisp-project/hisp/metrics"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/web"
)

// Windows of the store gauges.
const (
	trackedWindow  = 24 * time.Hour
	expiringWindow = 30 * 24 * time.Hour
)

// gatewayMetrics holds a server's counters, made on first use.
type gatewayMetrics struct {
	once sync.Once
	c    *counters
}

// counters are what the SMTP servers and the deliverer count.
type counters struct {
	started      time.Time
	transactions *metrics.Counter // smtp.Config.Transactions
	refusals     *metrics.Counter // smtp.Config.Refusals
	attempts     *metrics.Counter // smtp.DelivererConfig.Attempts
	connRefused  *metrics.Counter // connlimit.Options.Refused (limits.go)
	dnsLimited   *metrics.Counter // certs.RateLimit.Limited
}

// get returns the counters.
func (m *gatewayMetrics) get() *counters {
	m.once.Do(func() { m.c = newCounters(time.Now()) })
	return m.c
}

func newCounters(started time.Time) *counters {
	c := &counters{
		started: started,
		transactions: metrics.NewCounter("hisp_smtp_transactions_total",
			"SMTP transactions by listener and outcome: accepted (2xx to DATA), refused (MAIL or DATA refused), failed (nothing queued: local error, client gone or stalled in DATA).",
			"listener", "outcome"),
		refusals: metrics.NewCounter("hisp_smtp_refusals_total",
			"Refused SMTP commands by listener and command.", "listener", "command"),
		attempts: metrics.NewCounter("hisp_queue_delivery_attempts_total",
			"Outcomes of delivery attempts, one per recipient: delivered, deferred (retried later), bounced (failed for good).",
			"outcome"),
		connRefused: metrics.NewCounter("hisp_connections_refused_total",
			"Connections refused over a listener's limits ([limits]): total (the listener is full) or per_ip (the client's address is).",
			"listener", "reason"),
		dnsLimited: metrics.NewCounter("hisp_dns_rate_limited_total",
			"UDP answers of the CERT publishing server over a client's rate: slipped (sent empty and truncated, the client retries over TCP) or dropped.",
			"action"),
	}
	c.dnsLimited.Add(0, "slipped")
	c.dnsLimited.Add(0, "dropped")
	// Every series from the start, so that rates work from the first
	// event on.
	for _, l := range []string{"backbone", "submission"} {
		for _, o := range []string{"accepted", "refused", "failed"} {
			c.transactions.Add(0, l, o)
		}
		for _, cmd := range []string{"mail", "rcpt", "data"} {
			c.refusals.Add(0, l, cmd)
		}
	}
	c.refusals.Add(0, "submission", "auth")
	for _, o := range []string{"delivered", "deferred", "bounced"} {
		c.attempts.Add(0, o)
	}
	return c
}

// metricsHandler serves GET /metrics.
func (s *server) metricsHandler() http.Handler {
	c := s.meter.get()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var buf bytes.Buffer
		if err := metrics.Write(&buf, s.collectMetrics(ctx, c, time.Now())); err != nil {
			s.log.Error("metrics", "err", err)
			http.Error(w, "metrics unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", metrics.ContentType)
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})
}

// collectMetrics gathers every family: the counters, the store gauges (if
// the store answers) and the process gauges.
func (s *server) collectMetrics(ctx context.Context, c *counters, now time.Time) []metrics.Family {
	fams := []metrics.Family{c.transactions.Family(), c.refusals.Family(), c.attempts.Family(), c.dnsLimited.Family()}
	fams = append(fams, processFamilies(c.started)...)
	cached, hashed := s.st.PasswordChecks()
	fams = append(fams, metrics.Family{Name: "hisp_password_checks_total", Type: metrics.TypeCounter, Labels: []string{"result"},
		Help:    "Password checks of logins: cached (a login and password verified within [limits] credential_cache) or hashed (bcrypt ran).",
		Samples: []metrics.Sample{{Values: []string{"cached"}, Value: float64(cached)}, {Values: []string{"hashed"}, Value: float64(hashed)}}})
	if s.limits != nil {
		fams = append(fams, s.limits.families()...)
	} else {
		fams = append(fams, c.connRefused.Family())
	}
	st, err := s.st.Stats(ctx, store.StatsQuery{Now: now, TrackedSince: now.Add(-trackedWindow), ExpiringBefore: now.Add(expiringWindow)})
	up := 1.0
	if err != nil {
		s.log.Warn("metrics: store gauges unavailable", "err", err)
		up = 0
	} else {
		fams = append(fams, storeFamilies(st, now)...)
	}
	fams = append(fams, s.leaseFamilies(ctx, now)...)
	return append(fams, gauge("hisp_store_up", "1 when the store answered the gauges' queries of this scrape, else 0.", up))
}

// leaseFamilies say which node runs each job that one node at a time runs
// (several nodes on one store): 1 for the jobs this node holds, 0 for the
// others', with the holder's name and how long its lease still runs.
func (s *server) leaseFamilies(ctx context.Context, now time.Time) []metrics.Family {
	leases, err := s.st.Leases(ctx)
	if err != nil {
		return nil
	}
	node, _ := s.st.Node()
	held := metrics.Family{Name: "hisp_job_lease_held", Type: metrics.TypeGauge, Labels: []string{"job", "holder"},
		Help: "Jobs that one node at a time runs (tracking, webhooks, bundles, queue-notices): 1 when this node holds the job's lease, else 0; holder names the node that does."}
	left := metrics.Family{Name: "hisp_job_lease_remaining_seconds", Type: metrics.TypeGauge, Labels: []string{"job"},
		Help: "Seconds until a job's lease runs out unless its holder renews it (negative: lapsed, another node takes it)."}
	for _, l := range leases {
		v := 0.0
		if l.Holder == node {
			v = 1
		}
		held.Samples = append(held.Samples, metrics.Sample{Values: []string{l.Job, l.Holder}, Value: v})
		left.Samples = append(left.Samples, metrics.Sample{Values: []string{l.Job}, Value: l.Until.Sub(now).Seconds()})
	}
	postgres := 0.0
	if s.st.Location().Postgres() {
		postgres = 1
	}
	return []metrics.Family{held, left, gauge("hisp_store_postgres", "1 when the store is a PostgreSQL database shared by nodes, 0 for SQLite.", postgres)}
}

// gauge is a family of one gauge without labels.
func gauge(name, help string, v float64) metrics.Family {
	return metrics.Family{Name: name, Help: help, Type: metrics.TypeGauge, Samples: []metrics.Sample{{Value: v}}}
}

// ageSeconds is the time from t to now in seconds (ms precision), 0 for
// the zero time or a time ahead of now.
func ageSeconds(t, now time.Time) float64 {
	if t.IsZero() || t.After(now) {
		return 0
	}
	return float64(now.Sub(t).Milliseconds()) / 1000
}

func storeFamilies(st store.Stats, now time.Time) []metrics.Family {
	queue := metrics.Family{Name: "hisp_queue_recipients", Type: metrics.TypeGauge, Labels: []string{"state"},
		Help: "Recipients in the outbound queue by state (finished ones are kept 7 days)."}
	for state, n := range st.QueueRecipients {
		queue.Samples = append(queue.Samples, metrics.Sample{Values: []string{string(state)}, Value: float64(n)})
	}
	tracked := metrics.Family{Name: "hisp_tracked_recipients_24h", Type: metrics.TypeGauge, Labels: []string{"state"},
		Help: "Tracked recipients of the messages sent in the last 24 hours, by delivery tracking state."}
	for state, n := range st.Tracked {
		tracked.Samples = append(tracked.Samples, metrics.Sample{Values: []string{string(state)}, Value: float64(n)})
	}
	earliest := metrics.Family{Name: "hisp_certificates_earliest_expiry_timestamp_seconds", Type: metrics.TypeGauge,
		Help: "Earliest NotAfter of the local certificates still valid, in seconds since the Unix epoch; absent when there is none."}
	if !st.EarliestCertExpiry.IsZero() {
		earliest.Samples = []metrics.Sample{{Value: float64(st.EarliestCertExpiry.Unix())}}
	}
	labels := []string{"bundle", "domain", "location"}
	age := metrics.Family{Name: "hisp_trust_bundle_success_age_seconds", Type: metrics.TypeGauge, Labels: labels,
		Help: "Seconds since the trust bundle's last successful refresh (since it was added, when it never had one)."}
	failed := metrics.Family{Name: "hisp_trust_bundle_refresh_failed", Type: metrics.TypeGauge, Labels: labels,
		Help: "1 when the trust bundle's last refresh failed (its last good anchors stay in use), else 0."}
	for _, b := range st.Bundles {
		values := []string{strconv.FormatInt(b.ID, 10), b.Domain, publicLocation(b.Location)}
		since := b.LastSuccess
		if since.IsZero() {
			since = b.Created
		}
		age.Samples = append(age.Samples, metrics.Sample{Values: values, Value: ageSeconds(since, now)})
		f := 0.0
		if b.Failed {
			f = 1
		}
		failed.Samples = append(failed.Samples, metrics.Sample{Values: values, Value: f})
	}
	return []metrics.Family{
		queue,
		gauge("hisp_queue_oldest_age_seconds",
			"Age of the oldest message with a recipient still to deliver (queued or delivering); 0 when there is none.",
			ageSeconds(st.OldestQueued, now)),
		gauge("hisp_deferred_submissions",
			"Submissions deferred for some recipients whose certificates could not be looked up yet.", float64(st.Deferred)),
		tracked,
		gauge("hisp_certificates_expiring_30d",
			"Local certificates with a private key, still valid, that expire within 30 days.", float64(st.CertsExpiring)),
		earliest,
		age,
		failed,
	}
}

// publicLocation is a bundle location fit for a label: a URL without its
// user information, query and fragment (they may hold credentials); a file
// name as it is.
func publicLocation(loc string) string {
	u, err := url.Parse(loc)
	switch {
	case err == nil && u.Scheme != "" && u.Host != "":
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		return u.String()
	case strings.Contains(loc, "://"):
		return "(unparsable URL)" // which might hold a password
	}
	return loc
}

// processFamilies are the Go runtime's and the process's gauges.
func processFamilies(started time.Time) []metrics.Family {
	samples := []runtimemetrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	runtimemetrics.Read(samples)
	var heap float64
	for _, s := range samples {
		if s.Value.Kind() == runtimemetrics.KindUint64 {
			heap += float64(s.Value.Uint64())
		}
	}
	return []metrics.Family{
		gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine())),
		gauge("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use (runtime.MemStats.HeapInuse).", heap),
		gauge("process_start_time_seconds", "Start time of this hisp (when it started serving), in seconds since the Unix epoch.",
			float64(started.UnixMilli())/1000),
	}
}

// metricsAuth admits scrapes from loopback, or with an API token that is
// not limited to some domains (hisp token add NAME): the admin listener
// also serves the tracking API to EHRs, which need not see the gateway's
// domains and bundles.
func (s *server) metricsAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
				next.ServeHTTP(w, r)
				return
			}
		}
		if token := web.BearerToken(r); token != "" {
			t, err := s.st.CheckAPIToken(r.Context(), token)
			if err == nil && t.Domains == nil {
				next.ServeHTTP(w, r)
				return
			}
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				s.log.Error("metrics: check token", "err", err)
				http.Error(w, "token check failed", http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="hisp"`)
		http.Error(w, "metrics: from loopback, or with an API token not limited to domains", http.StatusUnauthorized)
	})
}
