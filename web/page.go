package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

// The admin page: the gateway at a glance for the accounts of hisp admin
// add (HTTP Basic authentication; keep the admin listener on loopback or
// behind TLS), with forms for trust anchors, trust bundles and the queue.
// Every form posts to an operation of package ops, as the CLI does, and
// is protected against cross-site requests (http.CrossOriginProtection).

//go:embed page.html
var pageFiles embed.FS

var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"whenp": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"day": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02")
	},
	"join": strings.Join,
}).ParseFS(pageFiles, "page.html"))

// maxForm bounds a form's body: a PEM file of anchors fits many times.
const maxForm = 1 << 20

func (h *handler) page(mux *http.ServeMux) {
	csrf := http.NewCrossOriginProtection()
	post := func(pattern string, f http.HandlerFunc) {
		mux.Handle("POST "+pattern, csrf.Handler(h.adminAuth(f)))
	}
	mux.Handle("GET /{$}", h.adminAuth(http.HandlerFunc(h.showPage)))
	post("/admin/queue/{id}/{action}", h.queueAction)
	post("/admin/anchors", h.addAnchor)
	post("/admin/anchors/{domain}/{id}/remove", h.removeAnchor)
	post("/admin/bundles", h.addBundle)
	post("/admin/bundles/{domain}/{id}/{action}", h.bundleAction)
}

type adminKey struct{}

