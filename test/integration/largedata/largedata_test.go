package largedata

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/memory"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
)

const (
	// quota is the operator's store quota in these tests.
	quota = 50_000
	// timeout bounds every wait for the operator.
	timeout = 20 * time.Second
)

// storeCase opens a store for the behaviour suite, and gives a switch that
// takes it down (true) and brings it back (false).
type storeCase struct {
	name string
	open func(t *testing.T) (store.Store, func(t *testing.T, down bool))
}

func storeCases() []storeCase {
	return []storeCase{
		{"memory", func(*testing.T) (store.Store, func(*testing.T, bool)) {
			st := memory.New()
			return st, func(_ *testing.T, down bool) { st.SetUnavailable(down) }
		}},
		{"postgres", func(t *testing.T) (store.Store, func(*testing.T, bool)) {
			srv := requirePostgres(t)
			st, err := postgres.New(t.Context(), srv.URL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			return st, func(t *testing.T, down bool) {
				var err error
				if down {
					err = srv.Shutdown()
				} else {
					// Not t.Context(): this also runs in cleanup, after it ends.
					err = srv.Restart(context.Background())
				}
				if err != nil {
					t.Fatalf("switching PostgreSQL down=%v: %v", down, err)
				}
			}
		}},
	}
}

// operator is one LargeData operator, watching one namespace of its own.
type operator struct {
	ns      string
	c       client.Client // direct, uncached: what a user sees
	st      store.Store
	reg     *prometheus.Registry
	setDown func(t *testing.T, down bool)
}

// TestLargeData runs the behaviour suite against each store: the operator's
// reconciler in a real manager, driven through the API server as a user
// drives it.
func TestLargeData(t *testing.T) {
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			st, setDown := sc.open(t)
			op := startOperator(t, sc.name, st, setDown)
			t.Run("Lifecycle", op.testLifecycle)
			t.Run("StoreOutage", op.testStoreOutage)
			t.Run("QuotaIsTerminal", op.testQuota)
		})
	}
}

