// Package config reads hisp.toml, the configuration of `hisp serve`, and
// holds its defaults: safe local listeners on loopback, so that a server
// started without a file is reachable only from the machine itself.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is hisp.toml. Key names are part of hisp's public contract.
type Config struct {
	// Data is the data directory; --data and HISP_DATA take precedence.
	Data string `toml:"data"`
	// Hostname is the EHLO name and MDN reporting host, and the name server
	// name of published zones.
	Hostname string   `toml:"hostname"`
	Listen   Listen   `toml:"listen"`
	DNS      DNS      `toml:"dns"`
	Outbound Outbound `toml:"outbound"`
	TLS      TLS      `toml:"tls"`
	Trust    Trust    `toml:"trust"`
	// Notifications configures delivery tracking of sent messages.
	Notifications Notifications `toml:"notifications"`
	Log           Log           `toml:"log"`
	// Inbound configures what is done with the content of received
	// messages (content.go).
	Inbound Inbound `toml:"inbound"`
	// Limits bounds what clients may take of the server.
	Limits Limits `toml:"limits"`
	// Store says where the state is: SQLite in the data directory (the
	// default), or PostgreSQL shared by several nodes.
	Store Store `toml:"store"`

	// PublicURL is the base URL at which others reach the admin listener:
	// the CRL distribution point of certificates from hisp cert issue is
	// PublicURL/crl/DOMAIN.crl. "" derives it from [listen] admin (else
	// admin_https), an unspecified host replaced by hostname (BaseURL).
	PublicURL string `toml:"public_url"`
}

// Store is the [store] table.
type Store struct {
	// URL is a PostgreSQL connection URL
	// ("postgres://user:pass@host:5432/db?sslmode=verify-full") that
	// several hisp nodes share; "" keeps SQLite in the data directory.
	// HISP_STORE_URL takes precedence.
	URL string `toml:"url"`
	// MasterKeyFile is the file of the key that encrypts private keys at
	// rest (32 bytes, mode 0600); "" is master.key in the data directory.
	// Every node of one PostgreSQL store needs the same file: the key is
	// never kept in the database.
	MasterKeyFile string `toml:"master_key_file"`
	// Lease is how long a node's claims (a queued recipient it delivers)
	// and jobs (tracking timeouts, bundle refreshes, queue notices) stay
	// its own without a renewal; a node renews every third of it, and a
	// node that dies has its work taken over by another within it.
	// Default 1m.
	Lease Duration `toml:"lease"`
	// Node names this node among those sharing the store (in the queue's
	// claims and the job leases); "" is the host name and the data
	// directory. Every node needs its own: two nodes of one name would
	// take each other's claims as their own. Keep it across restarts, so
	// that a restarted node takes its own claims back at once.
	Node string `toml:"node"`
}

// Limits are the [limits] table: the connections and logins of clients,
// and the sizes of messages and mailboxes.
type Limits struct {
	MessageLimits // message_size, mailbox_quota (messagelimits.go)
	// Connections is how many connections each listener (smtp,
	// submission, imap, imaps, dns over TCP, admin, admin_https) holds at
	// once; over it a client gets the protocol's busy answer (SMTP 421,
	// IMAP BYE, HTTP 503). Default 2000. hisp lowers it when the process's
	// file descriptor limit could not hold every listener full.
	Connections int `toml:"connections"`
	// ConnectionsPerIP is the same per client IP address (IPv6: per
	// /64); default 100.
	ConnectionsPerIP int `toml:"connections_per_ip"`
	// CredentialCache is how long a login and password that passed their
	// hash check are accepted again without one (a keyed hash of them is
	// kept in memory, never the password; a changed password or a removed
	// account misses at once; failures are never kept). Default 10m; "0s"
	// turns it off.
	CredentialCache Duration `toml:"credential_cache"`
}

