package store_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

func records(n int, errAt int) func(yield func(store.Record, error) bool) {
	return func(yield func(store.Record, error) bool) {
		for i := range n {
			if i == errAt {
				yield(store.Record{}, errors.New("connection reset"))
				return
			}
			if !yield(store.Record{Index: int64(n - 1 - i), Payload: store.Payload(1, int64(n-1-i))}, nil) {
				return
			}
		}
	}
}

func TestTransformRecordsBoundsWorkers(t *testing.T) {
	var running, peak atomic.Int32
	slow := func(p string) (string, error) {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		running.Add(-1)
		if strings.HasPrefix(p, "0") {
			return "", errors.New("unlucky")
		}
		return strings.ToUpper(p), nil
	}
	got, err := store.TransformRecords(t.Context(), 3, slow, records(200, -1))
	if err != nil {
		t.Fatal(err)
	}
	if peak.Load() > 3 {
		t.Errorf("%d transformations ran at once, want at most 3 workers", peak.Load())
	}
	if len(got.Results) != 200 {
		t.Fatalf("%d results, want 200", len(got.Results))
	}
	var fold uint64
	failed := 0
	for i, r := range got.Results {
		if r.Index != int64(i) {
			t.Fatalf("result %d has index %d: results are not in index order", i, r.Index)
		}
		p := store.Payload(1, r.Index)
		if strings.HasPrefix(p, "0") {
			failed++
			if !r.Failed {
				t.Errorf("result %d did not fail", i)
			}
			continue
		}
		if r.Value != strings.ToUpper(p) {
			t.Errorf("result %d = %q, want %q", i, r.Value, strings.ToUpper(p))
		}
		fold ^= store.RecordHash(r.Index, r.Value)
	}
	if got.Failed != failed || got.Fold != fold {
		t.Errorf("failed %d fold %016x, want %d %016x", got.Failed, got.Fold, failed, fold)
	}
}

func TestTransformRecordsStops(t *testing.T) {
	upper := func(p string) (string, error) { return strings.ToUpper(p), nil }
	if _, err := store.TransformRecords(t.Context(), 2, upper, records(100, 50)); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("a stream that fails: got %v, want its error", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := store.TransformRecords(ctx, 2, upper, records(100, -1)); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled context: got %v, want context.Canceled", err)
	}
}
