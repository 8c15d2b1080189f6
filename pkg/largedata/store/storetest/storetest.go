package storetest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// Run runs the conformance tests on stores that newStore returns; the tests
// use keys of their own, so newStore may return the same store every time.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st store.Store)
	}{
		{"InitializeCreatesRecordsInBatches", testInitializeInBatches},
		{"InitializeIsIdempotent", testInitializeIsIdempotent},
		{"ProcessBatchProcessesInBatches", testProcessInBatches},
		{"ProcessBatchWaitsForInitialization", testProcessWaitsForInitialization},
		{"ConcurrentBatchesProcessEachRecordOnce", testConcurrentBatches},
		{"NewGenerationReprocessesEveryRecordOnce", testNewGeneration},
		{"SeedChangeRewritesPayloads", testSeedChange},
		{"FewerItemsDeletesRecordsBeyond", testShrink},
		{"StaleGenerationIsRefused", testStaleGeneration},
		{"FailedTransformsAreCountedNotRetried", testFailedRecords},
		{"DeleteRemovesEverythingInBatches", testDelete},
		{"DatasetsAreIsolated", testIsolation},
		{"IngestStoresEachEntryOnce", testIngestStoresEachEntryOnce},
		{"MalformedEntriesAreCountedOnce", testMalformedEntriesAreCountedOnce},
		{"StreamProgressOutlivesAGeneration", testStreamProgressOutlivesAGeneration},
		{"ConcurrentIngestsStoreEachEntryOnce", testConcurrentIngestsStoreEachEntryOnce},
		{"DeleteRemovesTheStream", testDeleteRemovesTheStream},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func newKey(t *testing.T) store.Key {
	return store.Key{UID: rand.Text(), Namespace: "storetest", Name: strings.ReplaceAll(t.Name(), "/", "-")}
}

// counter is a Transform that counts its calls per payload.
type counter struct {
	mu    sync.Mutex
	calls map[string]int
	fn    store.Transform
}

func newCounter(fn store.Transform) *counter { return &counter{calls: map[string]int{}, fn: fn} }

func (c *counter) transform(payload string) (string, error) {
	c.mu.Lock()
	c.calls[payload]++
	c.mu.Unlock()
	return c.fn(payload)
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}

func upper(p string) (string, error) { return strings.ToUpper(p), nil }

// initialize calls Initialize until the dataset is initialized and returns
// the number of calls.
func initialize(t *testing.T, st store.Store, key store.Key, target store.Target, limit int) int {
	t.Helper()
	for calls := 1; calls <= 1000; calls++ {
		p, err := st.Initialize(t.Context(), key, target, limit)
		if err != nil {
			t.Fatalf("Initialize %+v (call %d): %v", target, calls, err)
		}
		if p.Initialized {
			if p.Generation != target.Generation || p.Items != target.Items || p.Seed != target.Seed || p.Created != target.Items {
				t.Fatalf("Initialize %+v: initialized progress %+v does not match the target", target, p)
			}
			return calls
		}
	}
	t.Fatalf("Initialize %+v: not initialized after 1000 calls", target)
	return 0
}

// processAll calls ProcessBatch until nothing is left and returns the number
// of records processed and the final progress.
func processAll(t *testing.T, st store.Store, key store.Key, gen int64, limit int, fn store.Transform) (int, store.Progress) {
	t.Helper()
	total := 0
	for calls := 1; calls <= 1000; calls++ {
		res, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: gen, Limit: limit, Workers: 3, Transform: fn})
		if err != nil {
			t.Fatalf("ProcessBatch (call %d): %v", calls, err)
		}
		n := res.Processed + res.Failed
		if n > limit {
			t.Fatalf("ProcessBatch with limit %d processed %d records", limit, n)
		}
		total += n
		if n == 0 {
			if !res.Progress.Done() {
				t.Fatalf("ProcessBatch processed nothing, but progress %+v is not done", res.Progress)
			}
			return total, res.Progress
		}
	}
	t.Fatal("ProcessBatch: records left after 1000 calls")
	return 0, store.Progress{}
}

func allRecords(t *testing.T, st store.Store, key store.Key) []store.Record {
	t.Helper()
	var all []store.Record
	for from := int64(0); ; {
		page, err := st.Records(t.Context(), key, from, 400)
		if err != nil {
			t.Fatalf("Records: %v", err)
		}
		all = append(all, page...)
		if len(page) < 400 {
			return all
		}
		from = page[len(page)-1].Index + 1
	}
}

