package ops

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hisp-project/hisp/store"
)

// RelayInfo is a relay account as listed.
type RelayInfo struct {
	Name      string    `json:"name"`
	Domains   []string  `json:"domains"`
	Networks  []string  `json:"networks"`
	ClientCAs []string  `json:"client_cas"` // subjects
	Created   time.Time `json:"created"`
}

// RelayInfoOf describes a relay account.
func RelayInfoOf(r store.Relay) RelayInfo {
	j := RelayInfo{Name: r.Name, Domains: append([]string{}, r.Domains...), Networks: []string{}, ClientCAs: []string{}, Created: r.Created.UTC()}
	for _, p := range r.Networks {
		j.Networks = append(j.Networks, p.String())
	}
	for _, c := range r.ClientCAs {
		j.ClientCAs = append(j.ClientCAs, c.Subject.String())
	}
	return j
}

// RelaySummary says in one line what a relay may do.
func RelaySummary(r RelayInfo) string {
	nets := "any network"
	if len(r.Networks) > 0 {
		nets = strings.Join(r.Networks, ", ")
	}
	cas := "0 (none required)"
	if len(r.ClientCAs) > 0 {
		cas = fmt.Sprintf("%d (%s)", len(r.ClientCAs), strings.Join(r.ClientCAs, "; "))
	}
	return fmt.Sprintf("sends for %s; from %s; client certificates: %s", strings.Join(r.Domains, ", "), nets, cas)
}

// RelayRequest is a relay account to add: an EHR's submission login that
// sends for any address of its local domains.
type RelayRequest struct {
	Name      string
	Password  string
	Domains   []string
	Networks  []netip.Prefix
	ClientCAs []*x509.Certificate
}

// AddRelay adds a relay account. Its client CAs get warnings when they are
// not CAs or have expired.
func (o *Ops) AddRelay(ctx context.Context, req RelayRequest) (RelayInfo, []string, error) {
	if len(req.Domains) == 0 {
		return RelayInfo{}, nil, invalidf("a relay needs a local domain it sends for")
	}
	if len(req.Password) < store.MinPasswordLength {
		return RelayInfo{}, nil, refusedf("the password is shorter than %d characters", store.MinPasswordLength)
	}
	var domains []string
	for _, d := range req.Domains {
		nd, err := o.domain(ctx, d)
		if err != nil {
			return RelayInfo{}, nil, err
		}
		domains = append(domains, nd)
	}
	var warnings []string
	now := o.now()
	for _, cert := range req.ClientCAs {
		if !cert.IsCA {
			warnings = append(warnings, fmt.Sprintf("%s is not a CA certificate", cert.Subject))
		}
		if now.After(cert.NotAfter) {
			warnings = append(warnings, fmt.Sprintf("%s expired on %s", cert.Subject, day(cert.NotAfter)))
		}
	}
	r, err := o.st.AddRelay(ctx, store.Relay{Name: req.Name, Domains: domains, Networks: req.Networks, ClientCAs: req.ClientCAs}, req.Password)
	if errors.Is(err, store.ErrExists) {
		return RelayInfo{}, warnings, &kindError{store.ErrExists, fmt.Sprintf("relay %s already exists (%s relay remove it first)", strings.ToLower(strings.TrimSpace(req.Name)), o.prog())}
	} else if err != nil {
		return RelayInfo{}, warnings, err
	}
	info := RelayInfoOf(r)
	o.audit(ctx, "relay.add", r.Name, RelaySummary(info))
	return info, warnings, nil
}

// Relays lists the relay accounts.
func (o *Ops) Relays(ctx context.Context) ([]RelayInfo, error) {
	rs, err := o.st.Relays(ctx)
	if err != nil {
		return nil, err
	}
	out := []RelayInfo{}
	for _, r := range rs {
		out = append(out, RelayInfoOf(r))
	}
	return out, nil
}

// RemoveRelay removes a relay account.
func (o *Ops) RemoveRelay(ctx context.Context, name string) (string, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if err := o.st.RemoveRelay(ctx, name); errors.Is(err, store.ErrNotFound) {
		return "", &kindError{store.ErrNotFound, fmt.Sprintf("relay %s not found (see %s relay list)", name, o.prog())}
	} else if err != nil {
		return "", err
	}
	o.audit(ctx, "relay.remove", name, "")
	return name, nil
}

// AdminInfo is an account of the admin page as listed.
type AdminInfo struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// AddAdmin adds an account of the admin page.
func (o *Ops) AddAdmin(ctx context.Context, name, password string) (AdminInfo, error) {
	a, err := o.st.AddAdmin(ctx, name, password)
	if errors.Is(err, store.ErrExists) {
		return AdminInfo{}, &kindError{store.ErrExists, fmt.Sprintf("an admin named %q exists (%s admin remove it first)", name, o.prog())}
	} else if err != nil {
		return AdminInfo{}, err
	}
	o.audit(ctx, "admin.add", a.Name, "")
	return AdminInfo{Name: a.Name, Created: a.Created.UTC()}, nil
}

