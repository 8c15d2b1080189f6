package largedata_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/memory"
)

type fixture struct {
	r     *largedata.Reconciler
	c     client.Client
	st    *memory.Store
	clock *clocktesting.FakeClock
	reg   *prometheus.Registry
	req   reconcile.Request
}

func newFixture(t *testing.T, ld *datav1alpha1.LargeData, opts largedata.Options) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(datav1alpha1.AddToScheme(scheme))
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ld).WithStatusSubresource(&datav1alpha1.LargeData{}).Build()
	f := &fixture{c: c, st: memory.New(), clock: clocktesting.NewFakeClock(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)),
		reg: prometheus.NewRegistry(), req: reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ld)}}
	opts.Clock, opts.Registerer = f.clock, f.reg
	r, err := largedata.NewReconciler(c, scheme, f.st, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

// dataset is a LargeData as the API server returns it: defaults applied,
// with a uid and a generation.
func dataset(items int64, processing datav1alpha1.Processing) *datav1alpha1.LargeData {
	return &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "dataset-1", UID: types.UID("uid-1"), Generation: 1,
			Labels: map[string]string{shardingv1alpha1.LabelSlot: "12"}},
		Spec: datav1alpha1.LargeDataSpec{Items: items, Seed: 42, BatchSize: 500, Processing: processing, PublishSummary: true},
	}
}

func (f *fixture) get(t *testing.T) *datav1alpha1.LargeData {
	t.Helper()
	ld := &datav1alpha1.LargeData{}
	if err := f.c.Get(t.Context(), f.req.NamespacedName, ld); err != nil {
		t.Fatal(err)
	}
	return ld
}

func (f *fixture) reconcile(t *testing.T) (reconcile.Result, error) {
	t.Helper()
	f.clock.Step(time.Second)
	return f.r.Reconcile(t.Context(), f.req)
}

// reconcileUntilDone reconciles until the reconciler stops requeueing and
// returns the number of reconciles.
func (f *fixture) reconcileUntilDone(t *testing.T) int {
	t.Helper()
	for n := 1; n <= 100; n++ {
		res, err := f.reconcile(t)
		if err != nil {
			t.Fatalf("reconcile %d: %v", n, err)
		}
		if res.RequeueAfter == 0 {
			return n
		}
	}
	t.Fatal("still requeueing after 100 reconciles")
	return 0
}

func conditionTypes(ld *datav1alpha1.LargeData) []string {
	var types []string
	for _, c := range ld.Status.Conditions {
		types = append(types, c.Type)
	}
	return types
}

func wantCondition(t *testing.T, ld *datav1alpha1.LargeData, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(ld.Status.Conditions, typ)
	if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != ld.Generation {
		t.Errorf("condition %s = %+v, want status %s reason %s at generation %d", typ, c, status, reason, ld.Generation)
	}
}

func transform(t *testing.T, p datav1alpha1.Processing) store.Transform {
	t.Helper()
	fn, ok := largedata.Transform(p)
	if !ok {
		t.Fatalf("no transformation for %s", p)
	}
	return fn
}