func startOperator(t *testing.T, name string, st store.Store, setDown func(*testing.T, bool)) *operator {
	op := &operator{ns: "largedata-" + name, c: env.Client, st: st, reg: prometheus.NewRegistry(), setDown: setDown}
	if err := env.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: op.ns}}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  env.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		// Each store's operator sees only its own namespace.
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{op.ns: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = largedata.Add(mgr, st, largedata.Options{
		ControllerName: "largedata-" + name,
		ItemQuota:      quota,
		InitBatchSize:  1000,
		StoreTimeout:   5 * time.Second,
		RetryBaseDelay: 20 * time.Millisecond,
		RetryMaxDelay:  500 * time.Millisecond,
		Registerer:     op.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return op
}

func (op *operator) get(t *testing.T, name string) (*datav1alpha1.LargeData, error) {
	ld := &datav1alpha1.LargeData{}
	err := op.c.Get(t.Context(), client.ObjectKey{Namespace: op.ns, Name: name}, ld)
	return ld, err
}

// waitReady waits until name is Ready for its current generation and
// returns it.
func (op *operator) waitReady(t *testing.T, name string) *datav1alpha1.LargeData {
	t.Helper()
	var ld *datav1alpha1.LargeData
	testenv.Eventually(t, timeout, name+" is Ready", func() (bool, string) {
		var err error
		if ld, err = op.get(t, name); err != nil {
			return false, err.Error()
		}
		ready := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionReady)
		if ld.Status.ObservedGeneration != ld.Generation || ld.Status.Phase != datav1alpha1.PhaseReady ||
			ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != ld.Generation {
			return false, fmt.Sprintf("generation %d, status %s", ld.Generation, statusString(ld))
		}
		return true, ""
	})
	return ld
}

func statusString(ld *datav1alpha1.LargeData) string {
	s := fmt.Sprintf("phase %q observedGeneration %d processed %d/%d ratio %q", ld.Status.Phase,
		ld.Status.ObservedGeneration, ld.Status.ProcessedCount, ld.Status.TotalItems, ld.Status.CompletionRatio)
	for _, c := range ld.Status.Conditions {
		s += fmt.Sprintf(", %s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message)
	}
	return s
}

func wantCondition(t *testing.T, ld *datav1alpha1.LargeData, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(ld.Status.Conditions, typ)
	if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != ld.Generation {
		t.Errorf("%s: condition %s = %+v, want %s with reason %s at generation %d", ld.Name, typ, c, status, reason, ld.Generation)
	}
}

func (op *operator) processedTotal(t *testing.T) float64 {
	t.Helper()
	const name = "kubeshard_largedata_items_processed_total"
	// The counter has no series until the operator processes its first record.
	if n, err := testutil.GatherAndCount(op.reg, name); err != nil {
		t.Fatal(err)
	} else if n == 0 {
		return 0
	}
	return testenv.MetricValue(t, op.reg, name, nil)
}

func keyOf(ld *datav1alpha1.LargeData) store.Key {
	return store.Key{UID: string(ld.UID), Namespace: ld.Namespace, Name: ld.Name}
}

// checkStore checks through the store interface that the dataset holds
// exactly the records of ld's spec, each processed for ld's generation with
// the spec's transformation, and returns their checksum.
func (op *operator) checkStore(t *testing.T, ld *datav1alpha1.LargeData) uint64 {
	t.Helper()
	fn, ok := largedata.Transform(ld.Spec.Processing)
	if !ok {
		t.Fatalf("no transformation for %s", ld.Spec.Processing)
	}
	var sum uint64
	var n int64
	for from := int64(0); ; {
		page, err := op.st.Records(t.Context(), keyOf(ld), from, 1000)
		if err != nil {
			t.Fatalf("reading records: %v", err)
		}
		for _, r := range page {
			want, _ := fn(store.Payload(ld.Spec.Seed, r.Index))
			if r.Index != n || r.Payload != store.Payload(ld.Spec.Seed, r.Index) || r.Result != want || r.Generation != ld.Generation {
				t.Fatalf("record %d: index %d payload %q result %q generation %d, want payload %q result %q generation %d",
					n, r.Index, r.Payload, r.Result, r.Generation, store.Payload(ld.Spec.Seed, n), want, ld.Generation)
			}
			sum ^= store.RecordHash(r.Index, r.Result)
			n++
		}
		if len(page) < 1000 {
			break
		}
		from = page[len(page)-1].Index + 1
	}
	if n != ld.Spec.Items {
		t.Fatalf("the store holds %d records, want %d", n, ld.Spec.Items)
	}
	return sum
}

func (op *operator) checkSummary(t *testing.T, ld *datav1alpha1.LargeData, slot string, checksum uint64) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	testenv.Eventually(t, timeout, "the summary of generation "+fmt.Sprint(ld.Generation)+" is published", func() (bool, string) {
		if err := op.c.Get(t.Context(), client.ObjectKeyFromObject(ld), cm); err != nil {
			return false, err.Error()
		}
		if g := cm.Data[largedata.SummaryGeneration]; g != fmt.Sprint(ld.Generation) {
			return false, "summary of generation " + g
		}
		return true, ""
	})
	if !metav1.IsControlledBy(cm, ld) || cm.Labels[shardingv1alpha1.LabelSlot] != slot {
		t.Errorf("summary owners %v labels %v, want controlled by %s with its slot label %s", cm.OwnerReferences, cm.Labels, ld.Name, slot)
	}
	want := map[string]string{
		largedata.SummaryItems:      fmt.Sprint(ld.Spec.Items),
		largedata.SummaryProcessed:  fmt.Sprint(ld.Spec.Items),
		largedata.SummaryFailed:     "0",
		largedata.SummaryProcessing: string(ld.Spec.Processing),
		largedata.SummarySeed:       fmt.Sprint(ld.Spec.Seed),
		largedata.SummaryGeneration: fmt.Sprint(ld.Generation),
		largedata.SummaryChecksum:   fmt.Sprintf("%016x", checksum),
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("summary %s = %q, want %q", k, cm.Data[k], v)
		}
	}
}

func (op *operator) update(t *testing.T, name string, mutate func(*datav1alpha1.LargeData)) {
	t.Helper()
	ld, err := op.get(t, name)
	if err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(ld.DeepCopy())
	mutate(ld)
	if err := op.c.Patch(t.Context(), ld, patch); err != nil {
		t.Fatalf("changing %s: %v", name, err)
	}
}

func (op *operator) waitGone(t *testing.T, ld *datav1alpha1.LargeData) {
	t.Helper()
	testenv.Eventually(t, timeout, ld.Name+" is deleted", func() (bool, string) {
		got, err := op.get(t, ld.Name)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("still there with finalizers %v, %s", got.Finalizers, statusString(got))
	})
	if _, err := op.st.Progress(t.Context(), keyOf(ld)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the dataset of %s outlived it in the store (%v)", ld.Name, err)
	}
	if recs, err := op.st.Records(t.Context(), keyOf(ld), 0, 10); err != nil || len(recs) != 0 {
		t.Errorf("%d records of %s are left in the store (%v)", len(recs), ld.Name, err)
	}
}

