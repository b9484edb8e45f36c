package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/track"
)

// The JSON API on the admin listener. Every request needs
// "Authorization: Bearer <token>" (hisp token add); without a valid one the
// answer is 401. The tracking endpoints take any token, a token limited to
// domains seeing only their senders' messages; every other endpoint needs
// an admin token (hisp token add NAME --admin), else 403. Errors are
// {"error": "..."} with a 4xx status (5xx for the server's own failures).
//
//	GET    /api/v1/messages?sender=&state=&since=&until=&limit=&events=
//	GET    /api/v1/messages/{message-id}
//	GET    /api/v1/domains                      POST {"domain"}       DELETE /api/v1/domains/{domain}
//	GET    /api/v1/addresses?domain=            POST {"address","password"}
//	DELETE /api/v1/addresses/{address}
//	GET    /api/v1/certs?owner=                 POST {"owner"} (issued by the local CA)
//	DELETE /api/v1/certs/{id}
//	GET    /api/v1/anchors?domain=              POST {"domain","pem","direction"}
//	DELETE /api/v1/anchors/{domain}/{id}
//	GET    /api/v1/bundles?domain=              POST {"domain","url","refresh","direction"}
//	GET    /api/v1/bundles/{domain}/{id}        the bundle with its anchors
//	POST   /api/v1/bundles/{domain}/{id}/refresh
//	DELETE /api/v1/bundles/{domain}/{id}
//	GET    /api/v1/queue?all=                   POST /api/v1/queue/{id}/retry   DELETE /api/v1/queue/{id}
//	GET    /api/v1/audit?limit=

// maxJSON bounds a request body.
const maxJSON = 1 << 20