func TestReconcileDoesOneBatchOfEachKindPerReconcile(t *testing.T) {
	f := newFixture(t, dataset(1200, datav1alpha1.ProcessingUppercase), largedata.Options{})

	// Each reconcile does at most one batch of creation (all 1200 records
	// fit in the first) and one of processing (500), and reports it,
	// rounded down.
	for i, want := range []struct {
		phase datav1alpha1.Phase
		ratio string
	}{
		{datav1alpha1.PhaseProcessing, "0.416"},
		{datav1alpha1.PhaseProcessing, "0.833"},
		{datav1alpha1.PhaseReady, "1.000"},
	} {
		res, err := f.reconcile(t)
		if err != nil {
			t.Fatalf("reconcile %d: %v", i+1, err)
		}
		ld := f.get(t)
		if ld.Status.Phase != want.phase || ld.Status.CompletionRatio != want.ratio {
			t.Errorf("after reconcile %d: phase %s ratio %s, want %s %s", i+1, ld.Status.Phase, ld.Status.CompletionRatio, want.phase, want.ratio)
		}
		if (res.RequeueAfter > 0) != (want.phase != datav1alpha1.PhaseReady) {
			t.Errorf("after reconcile %d: requeue after %v in phase %s", i+1, res.RequeueAfter, ld.Status.Phase)
		}
	}

	ld := f.get(t)
	if ld.Status.TotalItems != 1200 || ld.Status.ProcessedCount != 1200 || ld.Status.FailedItems != 0 || ld.Status.ObservedGeneration != 1 {
		t.Errorf("status %+v, want 1200 of 1200 processed at generation 1", ld.Status)
	}
	if ld.Status.LastProcessed == nil || !ld.Status.LastProcessed.Time.Equal(f.clock.Now()) {
		t.Errorf("lastProcessed %v, want the last batch's time %v", ld.Status.LastProcessed, f.clock.Now())
	}
	wantCondition(t, ld, datav1alpha1.ConditionReady, metav1.ConditionTrue, largedata.ReasonProcessed)
	// A dataset that was never degraded carries Ready alone: every condition
	// is stored, watched and cached once per object.
	if types := conditionTypes(ld); !slices.Equal(types, []string{datav1alpha1.ConditionReady}) {
		t.Errorf("conditions %v, want [Ready] only", types)
	}
	if len(ld.Finalizers) != 1 || ld.Finalizers[0] != largedata.Finalizer {
		t.Errorf("finalizers %v, want [%s]", ld.Finalizers, largedata.Finalizer)
	}

	recs, err := f.st.Records(t.Context(), store.Key{UID: "uid-1"}, 0, 2000)
	if err != nil || len(recs) != 1200 {
		t.Fatalf("the store holds %d records (err %v), want 1200", len(recs), err)
	}
	var sum uint64
	for _, r := range recs {
		want, _ := transform(t, datav1alpha1.ProcessingUppercase)(store.Payload(42, r.Index))
		if r.Result != want || r.Generation != 1 {
			t.Fatalf("record %d: result %q generation %d, want %q 1", r.Index, r.Result, r.Generation, want)
		}
		sum ^= store.RecordHash(r.Index, r.Result)
	}

	cm := &corev1.ConfigMap{}
	if err := f.c.Get(t.Context(), f.req.NamespacedName, cm); err != nil {
		t.Fatalf("reading the summary: %v", err)
	}
	if cm.Labels[shardingv1alpha1.LabelSlot] != "12" || !metav1.IsControlledBy(cm, ld) {
		t.Errorf("summary labels %v owners %v, want the owner's slot 12 and a controller reference", cm.Labels, cm.OwnerReferences)
	}
	if cm.Data[largedata.SummaryChecksum] != fmt.Sprintf("%016x", sum) || cm.Data[largedata.SummaryProcessed] != "1200" {
		t.Errorf("summary data %v, want checksum %016x and 1200 processed", cm.Data, sum)
	}
	if got := testenv.MetricValue(t, f.reg, "kubeshard_largedata_items_processed_total", nil); got != 1200 {
		t.Errorf("kubeshard_largedata_items_processed_total = %v, want 1200", got)
	}

	// Done: another reconcile (a resync) changes nothing.
	rv := ld.ResourceVersion
	if n := f.reconcileUntilDone(t); n != 1 || f.get(t).ResourceVersion != rv {
		t.Errorf("a reconcile of a done dataset requeued or wrote the object")
	}
}

