package journal

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// An entry says how many requests its reconcile sent and when the last one
// went out: after a pause, that tells a reconcile that acted again from one
// that only returned.
func TestEntriesRecordTheRequestsTheirReconcileSent(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer api.Close()
	httpClient := &http.Client{Transport: TrackRequests(http.DefaultTransport)}
	get := func(ctx context.Context) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	clock := clocktesting.NewFakeClock(t0)
	path := filepath.Join(t.TempDir(), "op-0.jsonl")
	j, err := Open(path, Options{Member: "op-0", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	sends := reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
		clock.Step(time.Second)
		get(ctx)
		get(ctx)
		clock.Step(time.Second) // work after the last request
		return reconcile.Result{}, nil
	})
	quiet := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		clock.Step(time.Second)
		return reconcile.Result{}, nil
	})
	req := reconcile.Request{}
	req.Namespace, req.Name = "ns", "a"
	for _, r := range []reconcile.Reconciler{Wrap(sends, j), Wrap(quiet, j)} {
		if _, err := r.Reconcile(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	get(t.Context()) // outside any reconcile: passes through
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("read %d entries, want 2", len(entries))
	}
	s, q := entries[0], entries[1]
	if s.Requests != 2 || !s.LastRequest.Equal(t0.Add(time.Second)) || !s.End.Equal(t0.Add(2*time.Second)) {
		t.Errorf("the reconcile that sent two requests: %d requests, last at %s, end at %s; want 2, %s, %s",
			s.Requests, s.LastRequest, s.End, t0.Add(time.Second), t0.Add(2*time.Second))
	}
	if q.Requests != 0 || !q.LastRequest.IsZero() {
		t.Errorf("the reconcile that sent none: %d requests, last at %s; want 0 and none", q.Requests, q.LastRequest)
	}
}
