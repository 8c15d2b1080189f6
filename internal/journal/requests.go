package journal

import (
	"context"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// requests records when a reconcile last sent a request to the API server:
// the last moment it could have acted on anything another member sees.
type requests struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	n     int
	last  time.Time
}

type requestsKey struct{}

func withRequests(ctx context.Context, r *requests) context.Context {
	return context.WithValue(ctx, requestsKey{}, r)
}

func (r *requests) sent() {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.last = now
}

func (r *requests) snapshot() (n int, last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.last
}

// TrackRequests wraps the transport of the operator's clients so that each
// journal entry records how many requests its reconcile sent and when it
// sent the last one (Entry.Requests, Entry.LastRequest). Install it with
// rest.Config.Wrap before the manager is created. Requests made outside a
// journalled reconcile pass through untouched.
func TrackRequests(rt http.RoundTripper) http.RoundTripper {
	return roundTripper{next: rt}
}

type roundTripper struct{ next http.RoundTripper }

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if r, ok := req.Context().Value(requestsKey{}).(*requests); ok {
		r.sent()
	}
	return t.next.RoundTrip(req)
}