func (h *handler) api(mux *http.ServeMux) {
	anyToken := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, h.apiAuth(false, f)) }
	admin := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, h.apiAuth(true, f)) }
	anyToken("GET /api/v1/messages/{id...}", h.apiMessage)
	anyToken("GET /api/v1/messages", h.apiMessages)

	admin("GET /api/v1/domains", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, r, http.StatusOK)(h.apiOps(r).Domains(r.Context()))
	})
	admin("POST /api/v1/domains", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Domain string `json:"domain"`
		}
		if decode(w, r, &req) {
			h.reply(w, r, http.StatusCreated)(h.apiOps(r).AddDomain(r.Context(), req.Domain))
		}
	})
	admin("DELETE /api/v1/domains/{domain}", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, r, http.StatusOK)(h.apiOps(r).RemoveDomain(r.Context(), r.PathValue("domain")))
	})

	admin("GET /api/v1/addresses", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, r, http.StatusOK)(h.apiOps(r).Addresses(r.Context(), r.URL.Query().Get("domain")))
	})
	admin("POST /api/v1/addresses", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Address  string `json:"address"`
			Password string `json:"password"`
		}
		if decode(w, r, &req) {
			h.reply(w, r, http.StatusCreated)(h.apiOps(r).AddAddress(r.Context(), req.Address, req.Password))
		}
	})
	admin("DELETE /api/v1/addresses/{address}", func(w http.ResponseWriter, r *http.Request) {
		addr, err := h.apiOps(r).RemoveAddress(r.Context(), r.PathValue("address"))
		h.reply(w, r, http.StatusOK)(map[string]string{"removed": addr}, err)
	})

	admin("GET /api/v1/certs", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, r, http.StatusOK)(h.apiOps(r).Certs(r.Context(), r.URL.Query().Get("owner")))
	})
	admin("POST /api/v1/certs", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Owner string `json:"owner"`
		}
		if !decode(w, r, &req) {
			return
		}
		if h.CRLBase == "" {
			apiError(w, http.StatusUnprocessableEntity, "this server has no base URL for CRLs: set public_url")
			return
		}
		o := h.apiOps(r)
		res, err := o.IssueCert(r.Context(), req.Owner, h.CRLBase)
		if err != nil {
			h.reply(w, r, 0)(nil, err)
			return
		}
		list, err := o.Certs(r.Context(), res.Cert.Owner)
		for _, c := range list {
			if c.ID == res.Cert.ID {
				h.reply(w, r, http.StatusCreated)(c, err)
				return
			}
		}
		h.reply(w, r, http.StatusCreated)(nil, err)
	})
	admin("DELETE /api/v1/certs/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := apiID(w, r)
		if !ok {
			return
		}
		res, err := h.apiOps(r).RemoveCert(r.Context(), id)
		out := map[string]any{"removed": res.Cert.ID}
		if res.Revoked != nil {
			out["revoked_serial"] = res.Revoked.String()
		}
		h.reply(w, r, http.StatusOK)(out, err)
	})

	admin("GET /api/v1/anchors", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, r, http.StatusOK)(h.apiOps(r).Anchors(r.Context(), r.URL.Query().Get("domain")))
	})
	admin("POST /api/v1/anchors", h.apiAddAnchor)
	admin("DELETE /api/v1/anchors/{domain}/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := apiID(w, r); ok {
			h.reply(w, r, http.StatusOK)(h.apiOps(r).RemoveAnchor(r.Context(), r.PathValue("domain"), id))
		}
	})

	admin("GET /api/v1/bundles", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, r, http.StatusOK)(h.apiOps(r).Bundles(r.Context(), r.URL.Query().Get("domain")))
	})
	admin("POST /api/v1/bundles", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Domain    string `json:"domain"`
			URL       string `json:"url"`
			Refresh   string `json:"refresh"`
			Direction string `json:"direction"`
		}
		if !decode(w, r, &req) {
			return
		}
		br, err := bundleRequest(req.Domain, req.URL, req.Refresh, req.Direction)
		if err != nil {
			h.reply(w, r, 0)(nil, err)
			return
		}
		res, err := h.apiOps(r).AddBundle(r.Context(), br)
		h.reply(w, r, http.StatusCreated)(res.Bundle, err)
	})
	admin("GET /api/v1/bundles/{domain}/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := apiID(w, r); ok {
			h.reply(w, r, http.StatusOK)(h.apiOps(r).Bundle(r.Context(), r.PathValue("domain"), id))
		}
	})
	admin("POST /api/v1/bundles/{domain}/{id}/refresh", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := apiID(w, r); ok {
			h.reply(w, r, http.StatusOK)(h.apiOps(r).RefreshBundle(r.Context(), r.PathValue("domain"), id))
		}
	})
	admin("DELETE /api/v1/bundles/{domain}/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := apiID(w, r); ok {
			h.reply(w, r, http.StatusOK)(h.apiOps(r).RemoveBundle(r.Context(), r.PathValue("domain"), id))
		}
	})

	admin("GET /api/v1/queue", func(w http.ResponseWriter, r *http.Request) {
		all := r.URL.Query().Get("all")
		h.reply(w, r, http.StatusOK)(h.apiOps(r).Queue(r.Context(), all == "1" || all == "true"))
	})
	admin("POST /api/v1/queue/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := apiID(w, r); ok {
			n, err := h.apiOps(r).RetryQueue(r.Context(), id)
			h.reply(w, r, http.StatusOK)(map[string]int64{"id": id, "due_now": n}, err)
		}
	})
	admin("DELETE /api/v1/queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := apiID(w, r); ok {
			h.reply(w, r, http.StatusOK)(h.apiOps(r).DropQueue(r.Context(), id))
		}
	})
	admin("GET /api/v1/audit", func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > 1000 {
				apiError(w, http.StatusBadRequest, "limit: want 1-1000")
				return
			}
			limit = n
		}
		evs, err := h.apiOps(r).AuditLog(r.Context(), limit)
		type event struct {
			Time    time.Time `json:"time"`
			Actor   string    `json:"actor"`
			Action  string    `json:"action"`
			Subject string    `json:"subject"`
			Verdict string    `json:"verdict"`
			Reason  string    `json:"reason,omitempty"`
		}
		out := []event{}
		for _, e := range evs {
			out = append(out, event{e.Time.UTC(), e.Actor, e.Action, e.Subject, e.Verdict, e.Reason})
		}
		h.reply(w, r, http.StatusOK)(out, err)
	})
}

type apiTokenKey struct{}

// apiToken is the token of an authenticated API request.
func apiToken(r *http.Request) store.APIToken {
	t, _ := r.Context().Value(apiTokenKey{}).(store.APIToken)
	return t
}

// apiOps is the operations of the request's token.
func (h *handler) apiOps(r *http.Request) *ops.Ops {
	return h.ops("token " + apiToken(r).Name + " (" + r.RemoteAddr + ")")
}