// A dataset within both batch sizes, the common case of many small objects,
// costs the API server one status write per generation: its first reconcile
// creates and processes every record and reports it done.
func TestReconcileSmallDatasetInOneStatusWrite(t *testing.T) {
	ld := dataset(100, datav1alpha1.ProcessingChecksum)
	ld.Spec.PublishSummary = false
	f := newFixture(t, ld, largedata.Options{})
	var statusWrites int
	counting := interceptor.NewClient(f.c.(client.WithWatch), interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			statusWrites++
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	r, err := largedata.NewReconciler(counting, f.c.Scheme(), f.st, largedata.Options{Clock: f.clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Reconcile(t.Context(), f.req)
	if err != nil || res.RequeueAfter != 0 {
		t.Fatalf("first reconcile: %+v, %v; want done, no requeue", res, err)
	}
	got := f.get(t)
	if got.Status.Phase != datav1alpha1.PhaseReady || got.Status.ProcessedCount != 100 || statusWrites != 1 {
		t.Errorf("after one reconcile: phase %s, %d processed, %d status writes; want Ready, 100, 1",
			got.Status.Phase, got.Status.ProcessedCount, statusWrites)
	}
	wantCondition(t, got, datav1alpha1.ConditionReady, metav1.ConditionTrue, largedata.ReasonProcessed)
}

// TestANewOwnerRebuildsAReadyDatasetWithoutWriting hands a Ready dataset
// to a member whose in-memory store is empty, as a slot's move does: the
// new owner rebuilds the records in its own store, over several reconciles
// for a dataset larger than a batch, and writes nothing to the LargeData
// (nor to its summary), since nothing a user reads has changed. A new
// generation afterwards is still processed and reported.
func TestANewOwnerRebuildsAReadyDatasetWithoutWriting(t *testing.T) {
	f := newFixture(t, dataset(1200, datav1alpha1.ProcessingChecksum), largedata.Options{})
	f.reconcileUntilDone(t)
	ready := f.get(t)
	if ready.Status.Phase != datav1alpha1.PhaseReady {
		t.Fatalf("the first owner left the dataset %s, want Ready", ready.Status.Phase)
	}

	var writes []string
	newOwner := interceptor.NewClient(f.c.(client.WithWatch), interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			writes = append(writes, fmt.Sprintf("patch %T %s", obj, obj.GetName()))
			return c.Patch(ctx, obj, patch, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			writes = append(writes, fmt.Sprintf("update %T %s", obj, obj.GetName()))
			return c.Update(ctx, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			writes = append(writes, fmt.Sprintf("create %T %s", obj, obj.GetName()))
			return c.Create(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			writes = append(writes, fmt.Sprintf("patch %s %T %s", sub, obj, obj.GetName()))
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	st := memory.New()
	r, err := largedata.NewReconciler(newOwner, f.c.Scheme(), st, largedata.Options{Clock: f.clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	reconciles := 0
	for ; reconciles < 100; reconciles++ {
		f.clock.Step(time.Second)
		res, err := r.Reconcile(t.Context(), f.req)
		if err != nil {
			t.Fatalf("new owner's reconcile %d: %v", reconciles+1, err)
		}
		if res.RequeueAfter == 0 {
			break
		}
	}
	if reconciles < 2 {
		t.Errorf("the new owner rebuilt 1,200 records in %d reconciles; the test wants a rebuild over several batches", reconciles+1)
	}
	if len(writes) != 0 {
		t.Errorf("the new owner wrote %v while rebuilding a dataset that was Ready; want no write", writes)
	}
	p, err := st.Progress(t.Context(), store.Key{UID: "uid-1", Namespace: "team-a", Name: "dataset-1"})
	if err != nil || !p.Done() || p.Processed != 1200 {
		t.Errorf("the new owner's store holds %+v (%v), want all 1,200 records processed", p, err)
	}
	if got := f.get(t); !equality.Semantic.DeepEqual(got.Status, ready.Status) {
		t.Errorf("the status changed during the rebuild:\n got %+v\nwant %+v", got.Status, ready.Status)
	}

	// A change of spec is still the new owner's to report.
	ld := f.get(t)
	ld.Spec.Processing = datav1alpha1.ProcessingReverse
	ld.Generation++
	if err := f.c.Update(t.Context(), ld); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		f.clock.Step(time.Second)
		res, err := r.Reconcile(t.Context(), f.req)
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter == 0 {
			break
		}
	}
	got := f.get(t)
	if got.Status.ObservedGeneration != ld.Generation || got.Status.Phase != datav1alpha1.PhaseReady || !got.Status.LastProcessed.After(ready.Status.LastProcessed.Time) {
		t.Errorf("after a new generation: observed %d phase %s lastProcessed %v; want %d, Ready, later than %v",
			got.Status.ObservedGeneration, got.Status.Phase, got.Status.LastProcessed, ld.Generation, ready.Status.LastProcessed)
	}
}

func TestReconcileNewGenerationReprocesses(t *testing.T) {
	f := newFixture(t, dataset(700, datav1alpha1.ProcessingChecksum), largedata.Options{})
	f.reconcileUntilDone(t)

	ld := f.get(t)
	ld.Spec.Items, ld.Spec.Processing, ld.Generation = 900, datav1alpha1.ProcessingReverse, 2
	if err := f.c.Update(t.Context(), ld); err != nil {
		t.Fatal(err)
	}
	f.reconcileUntilDone(t)
	ld = f.get(t)
	if ld.Status.Phase != datav1alpha1.PhaseReady || ld.Status.ProcessedCount != 900 || ld.Status.ObservedGeneration != 2 {
		t.Errorf("status %+v, want 900 processed at generation 2", ld.Status)
	}
	// Exactly once per generation: 700 and then 900.
	if got := testenv.MetricValue(t, f.reg, "kubeshard_largedata_items_processed_total", nil); got != 1600 {
		t.Errorf("kubeshard_largedata_items_processed_total = %v, want 1600", got)
	}
	recs, _ := f.st.Records(t.Context(), store.Key{UID: "uid-1"}, 0, 2000)
	for _, r := range recs {
		if want, _ := transform(t, datav1alpha1.ProcessingReverse)(r.Payload); r.Result != want || r.Generation != 2 {
			t.Fatalf("record %d: result %q generation %d, want %q 2", r.Index, r.Result, r.Generation, want)
		}
	}
}

func TestReconcileSpecThatCanNeverSucceed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ld     *datav1alpha1.LargeData
		opts   largedata.Options
		reason string
	}{
		{"above the store quota", dataset(101, datav1alpha1.ProcessingChecksum), largedata.Options{ItemQuota: 100}, largedata.ReasonQuotaExceeded},
		// The API server accepts only the enum; a newer CRD may extend it.
		{"processing unknown to this version", dataset(10, "Compress"), largedata.Options{}, largedata.ReasonUnknownProcessing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.ld, tc.opts)
			_, err := f.reconcile(t)
			if !errors.Is(err, reconcile.TerminalError(nil)) {
				t.Fatalf("reconcile: got %v, want a terminal error", err)
			}
			ld := f.get(t)
			if ld.Status.Phase != datav1alpha1.PhaseFailed {
				t.Errorf("phase %s, want Failed", ld.Status.Phase)
			}
			wantCondition(t, ld, datav1alpha1.ConditionReady, metav1.ConditionFalse, tc.reason)
			if _, err := f.st.Progress(t.Context(), store.Key{UID: "uid-1"}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the store has a dataset for a spec that can never succeed (%v)", err)
			}
		})
	}
}

func TestReconcileStoreOutage(t *testing.T) {
	f := newFixture(t, dataset(1000, datav1alpha1.ProcessingChecksum), largedata.Options{})
	f.st.SetUnavailable(true)
	_, err := f.reconcile(t)
	if err == nil || errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("reconcile with the store down: got %v, want an error to retry", err)
	}
	ld := f.get(t)
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionTrue, largedata.ReasonStoreUnavailable)
	if ld.Status.Phase != datav1alpha1.PhasePending {
		t.Errorf("phase %s, want Pending", ld.Status.Phase)
	}
	if got := testenv.MetricValue(t, f.reg, "kubeshard_largedata_store_errors_total", map[string]string{"operation": "initialize"}); got != 1 {
		t.Errorf("kubeshard_largedata_store_errors_total{operation=initialize} = %v, want 1", got)
	}

	f.st.SetUnavailable(false)
	f.reconcileUntilDone(t)
	ld = f.get(t)
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionFalse, largedata.ReasonHealthy)
	wantCondition(t, ld, datav1alpha1.ConditionReady, metav1.ConditionTrue, largedata.ReasonProcessed)
}

func TestReconcileDeletionWaitsForTheStore(t *testing.T) {
	f := newFixture(t, dataset(1000, datav1alpha1.ProcessingChecksum), largedata.Options{InitBatchSize: 400})
	f.reconcileUntilDone(t)
	if err := f.c.Delete(t.Context(), f.get(t)); err != nil {
		t.Fatal(err)
	}

	f.st.SetUnavailable(true)
	if _, err := f.reconcile(t); err == nil {
		t.Fatal("reconcile of a deletion with the store down: got no error, want one to retry")
	}
	ld := f.get(t)
	if ld.Status.Phase != datav1alpha1.PhaseDeleting || len(ld.Finalizers) != 1 {
		t.Errorf("phase %s finalizers %v, want Deleting with the finalizer kept", ld.Status.Phase, ld.Finalizers)
	}
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionTrue, largedata.ReasonStoreUnavailable)

	f.st.SetUnavailable(false)
	// 1000 records, 400 per reconcile.
	if n := f.reconcileUntilDone(t); n != 3 {
		t.Errorf("deletion took %d reconciles, want 3", n)
	}
	if err := f.c.Get(t.Context(), f.req.NamespacedName, &datav1alpha1.LargeData{}); !apierrors.IsNotFound(err) {
		t.Errorf("reading the LargeData after its deletion: got %v, want NotFound", err)
	}
	if _, err := f.st.Progress(t.Context(), store.Key{UID: "uid-1"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the dataset outlived its object in the store (%v)", err)
	}
}

func TestReconcileInitializesInBatches(t *testing.T) {
	f := newFixture(t, dataset(1000, datav1alpha1.ProcessingChecksum), largedata.Options{InitBatchSize: 400})
	for i, want := range []string{"400 of 1000 records created", "800 of 1000 records created"} {
		if _, err := f.reconcile(t); err != nil {
			t.Fatalf("reconcile %d: %v", i+1, err)
		}
		ld := f.get(t)
		wantCondition(t, ld, datav1alpha1.ConditionReady, metav1.ConditionFalse, largedata.ReasonInitializing)
		if c := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionReady); ld.Status.Phase != datav1alpha1.PhaseInitializing || c.Message != want {
			t.Errorf("after reconcile %d: phase %s, Ready says %q; want Initializing, %q", i+1, ld.Status.Phase, c.Message, want)
		}
	}
	if _, err := f.reconcile(t); err != nil {
		t.Fatal(err)
	}
	ld := f.get(t)
	wantCondition(t, ld, datav1alpha1.ConditionReady, metav1.ConditionFalse, largedata.ReasonProcessing)
	if ld.Status.Phase != datav1alpha1.PhaseProcessing {
		t.Errorf("phase %s once every record exists, want Processing", ld.Status.Phase)
	}
}