// adminAuth lets admin accounts through. Every refused login is audited
// and answered after the login limiter's delay.
func (h *handler) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		name, password, ok := r.BasicAuth()
		if ok {
			ip := remoteIP(r)
			sleep := func(ctx context.Context, d time.Duration) { loginlimit.Sleep(ctx, d) }
			if err := h.logins.Wait(r.Context(), loginlimit.Attempt{Name: name, IP: ip}, sleep); errors.Is(err, loginlimit.ErrBusy) {
				w.Header().Set("Retry-After", "30")
				http.Error(w, "too many login attempts, try again later", http.StatusTooManyRequests)
				return
			} else if err != nil {
				return // the client left
			}
			a, err := h.Store.CheckAdminPassword(r.Context(), name, password)
			if err == nil {
				h.logins.Succeed(name, ip)
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, a.Name)))
				return
			}
			if !errors.Is(err, store.ErrBadCredentials) {
				h.Log.Error("admin page: check password", "err", err)
				http.Error(w, "login check failed", http.StatusServiceUnavailable)
				return
			}
			delay := h.logins.Fail(name, ip)
			h.ops(limitString(name, 100)+" ("+r.RemoteAddr+")").AuditFailure(r.Context(), "admin.login", "", "refused", "invalid name or password")
			h.Log.Warn("admin page: login refused", "login", limitString(name, 100), "remote", r.RemoteAddr, "delay", delay)
			if !loginlimit.Sleep(r.Context(), delay) {
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="hisp admin", charset="UTF-8"`)
		http.Error(w, "an admin login is required (hisp admin add NAME --password-file FILE)", http.StatusUnauthorized)
	})
}

// adminOps is the operations of the signed-in admin.
func (h *handler) adminOps(r *http.Request) *ops.Ops {
	name, _ := r.Context().Value(adminKey{}).(string)
	return h.ops(name + " (" + r.RemoteAddr + ")")
}

// pageQueueRows is how many queue entries the page shows, oldest first;
// hisp queue list has them all.
const pageQueueRows = 200

// expiryWarning is how far ahead the page lists expiring certificates.
const expiryWarning = 30 * 24 * time.Hour

// anchorRow is an anchor on the page, with where it came from.
type anchorRow struct {
	ops.AnchorInfo
	From string // "added by hand" or the bundle's location
}

// pageView is what the page shows.
type pageView struct {
	Admin     string
	Hostname  string
	Now       time.Time
	Notice    string
	Domains   []ops.DomainInfo
	Addresses []ops.AddressInfo
	Certs     []ops.CertInfo
	Expiring  []ops.CertInfo
	Anchors   []anchorRow
	Bundles   []ops.BundleInfo
	Relays    []ops.RelayInfo
	Queue     []ops.QueueEntry
	QueueMore int // entries not shown
	Tracked   []store.TrackedMessage
	Audit     []store.Event
}

func (h *handler) showPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	o := h.adminOps(r)
	name, _ := r.Context().Value(adminKey{}).(string)
	v := pageView{Admin: name, Hostname: h.Hostname, Now: h.now(), Notice: notice(r.URL.Query())}
	err := func() error {
		var err error
		if v.Domains, err = o.Domains(ctx); err != nil {
			return err
		}
		if v.Addresses, err = o.Addresses(ctx, ""); err != nil {
			return err
		}
		if v.Certs, err = o.Certs(ctx, ""); err != nil {
			return err
		}
		v.Expiring = o.Expiring(v.Certs, expiryWarning)
		if v.Bundles, err = o.Bundles(ctx, ""); err != nil {
			return err
		}
		from := map[int64]string{}
		for _, b := range v.Bundles {
			from[b.ID] = "bundle " + strconv.FormatInt(b.ID, 10) + ": " + b.Location
		}
		anchors, err := o.Anchors(ctx, "")
		if err != nil {
			return err
		}
		for _, a := range anchors {
			row := anchorRow{AnchorInfo: a, From: "added by hand"}
			if a.BundleID != 0 {
				row.From = from[a.BundleID]
			}
			v.Anchors = append(v.Anchors, row)
		}
		if v.Relays, err = o.Relays(ctx); err != nil {
			return err
		}
		var total int
		if v.Queue, total, err = o.QueueHead(ctx, pageQueueRows); err != nil {
			return err
		}
		v.QueueMore = total - len(v.Queue)
		if v.Tracked, err = o.TrackedMessages(ctx, store.TrackFilter{Limit: 50}, ops.Scope{}); err != nil {
			return err
		}
		v.Audit, err = o.AuditLog(ctx, 50)
		return err
	}()
	if err != nil {
		h.Log.Error("admin page", "err", err)
		http.Error(w, "the store could not be read: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := pageTemplate.Execute(w, v); err != nil {
		h.Log.Error("admin page", "err", err)
	}
}

// formError answers a form whose operation failed: the status of the
// error and a short page with the reason and a way back.
func (h *handler) formError(w http.ResponseWriter, r *http.Request, what string, err error) {
	code := status(err)
	if code >= 500 {
		h.Log.Error("admin page: "+what, "err", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<!doctype html><title>hisp: %s failed</title><p>%s failed: <span id=\"error\">%s</span></p><p><a href=\"/\">back to the admin page</a></p>\n",
		template.HTMLEscapeString(what), template.HTMLEscapeString(what), template.HTMLEscapeString(err.Error()))
}

// done redirects to the page with the notice of an action.
func done(w http.ResponseWriter, r *http.Request, q url.Values) {
	http.Redirect(w, r, "/?"+q.Encode(), http.StatusSeeOther)
}

// pathID parses the {id} of a path.
func pathID(r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	return id, err == nil && id > 0
}

// queueAction is the queue's retry (now) and drop, as hisp queue
// retry|drop do.
func (h *handler) queueAction(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r)
	if !ok {
		http.Error(w, "bad queue id", http.StatusBadRequest)
		return
	}
	o := h.adminOps(r)
	q := url.Values{"done": {r.PathValue("action")}, "id": {strconv.FormatInt(id, 10)}}
	var err error
	switch r.PathValue("action") {
	case "retry":
		var n int64
		if n, err = o.RetryQueue(r.Context(), id); err == nil {
			q.Set("n", strconv.FormatInt(n, 10))
		}
	case "drop":
		_, err = o.DropQueue(r.Context(), id)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		h.formError(w, r, "queue "+r.PathValue("action"), err)
		return
	}
	done(w, r, q)
}

// addAnchor adds the certificates of a pasted or uploaded PEM (or DER)
// as anchors of a domain.
func (h *handler) addAnchor(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseMultipartForm(maxForm); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	data := []byte(strings.TrimSpace(r.FormValue("pem")))
	if f, _, err := r.FormFile("file"); err == nil {
		up, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			http.Error(w, "upload: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(up) > 0 {
			data = up
		}
	}
	if len(data) == 0 {
		h.formError(w, r, "add anchor", fmt.Errorf("paste a PEM certificate or choose a file: %w", ops.ErrInvalid))
		return
	}
	dir, err := ops.ParseDirection(r.FormValue("direction"))
	if err != nil {
		h.formError(w, r, "add anchor", err)
		return
	}
	added, err := h.adminOps(r).AddAnchorsPEM(r.Context(), r.FormValue("domain"), data, dir)
	if err != nil {
		h.formError(w, r, "add anchor", err)
		return
	}
	n := 0
	for _, a := range added {
		if !a.Existing {
			n++
		}
	}
	done(w, r, url.Values{"done": {"anchor"}, "n": {strconv.Itoa(n)}, "id": {strconv.FormatInt(added[0].Anchor.ID, 10)}})
}

func (h *handler) removeAnchor(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r)
	if !ok {
		http.Error(w, "bad anchor id", http.StatusBadRequest)
		return
	}
	if _, err := h.adminOps(r).RemoveAnchor(r.Context(), r.PathValue("domain"), id); err != nil {
		h.formError(w, r, "remove anchor", err)
		return
	}
	done(w, r, url.Values{"done": {"anchor-removed"}, "id": {strconv.FormatInt(id, 10)}})
}

// addBundle adds a bundle URL with its refresh interval; it is fetched
// before it is recorded.
func (h *handler) addBundle(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	req, err := bundleRequest(r.FormValue("domain"), r.FormValue("url"), r.FormValue("refresh"), r.FormValue("direction"))
	if err != nil {
		h.formError(w, r, "add bundle", err)
		return
	}
	res, err := h.adminOps(r).AddBundle(r.Context(), req)
	if err != nil {
		h.formError(w, r, "add bundle", err)
		return
	}
	done(w, r, url.Values{"done": {"bundle"}, "id": {strconv.FormatInt(res.Bundle.ID, 10)}, "n": {strconv.Itoa(res.Bundle.Anchors)}})
}

// bundleRequest checks the fields of a bundle to add from the web: an
// http(s) URL only, never a file of the server.
func bundleRequest(domain, location, refresh, direction string) (ops.BundleRequest, error) {
	loc, err := ops.BundleLocation(strings.TrimSpace(location), false)
	if err != nil {
		return ops.BundleRequest{}, err
	}
	d, err := ops.ParseRefresh(strings.TrimSpace(refresh))
	if err != nil {
		return ops.BundleRequest{}, err
	}
	dir, err := ops.ParseDirection(direction)
	if err != nil {
		return ops.BundleRequest{}, err
	}
	return ops.BundleRequest{Domain: domain, Location: loc, Refresh: d, Direction: dir}, nil
}

// bundleAction is a bundle's refresh (now) and remove.
func (h *handler) bundleAction(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(r)
	if !ok {
		http.Error(w, "bad bundle id", http.StatusBadRequest)
		return
	}
	o := h.adminOps(r)
	q := url.Values{"id": {strconv.FormatInt(id, 10)}}
	switch r.PathValue("action") {
	case "refresh":
		b, err := o.RefreshBundle(r.Context(), r.PathValue("domain"), id)
		if err != nil {
			h.formError(w, r, "refresh bundle", err)
			return
		}
		q.Set("done", "bundle-refreshed")
		q.Set("n", strconv.Itoa(b.Anchors))
	case "remove":
		if _, err := o.RemoveBundle(r.Context(), r.PathValue("domain"), id); err != nil {
			h.formError(w, r, "remove bundle", err)
			return
		}
		q.Set("done", "bundle-removed")
	default:
		http.NotFound(w, r)
		return
	}
	done(w, r, q)
}

// notice is the line the page shows after one of its own actions. The
// query names the action by key and its numbers; the text is the page's
// own, so a link cannot make the page say anything else (an unknown key or
// a number that is not one shows nothing).
func notice(q url.Values) string {
	id, err := strconv.ParseInt(q.Get("id"), 10, 64)
	if err != nil || id <= 0 {
		return ""
	}
	n, nerr := strconv.ParseInt(q.Get("n"), 10, 64)
	if nerr != nil || n < 0 {
		n = -1
	}
	switch q.Get("done") {
	case "retry":
		if n < 0 {
			return ""
		}
		return fmt.Sprintf("queue entry %d: %d recipient(s) due now", id, n)
	case "drop":
		return fmt.Sprintf("queue entry %d dropped (no DSN)", id)
	case "anchor":
		if n < 0 {
			return ""
		}
		if n == 0 {
			return fmt.Sprintf("already an anchor: %d", id)
		}
		return fmt.Sprintf("added %d anchor(s), the first is %d", n, id)
	case "anchor-removed":
		return fmt.Sprintf("anchor %d removed", id)
	case "bundle":
		if n < 0 {
			return ""
		}
		return fmt.Sprintf("added bundle %d with %d anchor(s)", id, n)
	case "bundle-refreshed":
		if n < 0 {
			return ""
		}
		return fmt.Sprintf("bundle %d refreshed: %d anchor(s)", id, n)
	case "bundle-removed":
		return fmt.Sprintf("bundle %d removed with its anchors", id)
	}
	return ""
}