// checkRecords checks that the dataset holds exactly the records 0..items-1
// of seed, each processed for gen with want's result.
func checkRecords(t *testing.T, st store.Store, key store.Key, seed, items, gen int64, want store.Transform) {
	t.Helper()
	recs := allRecords(t, st, key)
	if int64(len(recs)) != items {
		t.Fatalf("the store holds %d records, want %d", len(recs), items)
	}
	for i, r := range recs {
		if r.Index != int64(i) {
			t.Fatalf("record %d has index %d: records are not dense", i, r.Index)
		}
		if p := store.Payload(seed, r.Index); r.Payload != p {
			t.Fatalf("record %d has payload %q, want %q (seed %d)", i, r.Payload, p, seed)
		}
		if want == nil {
			continue
		}
		res, _ := want(r.Payload)
		if r.Generation != gen || r.Result != res || r.Failed {
			t.Fatalf("record %d: generation %d result %q failed %v, want generation %d result %q",
				i, r.Generation, r.Result, r.Failed, gen, res)
		}
	}
}

func checksum(seed, items int64, fn store.Transform) uint64 {
	var sum uint64
	for i := range items {
		v, err := fn(store.Payload(seed, i))
		if err == nil {
			sum ^= store.RecordHash(i, v)
		}
	}
	return sum
}

func testInitializeInBatches(t *testing.T, st store.Store) {
	key := newKey(t)
	target := store.Target{Generation: 1, Seed: 42, Items: 1000}
	for i, wantCreated := range []int64{300, 600, 900, 1000} {
		p, err := st.Initialize(t.Context(), key, target, 300)
		if err != nil {
			t.Fatalf("Initialize call %d: %v", i+1, err)
		}
		if p.Created != wantCreated || p.Initialized != (wantCreated == 1000) {
			t.Fatalf("after Initialize call %d: created %d initialized %v, want %d %v",
				i+1, p.Created, p.Initialized, wantCreated, wantCreated == 1000)
		}
		if recs := allRecords(t, st, key); int64(len(recs)) != wantCreated {
			t.Fatalf("after Initialize call %d the store holds %d records, want %d", i+1, len(recs), wantCreated)
		}
	}
	checkRecords(t, st, key, 42, 1000, 0, nil)
	p, err := st.Progress(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Initialized || p.Processed != 0 || p.Pending() != 1000 {
		t.Errorf("progress of a new dataset %+v, want initialized with 1000 pending", p)
	}
}

func testInitializeIsIdempotent(t *testing.T, st store.Store) {
	key := newKey(t)
	target := store.Target{Generation: 3, Seed: -7, Items: 450}
	// A reconcile whose result was lost repeats the call: same target, same
	// generation, any number of times, also once initialized.
	for range 3 {
		initialize(t, st, key, target, 200)
	}
	checkRecords(t, st, key, -7, 450, 0, nil)

	empty := newKey(t)
	if calls := initialize(t, st, empty, store.Target{Generation: 1, Items: 0}, 10); calls != 1 {
		t.Errorf("initializing an empty dataset took %d calls, want 1", calls)
	}
}

func testProcessInBatches(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 5, Items: 1000}, 1000)
	c := newCounter(upper)
	for i, want := range []int{300, 300, 300, 100, 0} {
		res, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: 1, Limit: 300, Workers: 4, Transform: c.transform})
		if err != nil {
			t.Fatalf("ProcessBatch call %d: %v", i+1, err)
		}
		if res.Processed != want || res.Failed != 0 {
			t.Fatalf("ProcessBatch call %d processed %d (failed %d), want %d", i+1, res.Processed, res.Failed, want)
		}
	}
	p, err := st.Progress(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Done() || p.Processed != 1000 || p.Failed != 0 {
		t.Errorf("progress %+v, want done with 1000 processed", p)
	}
	if want := checksum(5, 1000, upper); p.Checksum != want {
		t.Errorf("checksum %016x, want %016x", p.Checksum, want)
	}
	if c.total() != 1000 {
		t.Errorf("the transformation ran %d times for 1000 records", c.total())
	}
	checkRecords(t, st, key, 5, 1000, 1, upper)
}