// Listen holds the listener addresses; "" turns a listener off.
type Listen struct {
	SMTP       string `toml:"smtp"`       // backbone: other HISPs deliver here
	Submission string `toml:"submission"` // clients and EHRs, AUTH required
	IMAP       string `toml:"imap"`
	IMAPS      string `toml:"imaps"` // IMAP with implicit TLS (993 in production); "" = off
	DNS        string `toml:"dns"`   // authoritative CERT publishing for local domains
	Admin      string `toml:"admin"` // admin web page, API, CRLs of the local CAs
	// AdminHTTPS serves the same over TLS (the [tls] certificate), for API
	// clients and admins across a network; "" = off.
	AdminHTTPS string `toml:"admin_https"`
	// LDAP hosts the local certificates over LDAP (anonymous, read-only),
	// announced by the DNS listener as _ldap._tcp.DOMAIN; "" = off.
	LDAP string `toml:"ldap"`
}

// DNS configures look-ups.
type DNS struct {
	// Resolver is host:port for discovery and MX look-ups; "" = the system
	// resolver.
	Resolver string `toml:"resolver"`
	// Timeout of one DNS query; default 3s.
	Timeout Duration `toml:"timeout"`
	// LDAPTimeout of one LDAP connect, bind or search; default 5s.
	LDAPTimeout Duration `toml:"ldap_timeout"`
	// MX is the mail host the DNS listener publishes as the MX record of
	// every local domain, for a Direct domain delegated to hisp's DNS: ""
	// (the default) is hostname, unless hostname is local (localhost,
	// *.localhost, an IP address); "none" publishes no MX.
	MX string `toml:"mx"`
}

// Outbound configures delivery to other HISPs.
type Outbound struct {
	Port int `toml:"port"` // port for MX delivery
	// Routes override MX: domain = "host:port", or
	// domain = { addr = "host:port", tls = "verify" } (route.go).
	Routes map[string]Route `toml:"routes"`
	// TLS is how deliveries use STARTTLS: "opportunistic" (default: when
	// offered, unverified, plain text otherwise), "required" (a partner
	// without STARTTLS is a temporary failure, retried; the certificate
	// is not verified) or "verify" (required, and the certificate must
	// chain to the system roots and name the next hop). A route's tls
	// overrides it.
	TLS string `toml:"tls"`
	// RetryFirst is the wait after the first failed attempt, doubling up
	// to RetryMax; RetryAttempts attempts in all. Defaults 7m30s, 16h, 9.
	RetryFirst    Duration `toml:"retry_first"`
	RetryMax      Duration `toml:"retry_max"`
	RetryAttempts int      `toml:"retry_attempts"`
	// DelayedDSN is when a sender is told that a message is still being
	// retried; default 4h.
	DelayedDSN Duration `toml:"delayed_dsn"`
	// XDM is when outgoing attachments are also packaged as an IHE XDM
	// zip: "never" (the default; "" is the same), "ccda" (messages with
	// C-CDA documents) or "always" (every attachment). XDMDomains sets it
	// per recipient domain (content.go).
	XDM        string            `toml:"xdm"`
	XDMDomains map[string]string `toml:"xdm_domains"`
	// Profile is the algorithms sent to partners without a profile of
	// their own: cipher "aes128-cbc" (default), "aes256-cbc",
	// "aes128-gcm" or "aes256-gcm"; oaep "sha256" (default), "sha1" or
	// "off" (RSA PKCS #1 v1.5); digest "sha256" (default), "sha384" or
	// "sha512".
	Profile
	// Profiles are partners' algorithms by recipient domain
	// ([outbound.profiles."partner.example"]); a key left out is the
	// [outbound] one.
	Profiles map[string]Profile `toml:"profiles"`
}

// Profile is a set of outbound algorithms; "" means the default.
type Profile struct {
	Cipher string `toml:"cipher"`
	OAEP   string `toml:"oaep"`
	Digest string `toml:"digest"`
}

// validate checks the values of a profile at key.
func (p Profile) validate(key string) []error {
	var errs []error
	one := func(name, v string, allowed ...string) {
		for _, a := range allowed {
			if strings.EqualFold(v, a) {
				return
			}
		}
		errs = append(errs, fmt.Errorf("%s.%s = %q: want %s", key, name, v, strings.Join(allowed, ", ")))
	}
	one("cipher", p.Cipher, "", "aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm")
	one("oaep", p.OAEP, "", "sha256", "sha1", "off")
	one("digest", p.Digest, "", "sha256", "sha384", "sha512")
	return errs
}

