// Package web serves hisp's admin HTTP side on the admin listener: the
// admin page (HTTP Basic logins of hisp admin add), with forms that manage
// trust anchors, trust bundles and the queue, and the JSON API under
// /api/v1/ (bearer tokens of hisp token add). Both are thin callers of
// package ops, which holds the rules and writes the audit records; key
// material is never shown.
package web

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

// Options is what the handlers need.
type Options struct {
	Store    *store.Store
	Log      *slog.Logger
	Hostname string // shown on the page
	// CRLBase is the base URL of the CRLs of certificates issued through
	// the API (config BaseURL); "" refuses issuing.
	CRLBase string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// HTTPClient fetches trust bundles; nil is the trust package's default.
	HTTPClient *http.Client
}

type handler struct {
	Options
	logins *loginlimit.Limiter
}

// Register adds the admin page, its forms and the API to mux: GET /, POST
// /admin/..., and /api/v1/....
func Register(mux *http.ServeMux, opt Options) {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	h := &handler{Options: opt, logins: loginlimit.New(nil)}
	h.page(mux)
	h.api(mux)
}

func (h *handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// ops returns the operations of actor.
func (h *handler) ops(actor string) *ops.Ops {
	o := ops.New(h.Store, actor)
	o.Now, o.HTTPClient, o.Log = h.Now, h.HTTPClient, h.Log
	return o
}

// remoteIP is the address of the client, without its port.
func remoteIP(r *http.Request) string {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return ip
}

// status maps an error of ops to an HTTP status: 400 for a malformed
// request, 422 for one a rule refuses, 404, 409, else 500.
func status(err error) int {
	switch {
	case errors.Is(err, ops.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ops.ErrRefused):
		return http.StatusUnprocessableEntity
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrExists):
		return http.StatusConflict
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// limitString cuts s to n bytes, for names that go into logs.
func limitString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