func testProcessWaitsForInitialization(t *testing.T, st store.Store) {
	key := newKey(t)
	if _, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: 1, Limit: 10, Transform: upper}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ProcessBatch on a dataset the store does not hold: got %v, want ErrNotFound", err)
	}
	if _, err := st.Initialize(t.Context(), key, store.Target{Generation: 1, Items: 100}, 60); err != nil {
		t.Fatal(err)
	}
	res, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: 1, Limit: 10, Transform: upper})
	if err != nil || res.Processed != 0 {
		t.Errorf("ProcessBatch on a half-initialized dataset: processed %d, err %v; want nothing processed", res.Processed, err)
	}
}

func testConcurrentBatches(t *testing.T, st store.Store) {
	key := newKey(t)
	const items = 2000
	initialize(t, st, key, store.Target{Generation: 1, Seed: 9, Items: items}, items)
	c := newCounter(upper)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				res, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: 1, Limit: 97, Workers: 2, Transform: c.transform})
				if err != nil {
					errs <- err
					return
				}
				if res.Processed == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent ProcessBatch: %v", err)
	}
	p, err := st.Progress(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Done() || p.Processed != items {
		t.Errorf("progress after concurrent batches %+v, want %d processed", p, items)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for payload, n := range c.calls {
		if n != 1 {
			t.Errorf("payload %s was transformed %d times, want once", payload, n)
		}
	}
	if len(c.calls) != items {
		t.Errorf("%d records were transformed, want %d", len(c.calls), items)
	}
}

func testNewGeneration(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 3, Items: 500}, 200)
	if n, _ := processAll(t, st, key, 1, 128, upper); n != 500 {
		t.Fatalf("generation 1 processed %d records, want 500", n)
	}

	// More items and another transformation: every record, old and new, is
	// processed once for generation 2.
	reverse := func(p string) (string, error) { return p[8:] + p[:8], nil }
	p, err := st.Initialize(t.Context(), key, store.Target{Generation: 2, Seed: 3, Items: 800}, 200)
	if err != nil {
		t.Fatal(err)
	}
	if p.Processed != 0 || p.Failed != 0 || p.Checksum != 0 || p.Generation != 2 {
		t.Errorf("progress when generation 2 starts %+v, want it reset", p)
	}
	initialize(t, st, key, store.Target{Generation: 2, Seed: 3, Items: 800}, 200)
	c := newCounter(reverse)
	n, p := processAll(t, st, key, 2, 128, c.transform)
	if n != 800 || c.total() != 800 || p.Processed != 800 {
		t.Errorf("generation 2 processed %d records (%d transformations, progress %d), want 800", n, c.total(), p.Processed)
	}
	if want := checksum(3, 800, reverse); p.Checksum != want {
		t.Errorf("checksum %016x, want %016x", p.Checksum, want)
	}
	checkRecords(t, st, key, 3, 800, 2, reverse)

	// A generation that changes nothing the records depend on still
	// reprocesses them.
	initialize(t, st, key, store.Target{Generation: 5, Seed: 3, Items: 800}, 200)
	if n, _ := processAll(t, st, key, 5, 1000, upper); n != 800 {
		t.Errorf("generation 5 processed %d records, want 800", n)
	}
	checkRecords(t, st, key, 3, 800, 5, upper)
}

func testSeedChange(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1, Items: 300}, 1000)
	processAll(t, st, key, 1, 1000, upper)
	if calls := initialize(t, st, key, store.Target{Generation: 2, Seed: 2, Items: 300}, 100); calls != 3 {
		t.Errorf("rewriting 300 records 100 at a time took %d calls, want 3", calls)
	}
	for _, r := range allRecords(t, st, key) {
		if r.Generation != 0 || r.Result != "" {
			t.Fatalf("rewritten record %d kept generation %d result %q", r.Index, r.Generation, r.Result)
		}
	}
	processAll(t, st, key, 2, 1000, upper)
	checkRecords(t, st, key, 2, 300, 2, upper)
}

func testShrink(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1, Items: 1000}, 1000)
	processAll(t, st, key, 1, 1000, upper)
	if calls := initialize(t, st, key, store.Target{Generation: 2, Seed: 1, Items: 250}, 300); calls < 3 {
		t.Errorf("deleting 750 records 300 at a time took %d calls, want at least 3", calls)
	}
	if n, p := processAll(t, st, key, 2, 1000, upper); n != 250 || p.Items != 250 {
		t.Errorf("generation 2 processed %d of %d records, want 250 of 250", n, p.Items)
	}
	checkRecords(t, st, key, 1, 250, 2, upper)
}

