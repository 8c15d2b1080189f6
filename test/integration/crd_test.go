package integration

import (
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

func largeDataResource() []shardingv1alpha1.ShardedResource {
	return []shardingv1alpha1.ShardedResource{{
		GroupResource: shardingv1alpha1.GroupResource{Group: datav1alpha1.GroupVersion.Group, Resource: "largedata"},
		Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
	}}
}

func TestShardRingLifecycle(t *testing.T) {
	ctx := t.Context()
	c := env.Client
	ring := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: "lifecycle", Namespace: "default"},
		Spec:       shardingv1alpha1.ShardRingSpec{Resources: largeDataResource()},
	}
	if err := c.Create(ctx, ring); err != nil {
		t.Fatalf("creating a ShardRing: %v", err)
	}

	got := &shardingv1alpha1.ShardRing{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ring), got); err != nil {
		t.Fatalf("reading the ShardRing back: %v", err)
	}
	want := shardingv1alpha1.ShardRingSpec{
		Slots: 1024, LoadFactor: "1.25", LeaseDurationSeconds: 15,
		SelectorMode: shardingv1alpha1.SelectorModeLabels,
	}
	if got.Spec.Slots != want.Slots || got.Spec.LoadFactor != want.LoadFactor ||
		got.Spec.LeaseDurationSeconds != want.LeaseDurationSeconds || got.Spec.SelectorMode != want.SelectorMode {
		t.Errorf("defaults: got slots=%d loadFactor=%q leaseDurationSeconds=%d selectorMode=%q, want %d %q %d %q",
			got.Spec.Slots, got.Spec.LoadFactor, got.Spec.LeaseDurationSeconds, got.Spec.SelectorMode,
			want.Slots, want.LoadFactor, want.LeaseDurationSeconds, want.SelectorMode)
	}

	// A ring's slot count is fixed for its lifetime: every slot label derives from it.
	changed := got.DeepCopy()
	changed.Spec.Slots = 2048
	err := c.Update(ctx, changed)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "slots is immutable") {
		t.Errorf("changing spec.slots: got %v, want an Invalid error saying slots is immutable", err)
	}

	// So is its selector mode: it decides every object's slot.
	changed = got.DeepCopy()
	changed.Spec.SelectorMode = shardingv1alpha1.SelectorModeShardSelector
	err = c.Update(ctx, changed)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "selectorMode is immutable") {
		t.Errorf("changing spec.selectorMode: got %v, want an Invalid error saying selectorMode is immutable", err)
	}

	// Other fields stay mutable.
	got.Spec.LeaseDurationSeconds = 30
	if err := c.Update(ctx, got); err != nil {
		t.Errorf("changing spec.leaseDurationSeconds: %v", err)
	}

	if err := c.Delete(ctx, got); err != nil {
		t.Fatalf("deleting the ShardRing: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ring), &shardingv1alpha1.ShardRing{}); !apierrors.IsNotFound(err) {
		t.Errorf("reading a deleted ShardRing: got %v, want NotFound", err)
	}
}

func TestShardRingSelectorModeShardSelector(t *testing.T) {
	ring := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: "by-uid", Namespace: "default"},
		Spec: shardingv1alpha1.ShardRingSpec{
			Resources:    largeDataResource(),
			SelectorMode: shardingv1alpha1.SelectorModeShardSelector,
		},
	}
	if err := env.Client.Create(t.Context(), ring); err != nil {
		t.Fatalf("creating a ShardRing with selectorMode ShardSelector: %v", err)
	}
	if err := env.Client.Delete(t.Context(), ring); err != nil {
		t.Fatalf("deleting the ShardRing: %v", err)
	}
}