// TLS names the server certificate; empty means a self-signed certificate
// made in the data directory.
type TLS struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Trust configures certificate validation.
type Trust struct {
	// Revocation is what to do when a CRL or OCSP responder cannot be
	// reached: "defer" (default: inbound 451 4.7.5, outbound recipients
	// kept and retried for up to RevocationGrace), "refuse" (at once and
	// for good) or "allow" (trust the certificate anyway).
	Revocation string `toml:"revocation"`
	// RevocationGrace is how long "defer" retries an outbound recipient
	// before failing it; default 24h.
	RevocationGrace Duration `toml:"revocation_grace"`
	// RefetchAfter is how long a CRL, OCSP responder or AIA URL that
	// failed is not asked again; default 1m.
	RefetchAfter Duration `toml:"refetch_after"`
}

// Notifications configures the sending side of Direct delivery
// notification (DN-06..DN-10): how long a sent message waits for its MDNs,
// what reaches the sender's mailbox, and webhook delivery.
type Notifications struct {
	// ProcessedTimeout is how long after sending a recipient's processed
	// MDN may take before the sender gets a failure DSN; default 1h.
	ProcessedTimeout Duration `toml:"processed_timeout"`
	// DispatchedTimeout is the same for the dispatched MDN of a message
	// that asked for timely and reliable delivery; default 1h.
	DispatchedTimeout Duration `toml:"dispatched_timeout"`
	// WithholdProcessed keeps processed MDNs out of the sender's mailbox
	// when dispatched was requested (DN-09); default true.
	WithholdProcessed bool `toml:"withhold_processed"`
	// CheckInterval is how often deadlines and the queue are checked;
	// default 5s.
	CheckInterval Duration `toml:"check_interval"`
	// WebhookTimeout bounds one webhook request; default 10s. A failed
	// delivery is retried after WebhookRetryFirst, doubling up to
	// WebhookRetryMax (defaults 10s, 1h), and given up after
	// WebhookGiveUp (default 72h).
	WebhookTimeout    Duration `toml:"webhook_timeout"`
	WebhookRetryFirst Duration `toml:"webhook_retry_first"`
	WebhookRetryMax   Duration `toml:"webhook_retry_max"`
	WebhookGiveUp     Duration `toml:"webhook_give_up"`
}

// Log configures hisp serve's log on standard error.
type Log struct {
	// Format is "text" (logfmt-like key=value lines, the default) or
	// "json" (one JSON object per line, for log collectors).
	Format string `toml:"format"`
	// Level is "debug", "info" (the default), "warn" or "error".
	Level string `toml:"level"`
}