func testStaleGeneration(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 4, Items: 10}, 100)
	if _, err := st.Initialize(t.Context(), key, store.Target{Generation: 3, Items: 10}, 100); !errors.Is(err, store.ErrStaleGeneration) {
		t.Errorf("Initialize for an older generation: got %v, want ErrStaleGeneration", err)
	}
	for _, gen := range []int64{3, 5} {
		if _, err := st.ProcessBatch(t.Context(), key, store.Batch{Generation: gen, Limit: 10, Transform: upper}); !errors.Is(err, store.ErrStaleGeneration) {
			t.Errorf("ProcessBatch for generation %d, store at 4: got %v, want ErrStaleGeneration", gen, err)
		}
	}
	if p, err := st.Progress(t.Context(), key); err != nil || p.Processed != 0 || p.Generation != 4 {
		t.Errorf("a refused call changed the dataset: progress %+v, err %v", p, err)
	}
}

func testFailedRecords(t *testing.T, st store.Store) {
	key := newKey(t)
	const items = 400
	initialize(t, st, key, store.Target{Generation: 1, Seed: 11, Items: items}, items)
	failing := func(p string) (string, error) {
		if p[0] < '4' { // about a quarter of the payloads
			return "", fmt.Errorf("payload %s is unlucky", p)
		}
		return strings.ToUpper(p), nil
	}
	wantFailed := int64(0)
	for i := range int64(items) {
		if _, err := failing(store.Payload(11, i)); err != nil {
			wantFailed++
		}
	}
	c := newCounter(failing)
	n, p := processAll(t, st, key, 1, 150, c.transform)
	if n != items || c.total() != items {
		t.Errorf("processed %d records with %d transformations, want %d: a failed record is not retried", n, c.total(), items)
	}
	if p.Failed != wantFailed || p.Processed != items-wantFailed || !p.Done() {
		t.Errorf("progress %+v, want %d failed and %d processed", p, wantFailed, items-wantFailed)
	}
	if want := checksum(11, items, failing); p.Checksum != want {
		t.Errorf("checksum %016x, want %016x (failed records left out)", p.Checksum, want)
	}
	for _, r := range allRecords(t, st, key) {
		if _, err := failing(r.Payload); (err != nil) != r.Failed || (r.Failed && r.Result != "") {
			t.Fatalf("record %d: failed %v result %q", r.Index, r.Failed, r.Result)
		}
	}
}

func testDelete(t *testing.T, st store.Store) {
	key := newKey(t)
	initialize(t, st, key, store.Target{Generation: 1, Seed: 1, Items: 1000}, 1000)
	processAll(t, st, key, 1, 1000, upper)
	calls := 0
	for done := false; !done; {
		calls++
		if calls > 5 {
			t.Fatal("deleting 1000 records 300 at a time is not done after 5 calls")
		}
		var err error
		if done, err = st.Delete(t.Context(), key, 300); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if left := len(allRecords(t, st, key)); !done && left != 1000-300*calls {
			t.Fatalf("after %d Delete calls %d records are left, want %d", calls, left, 1000-300*calls)
		}
	}
	if recs := allRecords(t, st, key); len(recs) != 0 {
		t.Errorf("%d records left after Delete is done", len(recs))
	}
	if _, err := st.Progress(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Progress of a deleted dataset: got %v, want ErrNotFound", err)
	}
	if done, err := st.Delete(t.Context(), key, 300); !done || err != nil {
		t.Errorf("deleting a deleted dataset again: done %v, err %v; want done", done, err)
	}
	// Deleted and created again under the same key, it starts afresh.
	initialize(t, st, key, store.Target{Generation: 1, Seed: 2, Items: 10}, 100)
	if n, _ := processAll(t, st, key, 1, 100, upper); n != 10 {
		t.Errorf("a dataset created again processed %d records, want 10", n)
	}
}

func testIsolation(t *testing.T, st store.Store) {
	a, b := newKey(t), newKey(t)
	initialize(t, st, a, store.Target{Generation: 1, Seed: 1, Items: 100}, 1000)
	initialize(t, st, b, store.Target{Generation: 7, Seed: 2, Items: 200}, 1000)
	processAll(t, st, a, 1, 1000, upper)
	for done := false; !done; {
		var err error
		if done, err = st.Delete(t.Context(), b, 1000); err != nil {
			t.Fatal(err)
		}
	}
	checkRecords(t, st, a, 1, 100, 1, upper)
	if p, err := st.Progress(t.Context(), a); err != nil || !p.Done() || p.Processed != 100 {
		t.Errorf("progress of the other dataset %+v, err %v; want it untouched", p, err)
	}
}