// Admins lists the accounts of the admin page.
func (o *Ops) Admins(ctx context.Context) ([]AdminInfo, error) {
	as, err := o.st.Admins(ctx)
	if err != nil {
		return nil, err
	}
	out := []AdminInfo{}
	for _, a := range as {
		out = append(out, AdminInfo{Name: a.Name, Created: a.Created.UTC()})
	}
	return out, nil
}

// RemoveAdmin removes an account of the admin page.
func (o *Ops) RemoveAdmin(ctx context.Context, name string) error {
	if err := o.st.RemoveAdmin(ctx, name); err != nil {
		return err
	}
	o.audit(ctx, "admin.remove", name, "")
	return nil
}

// TokenInfo is an API token as listed: never the token.
type TokenInfo struct {
	Name    string    `json:"name"`
	Domains []string  `json:"domains"` // [] : every domain
	Admin   bool      `json:"admin"`
	Created time.Time `json:"created"`
}

// AddToken makes a bearer token of the HTTP API and returns it: the one
// time it can be read, as only its hash is kept. An admin token may use
// every operation of the API; a token limited to domains sees only the
// tracking of their senders' messages.
func (o *Ops) AddToken(ctx context.Context, name string, admin bool, domains []string) (TokenInfo, string, error) {
	if admin && len(domains) > 0 {
		return TokenInfo{}, "", invalidf("an admin token cannot be limited to domains: give --admin or --domain, not both")
	}
	t, token, err := o.st.CreateAPITokenScope(ctx, name, admin, domains)
	if errors.Is(err, store.ErrExists) {
		return TokenInfo{}, "", &kindError{store.ErrExists, fmt.Sprintf("an API token named %q exists (%s token remove it first)", name, o.prog())}
	}
	if errors.Is(err, store.ErrNotFound) {
		return TokenInfo{}, "", &kindError{store.ErrNotFound, fmt.Sprintf("%v (%s domain add it first)", err, o.prog())}
	}
	if err != nil {
		return TokenInfo{}, "", err
	}
	reason := ""
	if admin {
		reason = "admin"
	} else if len(t.Domains) > 0 {
		reason = "domains " + strings.Join(t.Domains, " ")
	}
	o.audit(ctx, "token.add", t.Name, reason)
	return TokenInfo{Name: t.Name, Domains: append([]string{}, t.Domains...), Admin: t.Admin, Created: t.Created.UTC()}, token, nil
}

// Tokens lists the API tokens by name.
func (o *Ops) Tokens(ctx context.Context) ([]TokenInfo, error) {
	ts, err := o.st.APITokens(ctx)
	if err != nil {
		return nil, err
	}
	out := []TokenInfo{}
	for _, t := range ts {
		out = append(out, TokenInfo{Name: t.Name, Domains: append([]string{}, t.Domains...), Admin: t.Admin, Created: t.Created.UTC()})
	}
	return out, nil
}

// RemoveToken revokes an API token at once.
func (o *Ops) RemoveToken(ctx context.Context, name string) error {
	if err := o.st.RemoveAPIToken(ctx, name); err != nil {
		return err
	}
	o.audit(ctx, "token.remove", name, "")
	return nil
}

// WebhookInfo is a webhook as listed: never its secret.
type WebhookInfo struct {
	ID      int64     `json:"id"`
	Target  string    `json:"target"`
	URL     string    `json:"url"`
	Created time.Time `json:"created"`
	Pending int64     `json:"pending"`
}

// MinWebhookSecret is the shortest HMAC key of a webhook, in bytes.
const MinWebhookSecret = 16

// AddWebhook adds a webhook: signed JSON to url on every state change of
// the messages of a local domain's or address's senders.
func (o *Ops) AddWebhook(ctx context.Context, target, url string, secret []byte) (WebhookInfo, error) {
	secret = bytes.TrimSpace(secret)
	if len(secret) < MinWebhookSecret {
		return WebhookInfo{}, refusedf("the secret is shorter than %d bytes", MinWebhookSecret)
	}
	w, err := o.st.AddWebhook(ctx, target, url, secret)
	if errors.Is(err, store.ErrExists) {
		return WebhookInfo{}, &kindError{store.ErrExists, fmt.Sprintf("webhook %s %s exists", target, url)}
	}
	if err != nil {
		return WebhookInfo{}, err
	}
	o.audit(ctx, "webhook.add", fmt.Sprintf("%d %s %s", w.ID, w.Target, w.URL), "")
	return WebhookInfo{ID: w.ID, Target: w.Target, URL: w.URL, Created: w.Created.UTC()}, nil
}

// Webhooks lists the webhooks with their pending deliveries.
func (o *Ops) Webhooks(ctx context.Context) ([]WebhookInfo, error) {
	ws, err := o.st.Webhooks(ctx)
	if err != nil {
		return nil, err
	}
	out := []WebhookInfo{}
	for _, w := range ws {
		out = append(out, WebhookInfo{ID: w.ID, Target: w.Target, URL: w.URL, Created: w.Created.UTC(), Pending: w.Pending})
	}
	return out, nil
}

// RemoveWebhook removes a webhook.
func (o *Ops) RemoveWebhook(ctx context.Context, id int64) error {
	if err := o.st.RemoveWebhook(ctx, id); err != nil {
		return err
	}
	o.audit(ctx, "webhook.remove", fmt.Sprint(id), "")
	return nil
}