// apiAuth lets requests with a valid bearer token through; admin
// endpoints want an admin token.
func (h *handler) apiAuth(admin bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if token := BearerToken(r); token != "" {
			t, err := h.Store.CheckAPIToken(r.Context(), token)
			if err == nil {
				if admin && !t.Admin {
					apiError(w, http.StatusForbidden, "this endpoint needs an admin token (hisp token add NAME --admin); token "+t.Name+" is not one")
					return
				}
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), apiTokenKey{}, t)))
				return
			}
			if !errors.Is(err, store.ErrNotFound) {
				h.Log.Error("api: check token", "err", err)
				apiError(w, http.StatusServiceUnavailable, "token check failed")
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="hisp"`)
		apiError(w, http.StatusUnauthorized, "a valid bearer token is required (hisp token add NAME)")
	})
}

// BearerToken is the token of an "Authorization: Bearer" header; "" if
// none.
func BearerToken(r *http.Request) string {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// decode reads a JSON request body into v; unknown fields are an error.
// On failure it answers 400 and returns false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		apiError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		apiError(w, http.StatusBadRequest, "request body: one JSON object expected")
		return false
	}
	return true
}

// reply answers an operation's result as JSON with code, or its error
// with the error's status: h.reply(w, r, 200)(o.Domains(ctx)).
func (h *handler) reply(w http.ResponseWriter, r *http.Request, code int) func(any, error) {
	return func(v any, err error) {
		if err != nil {
			s := status(err)
			msg := err.Error()
			if s >= 500 {
				h.Log.Error("api", "path", r.URL.Path, "err", err)
				msg = "server error"
			}
			apiError(w, s, msg)
			return
		}
		apiJSON(w, code, v)
	}
}

// apiID parses the {id} of a path; on failure it answers 400.
func apiID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, ok := pathID(r)
	if !ok {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("id %q: want a number as listed", r.PathValue("id")))
	}
	return id, ok
}

func (h *handler) apiAddAnchor(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Domain    string `json:"domain"`
		PEM       string `json:"pem"`
		Direction string `json:"direction"`
	}
	if !decode(w, r, &req) {
		return
	}
	dir, err := ops.ParseDirection(req.Direction)
	if err != nil {
		h.reply(w, r, 0)(nil, err)
		return
	}
	if strings.TrimSpace(req.PEM) == "" {
		apiError(w, http.StatusBadRequest, "pem: want a PEM certificate")
		return
	}
	added, err := h.apiOps(r).AddAnchorsPEM(r.Context(), req.Domain, []byte(req.PEM), dir)
	if err != nil {
		h.reply(w, r, 0)(nil, err)
		return
	}
	// One certificate: the anchor; several: the list.
	code := http.StatusCreated
	if len(added) == 1 && added[0].Existing {
		code = http.StatusOK
	}
	if len(added) == 1 {
		apiJSON(w, code, added[0].Anchor)
		return
	}
	out := []ops.AnchorInfo{}
	for _, a := range added {
		out = append(out, a.Anchor)
	}
	apiJSON(w, code, out)
}

func (h *handler) apiMessage(w http.ResponseWriter, r *http.Request) {
	m, err := h.apiOps(r).TrackedMessage(r.Context(), r.PathValue("id"), ops.Scope{Domains: apiToken(r).Domains})
	if errors.Is(err, ops.ErrInvalid) {
		apiError(w, http.StatusNotFound, "no message-id")
		return
	}
	if errors.Is(err, store.ErrNotFound) {
		// A scoped token cannot tell others' messages from missing ones.
		apiError(w, http.StatusNotFound, "no tracked message "+track.NormalizeMessageID(r.PathValue("id")))
		return
	}
	if err != nil {
		h.reply(w, r, 0)(nil, err)
		return
	}
	apiJSON(w, http.StatusOK, track.View(m))
}

func (h *handler) apiMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.TrackFilter{Sender: q.Get("sender"), State: store.TrackState(q.Get("state")), Events: q.Get("events") == "1" || q.Get("events") == "true"}
	if f.State != "" && !f.State.Valid() {
		apiError(w, http.StatusBadRequest, "state: want queued, relayed, processed, dispatched or failed")
		return
	}
	var err error
	if f.Since, err = apiTime(q.Get("since")); err != nil {
		apiError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Until, err = apiTime(q.Get("until")); err != nil {
		apiError(w, http.StatusBadRequest, "until: "+err.Error())
		return
	}
	if l := q.Get("limit"); l != "" {
		if f.Limit, err = strconv.Atoi(l); err != nil || f.Limit < 1 || f.Limit > 1000 {
			apiError(w, http.StatusBadRequest, "limit: want 1-1000")
			return
		}
	}
	ms, err := h.apiOps(r).TrackedMessages(r.Context(), f, ops.Scope{Domains: apiToken(r).Domains})
	if err != nil {
		h.reply(w, r, 0)(nil, err)
		return
	}
	out := struct {
		Messages []track.MessageView `json:"messages"`
	}{Messages: []track.MessageView{}}
	for _, m := range ms {
		out.Messages = append(out.Messages, track.View(m))
	}
	apiJSON(w, http.StatusOK, out)
}

// apiTime parses an RFC 3339 time, Unix seconds or a duration back from
// now; "" is the zero time.
func apiTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time, Unix seconds or a duration", v)
}

func apiJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
