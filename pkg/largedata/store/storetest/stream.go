package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// entries returns n entries with IDs "<first+i>-0" and payloads "p<first+i>".
func entries(first, n int) []store.Entry {
	out := make([]store.Entry, n)
	for i := range out {
		out[i] = store.Entry{ID: fmt.Sprintf("%d-0", first+i), Payload: fmt.Sprintf("p%d", first+i)}
	}
	return out
}

func allEntries(t *testing.T, st store.Store, key store.Key) []store.Entry {
	t.Helper()
	var out []store.Entry
	for {
		page, err := st.Entries(t.Context(), key, int64(len(out)), 7)
		if err != nil {
			t.Fatalf("Entries: %v", err)
		}
		out = append(out, page...)
		if len(page) < 7 {
			return out
		}
	}
}

func ingest(t *testing.T, st store.Store, key store.Key, es []store.Entry) store.IngestResult {
	t.Helper()
	res, err := st.Ingest(t.Context(), key, es)
	if err != nil {
		t.Fatalf("Ingest of %d entries: %v", len(es), err)
	}
	return res
}

func testIngestStoresEachEntryOnce(t *testing.T, st store.Store) {
	key := newKey(t)
	if _, err := st.Ingest(t.Context(), key, entries(0, 3)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Ingest into a dataset the store does not hold: %v, want ErrNotFound", err)
	}
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1, Items: 5}, 100)

	res := ingest(t, st, key, entries(0, 30))
	if res.Stored != 30 || res.Duplicates != 0 || res.Stream.Ingested != 30 || res.Stream.LastEntryID != "29-0" {
		t.Fatalf("first Ingest: %+v, want 30 stored, last 29-0", res)
	}
	// Read again (a crash before the acknowledgement, or the next owner
	// claiming what was pending) with new entries behind them.
	res = ingest(t, st, key, entries(20, 20))
	if res.Stored != 10 || res.Duplicates != 10 || res.Stream.Ingested != 40 || res.Stream.LastEntryID != "39-0" {
		t.Fatalf("overlapping Ingest: %+v, want 10 stored, 10 duplicates, 40 ingested, last 39-0", res)
	}
	// A batch of nothing but duplicates changes nothing, not even the last ID.
	res = ingest(t, st, key, entries(5, 3))
	if res.Stored != 0 || res.Duplicates != 3 || res.Stream.Ingested != 40 || res.Stream.LastEntryID != "39-0" {
		t.Fatalf("Ingest of duplicates: %+v, want nothing stored and the progress unchanged", res)
	}
	got := allEntries(t, st, key)
	if want := entries(0, 40); !slices.Equal(got, want) {
		t.Fatalf("the dataset holds %d entries %v..., want the 40 entries 0-0..39-0 in order", len(got), got[:min(3, len(got))])
	}
	p, err := st.Progress(t.Context(), key)
	if err != nil || p.Stream != res.Stream {
		t.Fatalf("Progress: %+v (err %v), want the stream progress %+v", p.Stream, err, res.Stream)
	}
	// The generated records are not touched.
	if p.Items != 5 || !p.Initialized || len(allRecords(t, st, key)) != 5 {
		t.Errorf("the dataset's records changed with its stream: %+v", p)
	}
}

func testMalformedEntriesAreCountedOnce(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1}, 100)
	batch := entries(0, 4)
	batch[1] = store.Entry{ID: batch[1].ID, Payload: "garbage that is not kept", Malformed: true}
	res := ingest(t, st, key, batch)
	if res.Stored != 4 || res.Malformed != 1 || res.Stream.Ingested != 3 || res.Stream.Malformed != 1 {
		t.Fatalf("Ingest with a malformed entry: %+v, want 4 stored, 1 malformed, 3 ingested", res)
	}
	if res := ingest(t, st, key, batch); res.Stored != 0 || res.Stream.Malformed != 1 {
		t.Fatalf("the malformed entry read again: %+v, want it counted once", res)
	}
	got := allEntries(t, st, key)
	if len(got) != 4 || !got[1].Malformed || got[1].Payload != "" {
		t.Fatalf("entries %+v: want the malformed one kept without its payload", got)
	}
}

func testStreamProgressOutlivesAGeneration(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1, Items: 10}, 100)
	ingest(t, st, key, entries(0, 12))
	initialize(t, st, key, store.Target{Generation: 2, Seed: 3, Items: 20}, 100)
	p, err := st.Progress(t.Context(), key)
	if err != nil || p.Generation != 2 || p.Stream.Ingested != 12 || p.Stream.LastEntryID != "11-0" {
		t.Fatalf("after a new generation: %+v (err %v), want generation 2 with the 12 entries still counted", p, err)
	}
	if got := allEntries(t, st, key); len(got) != 12 {
		t.Errorf("a new generation left %d of the 12 entries", len(got))
	}
}

func testConcurrentIngestsStoreEachEntryOnce(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1}, 100)
	// Four writers, as a member that woke from a pause and the dataset's
	// new owner would, ingest overlapping windows of one stream.
	var wg sync.WaitGroup
	errs := make(chan error, 4*20)
	for w := range 4 {
		wg.Go(func() {
			for i := range 20 {
				if _, err := st.Ingest(t.Context(), key, entries(i*10+w*5, 25)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Ingest: %v", err)
	}
	got := allEntries(t, st, key)
	seen := map[string]int{}
	for _, e := range got {
		seen[e.ID]++
	}
	const want = 19*10 + 3*5 + 25 // the highest window's end
	if len(seen) != want || len(got) != want {
		t.Fatalf("%d entries stored, %d distinct; want %d, each once", len(got), len(seen), want)
	}
	p, err := st.Progress(t.Context(), key)
	if err != nil || p.Stream.Ingested != want {
		t.Fatalf("progress %+v (err %v): want %d ingested", p.Stream, err, want)
	}
}

func testDeleteRemovesTheStream(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1, Items: 50}, 100)
	ingest(t, st, key, entries(0, 70))
	calls := 0
	for done := false; !done; calls++ {
		if calls > 10 {
			t.Fatal("deleting 50 records and 70 entries 40 at a time is not done after 10 calls")
		}
		var err error
		if done, err = st.Delete(t.Context(), key, 40); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if calls < 3 {
		t.Errorf("Delete removed 120 records and entries in %d calls of 40", calls)
	}
	if got := allEntries(t, st, key); len(got) != 0 {
		t.Errorf("%d entries left after Delete is done", len(got))
	}
	// Created again under the key, the dataset ingests the same IDs afresh.
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1}, 100)
	if res := ingest(t, st, key, entries(0, 5)); res.Stored != 5 || res.Stream.Ingested != 5 {
		t.Errorf("a dataset created again: %+v, want its 5 entries stored", res)
	}
}
