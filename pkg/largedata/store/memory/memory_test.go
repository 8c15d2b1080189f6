package memory_test

import (
	"errors"
	"testing"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/memory"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return memory.New() })
}

func TestSetUnavailable(t *testing.T) {
	st := memory.New()
	key := store.Key{UID: "u1", Namespace: "ns", Name: "d"}
	target := store.Target{Generation: 1, Seed: 1, Items: 10}
	if _, err := st.Initialize(t.Context(), key, target, 100); err != nil {
		t.Fatal(err)
	}
	st.SetUnavailable(true)
	upper := func(p string) (string, error) { return p, nil }
	calls := map[string]error{}
	_, calls["Initialize"] = st.Initialize(t.Context(), key, target, 100)
	_, calls["ProcessBatch"] = st.ProcessBatch(t.Context(), key, store.Batch{Generation: 1, Limit: 10, Transform: upper})
	_, calls["Progress"] = st.Progress(t.Context(), key)
	_, calls["Records"] = st.Records(t.Context(), key, 0, 10)
	_, calls["Delete"] = st.Delete(t.Context(), key, 100)
	for name, err := range calls {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while unavailable: got %v, want ErrUnavailable", name, err)
		}
	}
	st.SetUnavailable(false)
	res, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: 1, Limit: 100, Transform: upper})
	if err != nil || res.Processed != 10 {
		t.Errorf("after the outage: processed %d, err %v; want the 10 records the outage left", res.Processed, err)
	}
}
