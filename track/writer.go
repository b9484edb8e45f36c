package track

import (
	"context"
	"sync"
	"time"

	"github.com/hisp-project/hisp/store"
)

// writer commits the Track calls of concurrent submissions together: one
// transaction (one fsync) for every call waiting when the last commit ended,
// as the outbound queue does, so that tracking adds little to a busy
// submission path. Each caller waits for the commit of its message.
type writer struct {
	st     *store.Store
	mu     sync.RWMutex // held for reading while sending on reqs; close takes it to close reqs
	closed bool
	reqs   chan *trackReq
	done   chan struct{}
}

type trackReq struct {
	m   store.TrackedMessage
	res chan trackRes // buffered, written once
}

type trackRes struct {
	id  int64
	err error
}

// maxTrackBatch is the most messages one transaction takes.
const maxTrackBatch = 256

func newWriter(st *store.Store) *writer {
	w := &writer{st: st, reqs: make(chan *trackReq, maxTrackBatch), done: make(chan struct{})}
	go w.run()
	return w
}

// track stores a message, with others waiting at the same time (after
// close, on its own), and returns its row id.
func (w *writer) track(ctx context.Context, m store.TrackedMessage) (int64, error) {
	r := &trackReq{m: m, res: make(chan trackRes, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		tm, err := w.st.TrackMessage(ctx, m)
		return tm.ID, err
	}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		w.mu.RUnlock()
		return 0, ctx.Err()
	}
	w.mu.RUnlock()
	res := <-r.res
	return res.id, res.err
}

func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	<-w.done
}

func (w *writer) run() {
	defer close(w.done)
	for first := range w.reqs {
		batch := []*trackReq{first}
	gather:
		for len(batch) < maxTrackBatch {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		ms := make([]store.TrackedMessage, len(batch))
		for i, r := range batch {
			ms[i] = r.m
		}
		// The transaction follows no caller's context: once started, its
		// outcome is what every caller is told.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, errs, err := w.st.TrackMessages(ctx, ms)
		cancel()
		for i, r := range batch {
			if err != nil {
				r.res <- trackRes{err: err}
			} else {
				r.res <- trackRes{id: out[i].ID, err: errs[i]}
			}
		}
	}
}