func TestLargeDataLifecycle(t *testing.T) {
	ctx := t.Context()
	c := env.Client
	ld := &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Name: "lifecycle", Namespace: "default"},
		Spec:       datav1alpha1.LargeDataSpec{Items: 1000, Seed: 7},
	}
	if err := c.Create(ctx, ld); err != nil {
		t.Fatalf("creating a LargeData: %v", err)
	}
	got := &datav1alpha1.LargeData{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ld), got); err != nil {
		t.Fatalf("reading the LargeData back: %v", err)
	}
	if got.Spec.Items != 1000 || got.Spec.Seed != 7 {
		t.Errorf("spec round trip: got items=%d seed=%d, want 1000 7", got.Spec.Items, got.Spec.Seed)
	}
	if got.Spec.BatchSize != datav1alpha1.DefaultBatchSize || got.Spec.Processing != datav1alpha1.ProcessingChecksum {
		t.Errorf("defaults: got batchSize=%d processing=%q, want %d %q",
			got.Spec.BatchSize, got.Spec.Processing, datav1alpha1.DefaultBatchSize, datav1alpha1.ProcessingChecksum)
	}

	// Status is a subresource: a status patch must not be able to change the spec.
	patch := client.MergeFrom(got.DeepCopy())
	got.Status.Phase = datav1alpha1.PhaseProcessing
	got.Status.TotalItems = 1000
	if err := c.Status().Patch(ctx, got, patch); err != nil {
		t.Fatalf("patching status: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ld), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != datav1alpha1.PhaseProcessing {
		t.Errorf("status after patch: got phase %q, want %q", got.Status.Phase, datav1alpha1.PhaseProcessing)
	}

	if err := c.Delete(ctx, got); err != nil {
		t.Fatalf("deleting the LargeData: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ld), &datav1alpha1.LargeData{}); !apierrors.IsNotFound(err) {
		t.Errorf("reading a deleted LargeData: got %v, want NotFound", err)
	}
}

// unstructuredWith turns obj into its unstructured form and sets one field,
// to send values such as 0 that the typed client drops as empty.
func unstructuredWith(obj client.Object, fieldAndValue ...any) client.Object {
	gvk, err := apiutil.GVKForObject(obj, env.Scheme)
	if err != nil {
		panic(err)
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		panic(err)
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace("default")
	u.SetGenerateName("invalid-")
	fields := make([]string, 0, len(fieldAndValue)-1)
	for _, f := range fieldAndValue[:len(fieldAndValue)-1] {
		fields = append(fields, f.(string))
	}
	if err := unstructured.SetNestedField(u.Object, fieldAndValue[len(fieldAndValue)-1], fields...); err != nil {
		panic(err)
	}
	if gvk.Kind == "ShardRing" {
		// The typed zero value lacks the required resources.
		_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"group": "data.kubeshard.dev", "resource": "largedata"}}, "spec", "resources")
	}
	return u
}

// TestInvalidSpecsAreRejected checks that bad input is refused by the API
// server with a message that says what is wrong, so the operator never sees it.
func TestInvalidSpecsAreRejected(t *testing.T) {
	ring := func(mutate func(*shardingv1alpha1.ShardRingSpec)) client.Object {
		r := &shardingv1alpha1.ShardRing{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "invalid-", Namespace: "default"},
			Spec:       shardingv1alpha1.ShardRingSpec{Resources: largeDataResource()},
		}
		mutate(&r.Spec)
		return r
	}
	largeData := func(mutate func(*datav1alpha1.LargeDataSpec)) client.Object {
		ld := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "invalid-", Namespace: "default"},
			Spec:       datav1alpha1.LargeDataSpec{Items: 10},
		}
		mutate(&ld.Spec)
		return ld
	}
	tests := []struct {
		name    string
		obj     client.Object
		message string
	}{
		{"ring with negative slots", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.Slots = -1 }), "spec.slots"},
		{"ring with zero slots, as kubectl sends it", unstructuredWith(&shardingv1alpha1.ShardRing{}, "spec", "slots", int64(0)), "spec.slots"},
		{"ring with too many slots", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.Slots = 20000 }), "spec.slots"},
		{"ring with load factor 1", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.LoadFactor = "1.0" }), "loadFactor must be a decimal greater than 1"},
		{"ring with load factor not a number", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.LoadFactor = "high" }), "loadFactor must be a decimal greater than 1"},
		{"ring with no resources", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.Resources = nil }), "spec.resources"},
		{"ring with a resource twice", ring(func(s *shardingv1alpha1.ShardRingSpec) {
			s.Resources = append(s.Resources, s.Resources[0])
		}), "each resource may be listed only once"},
		{"ring with a bad resource name", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.Resources[0].Resource = "Large Data" }), "spec.resources[0].resource"},
		{"ring with an unknown selector mode", ring(func(s *shardingv1alpha1.ShardRingSpec) { s.SelectorMode = "Random" }), "spec.selectorMode"},
		{"dataset with negative items", largeData(func(s *datav1alpha1.LargeDataSpec) { s.Items = -1 }), "spec.items"},
		{"dataset with negative batch size", largeData(func(s *datav1alpha1.LargeDataSpec) { s.BatchSize = -5 }), "spec.batchSize"},
		{"dataset with batch size 0, as kubectl sends it", unstructuredWith(&datav1alpha1.LargeData{Spec: datav1alpha1.LargeDataSpec{Items: 10}}, "spec", "batchSize", int64(0)), "spec.batchSize"},
		{"dataset with batch size above the bound", largeData(func(s *datav1alpha1.LargeDataSpec) { s.BatchSize = datav1alpha1.MaxBatchSize + 1 }), "spec.batchSize"},
		{"dataset with unknown processing", largeData(func(s *datav1alpha1.LargeDataSpec) { s.Processing = "Compress" }), "spec.processing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := env.Client.Create(t.Context(), tt.obj)
			if err == nil {
				t.Fatalf("creating %s was accepted, want it rejected", tt.name)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.message) {
				t.Errorf("got %v, want an Invalid error mentioning %q", err, tt.message)
			}
		})
	}
}