func TestReconcileSummaryNameTaken(t *testing.T) {
	f := newFixture(t, dataset(10, datav1alpha1.ProcessingChecksum), largedata.Options{})
	mine := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "dataset-1"}, Data: map[string]string{"a": "b"}}
	if err := f.c.Create(t.Context(), mine); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 3 {
		if _, err = f.reconcile(t); err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("reconcile with the summary's name taken: got %v, want an error to retry", err)
	}
	wantCondition(t, f.get(t), datav1alpha1.ConditionDegraded, metav1.ConditionTrue, largedata.ReasonSummaryConflict)
	got := &corev1.ConfigMap{}
	if err := f.c.Get(t.Context(), client.ObjectKeyFromObject(mine), got); err != nil || got.Data["a"] != "b" || len(got.OwnerReferences) != 0 {
		t.Errorf("the reconciler touched a ConfigMap it does not own: %+v (%v)", got, err)
	}
}

// A status computed from a cached copy older than the object must not be
// written: a merge patch from it would mix its fields into a status that has
// moved on. The write is refused, the reconcile asks to run again, and the
// next one, from a fresh copy, finishes the dataset.
func TestReconcileRefusesAStatusFromAStaleCopy(t *testing.T) {
	f := newFixture(t, dataset(2000, datav1alpha1.ProcessingChecksum), largedata.Options{})
	if _, err := f.reconcile(t); err != nil {
		t.Fatal(err)
	}
	stale := f.get(t)
	if _, err := f.reconcile(t); err != nil {
		t.Fatal(err)
	}
	moved := f.get(t)
	if moved.ResourceVersion == stale.ResourceVersion {
		t.Fatal("the second reconcile wrote no status; the test needs one that did")
	}

	// A reconciler whose reads return the old copy, as a lagging cache would.
	lagging := interceptor.NewClient(f.c.(client.WithWatch), interceptor.Funcs{
		Get: func(_ context.Context, _ client.WithWatch, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
			stale.DeepCopyInto(obj.(*datav1alpha1.LargeData))
			return nil
		},
	})
	r, err := largedata.NewReconciler(lagging, f.c.Scheme(), f.st, largedata.Options{Clock: f.clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Reconcile(t.Context(), f.req)
	if err != nil || res.RequeueAfter <= 0 {
		t.Fatalf("reconcile from a stale copy: %+v, %v; want a requeue and no error", res, err)
	}
	if now := f.get(t); now.ResourceVersion != moved.ResourceVersion {
		t.Fatalf("a status computed from resourceVersion %s was written over %s", stale.ResourceVersion, moved.ResourceVersion)
	}

	f.reconcileUntilDone(t)
	done := f.get(t)
	if done.Status.Phase != datav1alpha1.PhaseReady {
		t.Fatalf("phase %q after the retries, want Ready", done.Status.Phase)
	}
	wantCondition(t, done, datav1alpha1.ConditionReady, metav1.ConditionTrue, largedata.ReasonProcessed)
}

// Objects reconciled by an older version carry the conditions Initialized and
// Processing, which repeated Ready; they go with the next status this
// version writes, instead of staying behind at an old generation.
func TestReconcileDropsRetiredConditions(t *testing.T) {
	ld := dataset(100, datav1alpha1.ProcessingChecksum)
	old := metav1.NewTime(time.Unix(1_700_000_000, 0))
	ld.Status.Conditions = []metav1.Condition{
		{Type: "Initialized", Status: metav1.ConditionTrue, Reason: "Initialized", Message: "All 100 records exist", LastTransitionTime: old, ObservedGeneration: 1},
		{Type: "Processing", Status: metav1.ConditionTrue, Reason: "Processing", Message: "0 of 100 records processed", LastTransitionTime: old, ObservedGeneration: 1},
	}
	f := newFixture(t, ld, largedata.Options{})
	f.reconcileUntilDone(t)
	got := f.get(t)
	if types := conditionTypes(got); !slices.Equal(types, []string{datav1alpha1.ConditionReady}) {
		t.Errorf("conditions %v after a reconcile, want [Ready]: the retired ones stayed", types)
	}
}
