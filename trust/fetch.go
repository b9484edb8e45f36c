package trust

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// failureTTL is how long a failed fetch (CRL, OCSP, AIA) is remembered, so an
// unreachable server does not stall every validation for the whole HTTP
// timeout.
const failureTTL = time.Minute

// maxCacheEntries is the size above which a cache is swept of expired
// entries.
const maxCacheEntries = 4096

type failure struct {
	err   error
	until time.Time
}

// flight is one fetch in progress; concurrent validations needing the same
// URL wait for it instead of fetching again.
type flight struct {
	done     chan struct{}
	val      any
	err      error
	canceled bool // err is the fetching caller's context ending
}

// once runs fn for key unless it failed less than failureTTL ago or another
// goroutine is already running it, in which case it waits for that result.
// fn stores its result in the right cache itself.
func (v *Validator) once(ctx context.Context, key string, now time.Time, fn func() (any, error)) (any, error) {
	for {
		v.mu.Lock()
		if f, ok := v.fetchFailure[key]; ok && now.Before(f.until) {
			v.mu.Unlock()
			return nil, f.err
		}
		fl := v.inflight[key]
		if fl == nil {
			break // with v.mu held
		}
		v.mu.Unlock()
		select {
		case <-fl.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !fl.canceled {
			return fl.val, fl.err
		}
		// The fetching caller gave up; fetch for this one.
	}
	fl := &flight{done: make(chan struct{})}
	v.inflight[key] = fl
	v.mu.Unlock()

	fl.val, fl.err = fn()
	fl.canceled = fl.err != nil && ctx.Err() != nil

	v.mu.Lock()
	delete(v.inflight, key)
	switch {
	case fl.err == nil:
		delete(v.fetchFailure, key)
	case !fl.canceled:
		// A cancelled caller says nothing about the server.
		v.fetchFailure[key] = failure{err: fl.err, until: now.Add(v.failureTTL)}
		sweep(v.fetchFailure, now, func(f failure) time.Time { return f.until })
	}
	v.mu.Unlock()
	close(fl.done)
	return fl.val, fl.err
}

// sweep removes expired entries from a cache that has grown large, and
// empties it if that is not enough.
func sweep[K comparable, V any](m map[K]V, now time.Time, expires func(V) time.Time) {
	if len(m) <= maxCacheEntries {
		return
	}
	for k, e := range m {
		if !now.Before(expires(e)) {
			delete(m, k)
		}
	}
	if len(m) > 2*maxCacheEntries {
		clear(m)
	}
}

func isHTTPURL(u string) bool {
	l := strings.ToLower(u)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

// httpGet fetches rawURL, refusing responses other than 200 and bodies
// larger than limit.
func httpGet(ctx context.Context, client *http.Client, rawURL string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	return do(client, req, limit)
}

// httpPost posts body to rawURL.
func httpPost(ctx context.Context, client *http.Client, rawURL, contentType string, body []byte, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	return do(client, req, limit)
}

func do(client *http.Client, req *http.Request, limit int64) ([]byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		// The URL is already in the caller's context.
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("response larger than %d bytes", limit)
	}
	return data, nil
}