func (op *operator) testLifecycle(t *testing.T) {
	const slot = "77"
	ld := &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Namespace: op.ns, Name: "lifecycle",
			// What the slot webhook would set; the summary must copy it.
			Labels: map[string]string{shardingv1alpha1.LabelSlot: slot}},
		Spec: datav1alpha1.LargeDataSpec{Items: 2500, Seed: 42, BatchSize: 500, PublishSummary: true},
	}
	processed0 := op.processedTotal(t)
	if err := op.c.Create(t.Context(), ld); err != nil {
		t.Fatal(err)
	}

	ld = op.waitReady(t, "lifecycle")
	if ld.Status.TotalItems != 2500 || ld.Status.ProcessedCount != 2500 || ld.Status.FailedItems != 0 ||
		ld.Status.CompletionRatio != "1.000" || ld.Status.LastProcessed == nil {
		t.Errorf("status %s, want 2500 of 2500 processed, ratio 1.000, lastProcessed set", statusString(ld))
	}
	wantCondition(t, ld, datav1alpha1.ConditionReady, metav1.ConditionTrue, largedata.ReasonProcessed)
	if n := len(ld.Status.Conditions); n != 1 {
		t.Errorf("%d conditions (%s), want Ready alone on a dataset that was never degraded", n, statusString(ld))
	}
	if len(ld.Finalizers) != 1 || ld.Finalizers[0] != largedata.Finalizer {
		t.Errorf("finalizers %v, want [%s]", ld.Finalizers, largedata.Finalizer)
	}
	op.checkSummary(t, ld, slot, op.checkStore(t, ld))
	if got := op.processedTotal(t) - processed0; got != 2500 {
		t.Errorf("%v records processed for generation 1, want each of the 2500 once", got)
	}

	// More items and another processing: every record is processed again,
	// once, for the new generation.
	op.update(t, "lifecycle", func(ld *datav1alpha1.LargeData) {
		ld.Spec.Items, ld.Spec.Processing = 4000, datav1alpha1.ProcessingUppercase
	})
	ld = op.waitReady(t, "lifecycle")
	if ld.Generation != 2 || ld.Status.ProcessedCount != 4000 || ld.Status.TotalItems != 4000 {
		t.Errorf("after the change: generation %d, status %s; want 4000 of 4000 at generation 2", ld.Generation, statusString(ld))
	}
	op.checkSummary(t, ld, slot, op.checkStore(t, ld))
	if got := op.processedTotal(t) - processed0; got != 2500+4000 {
		t.Errorf("%v records processed for generations 1 and 2, want 2500 + 4000", got)
	}

	// Fewer items, another seed, another processing.
	op.update(t, "lifecycle", func(ld *datav1alpha1.LargeData) {
		ld.Spec.Items, ld.Spec.Seed, ld.Spec.Processing = 1500, 7, datav1alpha1.ProcessingReverse
	})
	ld = op.waitReady(t, "lifecycle")
	if ld.Status.ProcessedCount != 1500 || ld.Status.TotalItems != 1500 {
		t.Errorf("after shrinking: status %s; want 1500 of 1500", statusString(ld))
	}
	op.checkSummary(t, ld, slot, op.checkStore(t, ld))
	if got := op.processedTotal(t) - processed0; got != 2500+4000+1500 {
		t.Errorf("%v records processed for generations 1 to 3, want 2500 + 4000 + 1500", got)
	}

	// No summary asked for: it goes.
	op.update(t, "lifecycle", func(ld *datav1alpha1.LargeData) { ld.Spec.PublishSummary = false })
	testenv.Eventually(t, timeout, "the summary is deleted", func() (bool, string) {
		err := op.c.Get(t.Context(), client.ObjectKeyFromObject(ld), &corev1.ConfigMap{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		return false, fmt.Sprintf("summary still there (%v)", err)
	})

	if err := op.c.Delete(t.Context(), ld); err != nil {
		t.Fatal(err)
	}
	op.waitGone(t, ld)
}

func (op *operator) testStoreOutage(t *testing.T) {
	create := func(name string) *datav1alpha1.LargeData {
		ld := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: op.ns, Name: name},
			Spec:       datav1alpha1.LargeDataSpec{Items: 1000, Seed: 1, BatchSize: 1000},
		}
		if err := op.c.Create(t.Context(), ld); err != nil {
			t.Fatal(err)
		}
		return ld
	}
	degraded := func(name string, phase datav1alpha1.Phase) func() (bool, string) {
		return func() (bool, string) {
			ld, err := op.get(t, name)
			if err != nil {
				return false, err.Error()
			}
			c := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionDegraded)
			if ld.Status.Phase != phase || c == nil || c.Status != metav1.ConditionTrue || c.Reason != largedata.ReasonStoreUnavailable {
				return false, "status " + statusString(ld)
			}
			return true, ""
		}
	}

	existing := create("outage-existing")
	existing = op.waitReady(t, existing.Name)

	op.setDown(t, true)
	t.Cleanup(func() { op.setDown(t, false) })
	created := create("outage-created")
	testenv.Eventually(t, timeout, "a new object reports the outage", degraded(created.Name, datav1alpha1.PhasePending))

	// Deleting an object while its records cannot be deleted: the finalizer
	// holds it, and its status says why.
	if err := op.c.Delete(t.Context(), existing); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, "the deletion reports the outage", degraded(existing.Name, datav1alpha1.PhaseDeleting))
	time.Sleep(time.Second) // several retries
	if ld, err := op.get(t, existing.Name); err != nil || len(ld.Finalizers) != 1 {
		t.Fatalf("during the outage the deleted object is gone or lost its finalizer (%v, %v)", err, ld.Finalizers)
	}
	for _, operation := range []string{"initialize", "delete"} {
		if testenv.MetricValue(t, op.reg, "kubeshard_largedata_store_errors_total", map[string]string{"operation": operation}) == 0 {
			t.Errorf("kubeshard_largedata_store_errors_total{operation=%q} did not count the outage", operation)
		}
	}

	op.setDown(t, false)
	op.waitGone(t, existing)
	ld := op.waitReady(t, created.Name)
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionFalse, largedata.ReasonHealthy)
	op.checkStore(t, ld)
	if err := op.c.Delete(t.Context(), ld); err != nil {
		t.Fatal(err)
	}
	op.waitGone(t, ld)
}

