package gateway

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/store"
)

// The admin web page: a read-mostly view of the gateway for the accounts
// of hisp admin add (HTTP Basic authentication; keep the admin listener on
// loopback or behind TLS), with the queue's retry and drop. Every
// operation is the store's, as the CLI uses it; private keys are never
// shown (a certificate says only whether hisp holds its key).

//go:embed adminui.html
var adminUIFiles embed.FS

var adminUITemplate = template.Must(template.New("adminui.html").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": strings.Join,
}).ParseFS(adminUIFiles, "adminui.html"))

// adminUI registers the page and its actions on the admin mux.
func (s *server) adminUI(mux *http.ServeMux) {
	csrf := http.NewCrossOriginProtection()
	logins := loginlimit.New(nil)
	mux.Handle("GET /{$}", s.adminAuth(logins, http.HandlerFunc(s.adminPage)))
	mux.Handle("POST /admin/queue/{id}/{action}", csrf.Handler(s.adminAuth(logins, http.HandlerFunc(s.adminQueueAction))))
}

// adminAuth lets admin accounts through. Every refused login is audited
// and answered after the login limiter's delay.
func (s *server) adminAuth(logins *loginlimit.Limiter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		name, password, ok := r.BasicAuth()
		if ok {
			ip, _, _ := net.SplitHostPort(r.RemoteAddr)
			sleep := func(ctx context.Context, d time.Duration) { loginlimit.Sleep(ctx, d) }
			if err := logins.Wait(r.Context(), loginlimit.Attempt{Name: name, IP: ip}, sleep); errors.Is(err, loginlimit.ErrBusy) {
				w.Header().Set("Retry-After", "30")
				http.Error(w, "too many login attempts, try again later", http.StatusTooManyRequests)
				return
			} else if err != nil {
				return // the client left
			}
			a, err := s.st.CheckAdminPassword(r.Context(), name, password)
			if err == nil {
				logins.Succeed(name, ip)
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, a.Name)))
				return
			}
			if !errors.Is(err, store.ErrBadCredentials) {
				s.log.Error("admin page: check password", "err", err)
				http.Error(w, "login check failed", http.StatusServiceUnavailable)
				return
			}
			delay := logins.Fail(name, ip)
			s.auditAdmin(r, limitString(name, 100), "admin.login", "", "refused", "invalid name or password")
			s.log.Warn("admin page: login refused", "login", limitString(name, 100), "remote", r.RemoteAddr, "delay", delay)
			if !loginlimit.Sleep(r.Context(), delay) {
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="hisp admin", charset="UTF-8"`)
		http.Error(w, "an admin login is required (hisp admin add NAME --password-file FILE)", http.StatusUnauthorized)
	})
}

type adminKey struct{}

// adminQueueRows is how many queue entries the page shows, oldest first;
// hisp queue list has them all.
const adminQueueRows = 200

func adminOf(r *http.Request) string {
	name, _ := r.Context().Value(adminKey{}).(string)
	return name
}

func (s *server) auditAdmin(r *http.Request, actor, action, subject, verdict, reason string) {
	ev := store.Event{Actor: actor + " (" + r.RemoteAddr + ")", Action: action, Subject: subject, Verdict: verdict, Reason: reason}
	if err := s.st.Audit(context.WithoutCancel(r.Context()), ev); err != nil {
		s.log.Warn("audit record failed", "err", err)
	}
}

// adminView is what the page shows.
type adminView struct {
	Admin     string
	Hostname  string
	Now       time.Time
	Notice    string
	Domains   []store.Domain
	Addresses []store.Address
	Certs     []store.Certificate
	Anchors   []store.Anchor
	Bundles   []store.Bundle
	Relays    []store.Relay
	Queue     []store.QueuedMessage
	QueueMore int // entries not shown
	Tracked   []store.TrackedMessage
	Audit     []store.Event
}

func (s *server) adminPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v := adminView{Admin: adminOf(r), Hostname: s.cfg.Hostname, Now: s.now(), Notice: adminNotice(r.URL.Query())}
	err := func() error {
		var err error
		if v.Domains, err = s.st.Domains(ctx); err != nil {
			return err
		}
		for _, d := range v.Domains {
			as, err := s.st.Addresses(ctx, d.Name)
			if err != nil {
				return err
			}
			v.Addresses = append(v.Addresses, as...)
			an, err := s.st.Anchors(ctx, d.Name)
			if err != nil {
				return err
			}
			v.Anchors = append(v.Anchors, an...)
			bs, err := s.st.Bundles(ctx, d.Name)
			if err != nil {
				return err
			}
			v.Bundles = append(v.Bundles, bs...)
		}
		if v.Certs, err = s.st.Certificates(ctx, store.CertFilter{}); err != nil {
			return err
		}
		if v.Relays, err = s.st.Relays(ctx); err != nil {
			return err
		}
		var total int
		if v.Queue, total, err = s.st.QueueHead(ctx, adminQueueRows); err != nil {
			return err
		}
		v.QueueMore = total - len(v.Queue)
		if v.Tracked, err = s.st.TrackedMessages(ctx, store.TrackFilter{Limit: 50}); err != nil {
			return err
		}
		v.Audit, err = s.st.AuditEvents(ctx, 50)
		return err
	}()
	if err != nil {
		s.log.Error("admin page", "err", err)
		http.Error(w, "the store could not be read: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if err := adminUITemplate.Execute(w, v); err != nil {
		s.log.Error("admin page", "err", err)
	}
}

// adminQueueAction is the queue's retry (now) and drop, as hisp queue
// retry|drop do.
func (s *server) adminQueueAction(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "bad queue id", http.StatusBadRequest)
		return
	}
	admin := adminOf(r)
	done := url.Values{"done": {r.PathValue("action")}, "id": {strconv.FormatInt(id, 10)}}
	switch r.PathValue("action") {
	case "retry":
		var n int64
		if n, err = s.st.QueueRetry(r.Context(), id, s.now()); err == nil {
			done.Set("n", strconv.FormatInt(n, 10))
		}
	case "drop":
		_, err = s.st.QueueDrop(r.Context(), id)
	default:
		http.NotFound(w, r)
		return
	}
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, fmt.Sprintf("no queue entry %d", id), http.StatusNotFound)
		return
	}
	if err != nil {
		s.log.Error("admin queue action", "id", id, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.auditAdmin(r, admin, "queue."+r.PathValue("action"), strconv.FormatInt(id, 10), "ok", "admin page")
	s.log.Info("admin action", "admin", admin, "action", r.PathValue("action"), "queue_id", id)
	http.Redirect(w, r, "/?"+done.Encode(), http.StatusSeeOther)
}

// adminNotice is the line the page shows after one of its own actions. The
// query names the action by key and its numbers; the text is the page's
// own, so a link cannot make the page say anything else (an unknown key or
// a number that is not one shows nothing).
func adminNotice(q url.Values) string {
	id, err := strconv.ParseInt(q.Get("id"), 10, 64)
	if err != nil || id <= 0 {
		return ""
	}
	switch q.Get("done") {
	case "retry":
		n, err := strconv.ParseInt(q.Get("n"), 10, 64)
		if err != nil || n < 0 {
			return ""
		}
		return fmt.Sprintf("queue entry %d: %d recipient(s) due now", id, n)
	case "drop":
		return fmt.Sprintf("queue entry %d dropped (no DSN)", id)
	}
	return ""
}