// Handler returns the slog handler the settings ask for, writing to w.
func (l Log) Handler(w io.Writer) slog.Handler {
	var level slog.Level
	level.UnmarshalText([]byte(l.Level)) // checked by Validate; "" is info
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// Duration is a time.Duration written as a string ("3s", "1h").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the configuration used without a file.
func Default() Config {
	return Config{
		Data:     "./hisp-data",
		Hostname: "localhost",
		Listen: Listen{
			SMTP:       "127.0.0.1:2525",
			Submission: "127.0.0.1:5587",
			IMAP:       "127.0.0.1:1143",
			DNS:        "127.0.0.1:8053",
			Admin:      "127.0.0.1:8080",
		},
		DNS: DNS{Timeout: Duration{3 * time.Second}, LDAPTimeout: Duration{5 * time.Second}},
		Outbound: Outbound{Port: 25, Routes: map[string]Route{}, TLS: "opportunistic", RetryFirst: Duration{7*time.Minute + 30*time.Second},
			RetryMax: Duration{16 * time.Hour}, RetryAttempts: 9, DelayedDSN: Duration{4 * time.Hour},
			Profile: Profile{Cipher: "aes128-cbc", OAEP: "sha256", Digest: "sha256"}, Profiles: map[string]Profile{}},
		Trust: Trust{Revocation: "defer", RevocationGrace: Duration{24 * time.Hour}, RefetchAfter: Duration{time.Minute}},
		Log:   Log{Format: "text", Level: "info"},
		Limits: Limits{MessageLimits: MessageLimits{MessageSize: DefaultMessageSize, MailboxQuota: DefaultMailboxQuota},
			Connections: 2000, ConnectionsPerIP: 100, CredentialCache: Duration{10 * time.Minute}},
		Notifications: Notifications{ProcessedTimeout: Duration{time.Hour}, DispatchedTimeout: Duration{time.Hour},
			WithholdProcessed: true, CheckInterval: Duration{5 * time.Second}, WebhookTimeout: Duration{10 * time.Second},
			WebhookRetryFirst: Duration{10 * time.Second}, WebhookRetryMax: Duration{time.Hour}, WebhookGiveUp: Duration{72 * time.Hour}},
		Inbound: Inbound{XDMDocuments: true, CCDAHTML: true},
		Store:   Store{Lease: Duration{time.Minute}},
	}
}

// Load reads a configuration file over the defaults. Unknown keys are an
// error, so that a misspelt key does not silently keep its default.
func Load(name string) (Config, error) {
	c := Default()
	data, err := os.ReadFile(name)
	if err != nil {
		return c, err
	}
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return c, fmt.Errorf("%s: unknown keys: %s", name, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// BaseURL returns the base URL of the admin listener as others reach it,
// without a trailing slash: public_url when set, else http://ADMIN (else
// https://ADMIN_HTTPS) with an unspecified host (0.0.0.0, ::, "") replaced
// by hostname; "" when neither listener is on.
func (c Config) BaseURL() string {
	if c.PublicURL != "" {
		return strings.TrimSuffix(c.PublicURL, "/")
	}
	scheme, addr := "http", c.Listen.Admin
	if addr == "" {
		scheme, addr = "https", c.Listen.AdminHTTPS
	}
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return scheme + "://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = c.Hostname
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// Validate checks values that can be checked without the network.
func (c *Config) Validate() error {
	var errs []error
	check := func(key, addr string) {
		if addr == "" {
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s = %q: want host:port", key, addr))
		}
	}
	check("listen.smtp", c.Listen.SMTP)
	check("listen.submission", c.Listen.Submission)
	check("listen.imap", c.Listen.IMAP)
	check("listen.imaps", c.Listen.IMAPS)
	check("listen.admin_https", c.Listen.AdminHTTPS)
	check("listen.dns", c.Listen.DNS)
	check("listen.ldap", c.Listen.LDAP)
	check("listen.admin", c.Listen.Admin)
	check("dns.resolver", c.DNS.Resolver)
	if c.Store.Lease.Duration < time.Second {
		errs = append(errs, fmt.Errorf("store.lease = %q: want a duration of at least 1s", c.Store.Lease.String()))
	}
	if n := c.Store.Node; n != "" && (len(n) > 200 || strings.ContainsFunc(n, func(r rune) bool { return r < ' ' || r == 0x7f })) {
		errs = append(errs, fmt.Errorf("store.node = %q: want a name of printable characters, at most 200 bytes", n))
	}
	if c.Store.URL != "" {
		u, err := url.Parse(c.Store.URL)
		if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" || u.Host == "" {
			errs = append(errs, errors.New("store.url: want a PostgreSQL URL such as \"postgres://hisp:PASSWORD@db.example.org:5432/hisp?sslmode=verify-full\""))
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("public_url = %q: want an http or https URL such as \"http://hisp.example.org:8080\"", c.PublicURL))
		}
	}
	for d, r := range c.Outbound.Routes {
		if r.Addr == "" {
			errs = append(errs, fmt.Errorf("outbound.routes.%s: addr is missing", d))
		}
		check("outbound.routes."+d, r.Addr)
		if r.TLS != "" && !tlsPolicies[r.TLS] {
			errs = append(errs, fmt.Errorf("outbound.routes.%s.tls = %q: want opportunistic, required or verify", d, r.TLS))
		}
	}
	if !tlsPolicies[c.Outbound.TLS] {
		errs = append(errs, fmt.Errorf("outbound.tls = %q: want opportunistic, required or verify", c.Outbound.TLS))
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format = %q: want \"text\" or \"json\"", c.Log.Format))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Log.Level)); c.Log.Level != "" && err != nil {
		errs = append(errs, fmt.Errorf("log.level = %q: want debug, info, warn or error", c.Log.Level))
	}
	if c.Outbound.Port <= 0 || c.Outbound.Port > 65535 {
		errs = append(errs, fmt.Errorf("outbound.port = %d: want 1-65535", c.Outbound.Port))
	}
	if c.Outbound.RetryFirst.Duration <= 0 || c.Outbound.RetryMax.Duration < c.Outbound.RetryFirst.Duration || c.Outbound.RetryAttempts < 1 {
		errs = append(errs, errors.New("outbound.retry_first, retry_max and retry_attempts must be positive, retry_max at least retry_first"))
	}
	errs = append(errs, c.Outbound.Profile.validate("outbound")...)
	for d, p := range c.Outbound.Profiles {
		if strings.Trim(d, ". ") == "" || strings.ContainsAny(d, " @/") {
			errs = append(errs, fmt.Errorf("outbound.profiles.%q: want a domain name", d))
		}
		errs = append(errs, p.validate(fmt.Sprintf("outbound.profiles.%q", d))...)
	}
	if c.Hostname == "" {
		errs = append(errs, errors.New("hostname is empty"))
	}
	switch c.Trust.Revocation {
	case "defer", "refuse", "allow":
	default:
		errs = append(errs, fmt.Errorf("trust.revocation = %q: want defer, refuse or allow", c.Trust.Revocation))
	}
	if c.Trust.RevocationGrace.Duration <= 0 || c.Trust.RefetchAfter.Duration <= 0 {
		errs = append(errs, errors.New("trust.revocation_grace and trust.refetch_after must be positive durations"))
	}
	n := c.Notifications
	for _, d := range []struct {
		key string
		v   Duration
	}{{"processed_timeout", n.ProcessedTimeout}, {"dispatched_timeout", n.DispatchedTimeout}, {"check_interval", n.CheckInterval},
		{"webhook_timeout", n.WebhookTimeout}, {"webhook_retry_first", n.WebhookRetryFirst}, {"webhook_retry_max", n.WebhookRetryMax},
		{"webhook_give_up", n.WebhookGiveUp}} {
		if d.v.Duration <= 0 {
			errs = append(errs, fmt.Errorf("notifications.%s = %q: want a positive duration", d.key, d.v.String()))
		}
	}
	if mx := c.DNS.MX; mx != "" && mx != "none" {
		if _, err := netip.ParseAddr(mx); err == nil || strings.ContainsAny(mx, " /:@") || !strings.Contains(strings.TrimSuffix(mx, "."), ".") {
			errs = append(errs, fmt.Errorf("dns.mx = %q: want a host name, \"\" (hostname) or \"none\"", mx))
		}
	}
	if c.Limits.Connections < 1 || c.Limits.ConnectionsPerIP < 1 || c.Limits.CredentialCache.Duration < 0 {
		errs = append(errs, errors.New("limits.connections and connections_per_ip must be at least 1, credential_cache not negative"))
	}
	errs = append(errs, c.Limits.MessageLimits.validate()...)
	errs = append(errs, c.validateContent()...)
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		errs = append(errs, errors.New("tls.cert and tls.key go together"))
	}
	return errors.Join(errs...)
}

// PublishedMX is the MX host the DNS listener publishes for the local
// domains ([dns] mx), "" for none.
func (c *Config) PublishedMX() string {
	switch mx := c.DNS.MX; mx {
	case "none":
		return ""
	case "":
		h := strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
		if _, err := netip.ParseAddr(h); err == nil || h == "localhost" || strings.HasSuffix(h, ".localhost") || !strings.Contains(h, ".") {
			return ""
		}
		return h
	default:
		return mx
	}
}