func (op *operator) testQuota(t *testing.T) {
	ld := &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Namespace: op.ns, Name: "quota"},
		Spec:       datav1alpha1.LargeDataSpec{Items: quota + 1},
	}
	if err := op.c.Create(t.Context(), ld); err != nil {
		t.Fatalf("the API server refused a spec within its bounds: %v", err)
	}
	testenv.Eventually(t, timeout, "the spec above the quota fails", func() (bool, string) {
		var err error
		if ld, err = op.get(t, "quota"); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionReady)
		if ld.Status.Phase != datav1alpha1.PhaseFailed || c == nil || c.Reason != largedata.ReasonQuotaExceeded {
			return false, "status " + statusString(ld)
		}
		if !strings.Contains(c.Message, "quota of 50000") {
			return false, fmt.Sprintf("message %q does not name the quota", c.Message)
		}
		return true, ""
	})
	// A terminal error is not retried: the object is left alone.
	time.Sleep(500 * time.Millisecond)
	if again, err := op.get(t, "quota"); err != nil || again.ResourceVersion != ld.ResourceVersion {
		t.Errorf("the operator kept writing a spec that can never succeed (%v)", err)
	}
	if _, err := op.st.Progress(t.Context(), keyOf(ld)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the store has records of a spec above the quota (%v)", err)
	}

	// Within the quota, it proceeds.
	op.update(t, "quota", func(ld *datav1alpha1.LargeData) { ld.Spec.Items = 800 })
	ld = op.waitReady(t, "quota")
	op.checkStore(t, ld)
	if err := op.c.Delete(t.Context(), ld); err != nil {
		t.Fatal(err)
	}
	op.waitGone(t, ld)
}

// TestInvalidSpecsAreRejected checks specs that the API server refuses, so
// the operator never sees them (test/integration covers the others).
func TestInvalidSpecsAreRejected(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    datav1alpha1.LargeDataSpec
		message string
	}{
		{"items above the API's bound", datav1alpha1.LargeDataSpec{Items: datav1alpha1.MaxItems + 1}, "spec.items"},
		{"batch size above the bound", datav1alpha1.LargeDataSpec{Items: 10, BatchSize: datav1alpha1.MaxBatchSize + 1}, "spec.batchSize"},
		{"unknown processing", datav1alpha1.LargeDataSpec{Items: 10, Processing: "Compress"}, `spec.processing: Unsupported value: "Compress"`},
		{"a source naming no stream system", datav1alpha1.LargeDataSpec{Items: 10, Source: &datav1alpha1.DataSource{}}, "source needs redisStream"},
		{"a stream name beyond the bound", datav1alpha1.LargeDataSpec{Items: 10, Source: &datav1alpha1.DataSource{
			RedisStream: &datav1alpha1.RedisStreamSource{Stream: strings.Repeat("s", datav1alpha1.MaxStreamNameLength+1)}}}, "spec.source.redisStream.stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: "default", GenerateName: "invalid-"}, Spec: tc.spec}
			err := env.Client.Create(t.Context(), ld)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("got %v, want an Invalid error mentioning %q", err, tc.message)
			}
		})
	}
}
