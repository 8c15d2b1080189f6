package labeler

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

const (
	slots    = 1024
	ringName = "widgets"
)

var (
	widgetGVK    = testkind.GroupVersion.WithKind("Widget")
	configMapGVK = corev1.SchemeGroupVersion.WithKind("ConfigMap")
	deployGVK    = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
)

func testKinds(t *testing.T) *slotlabel.Kinds {
	t.Helper()
	m := meta.NewDefaultRESTMapper(nil)
	gvr := testkind.GroupVersion.WithResource("widgets")
	m.AddSpecific(widgetGVK, gvr, gvr, meta.RESTScopeNamespace)
	m.Add(configMapGVK, meta.RESTScopeNamespace)
	k, err := slotlabel.NewKinds(shardingv1alpha1.ShardRingSpec{
		Slots: slots,
		Resources: []shardingv1alpha1.ShardedResource{{
			GroupResource: shardingv1alpha1.GroupResource{Group: testkind.GroupVersion.Group, Resource: "widgets"},
			Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
		}},
	}, m)
	if err != nil {
		t.Fatalf("NewKinds: %v", err)
	}
	return k
}

func testMetrics(t *testing.T) (*metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, ringName)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func widget(name string, labels map[string]string) *testkind.Widget {
	return &testkind.Widget{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: labels, UID: types.UID("uid-" + name)},
		Spec:       testkind.WidgetSpec{Size: 1},
	}
}

func configMap(name string, controller *schema.GroupVersionKind, owner string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
	if controller != nil {
		cm.OwnerReferences = []metav1.OwnerReference{{APIVersion: controller.GroupVersion().String(),
			Kind: controller.Kind, Name: owner, UID: "owner", Controller: new(true)}}
	}
	return cm
}

func slotOf(name string) string { return slotlabel.Value(ring.Slot("ns", name, slots)) }

func labelOf(t *testing.T, c client.Client, gvk schema.GroupVersionKind, name string) (string, bool) {
	t.Helper()
	obj := partial(gvk)
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: "ns", Name: name}, obj); err != nil {
		t.Fatalf("reading %s %s: %v", gvk.Kind, name, err)
	}
	v, ok := obj.Labels[shardingv1alpha1.LabelSlot]
	return v, ok
}

func TestReconcile(t *testing.T) {
	for _, tc := range []struct {
		name       string
		obj        client.Object
		gvk        schema.GroupVersionKind
		want       string // "" for no label
		wantReason string // "" for no write
	}{
		{name: "sharded object without label", obj: widget("a", nil), gvk: widgetGVK,
			want: slotOf("a"), wantReason: reasonMissing},
		{name: "child of a sharded object", obj: configMap("a-summary", &widgetGVK, "a"), gvk: configMapGVK,
			want: slotOf("a"), wantReason: reasonMissing},
		{name: "child of a kind that is not sharded", obj: configMap("app-config", &deployGVK, "app"), gvk: configMapGVK},
		{name: "child kind without controller", obj: configMap("plain", nil, ""), gvk: configMapGVK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(tc.obj).Build()
			m, reg := testMetrics(t)
			r := &Reconciler{Reader: c, Client: c, Kinds: testKinds(t), Ring: ringName, metrics: m}
			req := Request{GVK: tc.gvk, NamespacedName: client.ObjectKeyFromObject(tc.obj)}
			if _, err := r.Reconcile(t.Context(), req); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			got, _ := labelOf(t, c, tc.gvk, tc.obj.GetName())
			if got != tc.want {
				t.Errorf("slot label = %q, want %q", got, tc.want)
			}
			for _, reason := range []string{reasonMissing, reasonWrong} {
				want := 0.0
				if reason == tc.wantReason {
					want = 1
				}
				if got := labelsTotal(t, reg, reason); got != want {
					t.Errorf("kubeshard_labeler_labels_total{reason=%q} = %v, want %v", reason, got, want)
				}
			}
		})
	}
}

func TestReconcileGoneObject(t *testing.T) {
	// The cache no longer has the object: it was labelled (and so left the
	// cache's selector) or deleted. Nothing to do, and no error to retry.
	c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).Build()
	m, _ := testMetrics(t)
	r := &Reconciler{Reader: c, Client: c, Kinds: testKinds(t), Ring: ringName, metrics: m}
	req := Request{GVK: widgetGVK, NamespacedName: types.NamespacedName{Namespace: "ns", Name: "gone"}}
	if _, err := r.Reconcile(t.Context(), req); err != nil {
		t.Errorf("Reconcile of an object not in the cache: %v, want nil", err)
	}

	// Deleted between the cache read and the patch: same.
	obj := widget("racing", nil)
	c = fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(obj).WithInterceptorFuncs(interceptor.Funcs{
		Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
			return apierrors.NewNotFound(schema.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"}, "racing")
		},
	}).Build()
	r.Reader, r.Client = c, c
	req.Name = "racing"
	if _, err := r.Reconcile(t.Context(), req); err != nil {
		t.Errorf("Reconcile of an object deleted before the patch: %v, want nil", err)
	}
}

func TestLabelIsConditionalOnTheJudgedVersion(t *testing.T) {
	// The sweep judged a listed copy; the object has changed since (the watch
	// labelled it, or another owner took it). The patch must not apply.
	c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(widget("a", nil)).Build()
	m, reg := testMetrics(t)
	r := &Reconciler{Client: c, Kinds: testKinds(t), Ring: ringName, metrics: m}
	stale := partial(widgetGVK)
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: "ns", Name: "a"}, stale); err != nil {
		t.Fatal(err)
	}
	if err := c.Patch(t.Context(), widget("a", nil), client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"team":"b"}}}`))); err != nil {
		t.Fatal(err)
	}
	labelled, err := r.Relabel(t.Context(), stale)
	if labelled || err != nil {
		t.Errorf("label of a stale copy = (%v, %v), want (false, nil)", labelled, err)
	}
	if got, ok := labelOf(t, c, widgetGVK, "a"); ok {
		t.Errorf("slot label %q written onto a version nobody judged", got)
	}
	if got := labelsTotal(t, reg, reasonMissing); got != 0 {
		t.Errorf("labels_total{reason=missing} = %v, want 0", got)
	}
}

// pagingLister makes a fake client serve lists in pages, as the API server
// does, and lets a test expire a continue token.
type pagingLister struct {
	calls     atomic.Int32
	expireAt  int32 // 1-based call number whose continue token has expired; 0 never
	listCalls []string
}

func (p *pagingLister) list(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	n := p.calls.Add(1)
	p.listCalls = append(p.listCalls, fmt.Sprintf("limit=%d continue=%q", lo.Limit, lo.Continue))
	if n == p.expireAt && lo.Continue != "" {
		return apierrors.NewResourceExpired("The provided continue parameter is too old")
	}
	all := list.DeepCopyObject().(client.ObjectList)
	if err := c.List(ctx, all, &client.ListOptions{Namespace: lo.Namespace}); err != nil {
		return err
	}
	items, err := meta.ExtractList(all)
	if err != nil {
		return err
	}
	start := 0
	if lo.Continue != "" {
		if start, err = strconv.Atoi(lo.Continue); err != nil {
			return err
		}
	}
	end := min(len(items), start+int(lo.Limit))
	if err := meta.SetList(list, items[start:end]); err != nil {
		return err
	}
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	list.SetContinue(next)
	return nil
}

func TestSweep(t *testing.T) {
	objs := []client.Object{
		widget("missing-1", nil),
		widget("missing-2", map[string]string{"team": "a"}),
		widget("wrong-1", map[string]string{shardingv1alpha1.LabelSlot: "not-a-slot"}),
		widget("wrong-2", map[string]string{shardingv1alpha1.LabelSlot: "5000"}),
		widget("right", map[string]string{shardingv1alpha1.LabelSlot: slotOf("right")}),
		widget("pending", nil), // in the labeler's cache: the watch's
		configMap("child", &widgetGVK, "right"),
		configMap("unrelated", &deployGVK, "app"),
	}
	// Six Widgets in pages of 2: call 3 asks for the third page, with an
	// expired token.
	lister := &pagingLister{expireAt: 3}
	c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{List: lister.list}).Build()
	pending := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(widget("pending", nil)).Build()
	m, reg := testMetrics(t)
	kinds := testKinds(t)
	s := &Sweeper{
		Reader: c, Pending: pending, Kinds: kinds, PageSize: 2,
		Reconciler: &Reconciler{Client: c, Kinds: kinds, Ring: ringName, metrics: m},
	}
	type want struct {
		gvk  schema.GroupVersionKind
		name string
		slot string
	}
	check := func(t *testing.T, res SweepResult, labelled int, missing, wrong float64, wants []want) {
		t.Helper()
		for _, w := range wants {
			if got, _ := labelOf(t, c, w.gvk, w.name); got != w.slot {
				t.Errorf("%s %s: slot label %q, want %q", w.gvk.Kind, w.name, got, w.slot)
			}
		}
		if res.Labelled != labelled {
			t.Errorf("SweepResult.Labelled = %d, want %d", res.Labelled, labelled)
		}
		if got := labelsTotal(t, reg, reasonMissing); got != missing {
			t.Errorf("labels_total{reason=missing} = %v, want %v", got, missing)
		}
		if got := labelsTotal(t, reg, reasonWrong); got != wrong {
			t.Errorf("labels_total{reason=wrong} = %v, want %v", got, wrong)
		}
	}

	// First sweep: wrong labels are corrected; objects without label that
	// the watch does not hold may have been labelled since the list, so they
	// get until the next sweep.
	res, err := s.Sweep(t.Context())
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	check(t, res, 2, 0, 2, []want{
		{widgetGVK, "missing-1", ""},
		{widgetGVK, "wrong-1", slotOf("wrong-1")},
		{widgetGVK, "wrong-2", slotOf("wrong-2")},
		{widgetGVK, "right", slotOf("right")},
		{configMapGVK, "child", ""},
	})
	// Widgets: pages 1 and 2, page 3 expired, then 3 pages from the
	// start; ConfigMaps: 1 page. Every request is bounded by the page size.
	if want := []string{
		`limit=2 continue=""`, `limit=2 continue="2"`, `limit=2 continue="4"`,
		`limit=2 continue=""`, `limit=2 continue="2"`, `limit=2 continue="4"`,
		`limit=2 continue=""`,
	}; fmt.Sprint(lister.listCalls) != fmt.Sprint(want) {
		t.Errorf("list calls:\n%v\nwant\n%v", lister.listCalls, want)
	}

	// Meanwhile missing-2 changes: whoever changed it may label it.
	if err := c.Patch(t.Context(), widget("missing-2", nil), client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"team":"b"}}}`))); err != nil {
		t.Fatal(err)
	}

	// Second sweep: still unlabelled, unchanged and not in the watch's cache
	// means the watch missed them.
	res, err = s.Sweep(t.Context())
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	check(t, res, 2, 2, 2, []want{
		{widgetGVK, "missing-1", slotOf("missing-1")},
		{widgetGVK, "missing-2", ""},
		{widgetGVK, "pending", ""},
		{configMapGVK, "child", slotOf("right")},
		{configMapGVK, "unrelated", ""},
	})

	res, err = s.Sweep(t.Context())
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	check(t, res, 1, 3, 2, []want{
		{widgetGVK, "missing-2", slotOf("missing-2")},
		{widgetGVK, "pending", ""},
	})
}

func TestSweepWithoutWatchLabelsAtOnce(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(widget("a", nil)).Build()
	m, _ := testMetrics(t)
	kinds := testKinds(t)
	s := &Sweeper{Reader: c, Kinds: kinds, PageSize: 500, Reconciler: &Reconciler{Client: c, Kinds: kinds, Ring: ringName, metrics: m}}
	if _, err := s.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := labelOf(t, c, widgetGVK, "a"); got != slotOf("a") {
		t.Errorf("slot label %q, want %q", got, slotOf("a"))
	}
}

func TestSweepGivesUpAfterRepeatedExpiry(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithInterceptorFuncs(interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return apierrors.NewResourceExpired("too old")
		},
	}).Build()
	m, _ := testMetrics(t)
	kinds := testKinds(t)
	s := &Sweeper{Reader: c, Kinds: kinds, PageSize: 2, Reconciler: &Reconciler{Client: c, Kinds: kinds, Ring: ringName, metrics: m}}
	if _, err := s.Sweep(t.Context()); !apierrors.IsResourceExpired(err) {
		t.Errorf("Sweep: got %v, want the expiry error once restarts are exhausted", err)
	}
}

func TestSweeperRunsAtStartAndEveryInterval(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var lists atomic.Int32
	c := fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
			lists.Add(1)
			return c.List(ctx, l, opts...)
		},
	}).Build()
	m, reg := testMetrics(t)
	kinds := testKinds(t)
	clk := clocktesting.NewFakeClock(time.Now())
	s := &Sweeper{
		Reader: c, Kinds: kinds, PageSize: 500, Interval: 10 * time.Minute, Clock: clk,
		Reconciler: &Reconciler{Client: c, Kinds: kinds, Ring: ringName, metrics: m},
	}
	stopped := make(chan struct{})
	go func() { s.Run(ctx); close(stopped) }()

	// Two kinds: one list each per sweep.
	testenv.Eventually(t, 5*time.Second, "the sweep at start lists both kinds and waits for the next", func() (bool, string) {
		return lists.Load() == 2 && clk.HasWaiters(), fmt.Sprintf("%d lists, sweeper waiting on the clock: %v", lists.Load(), clk.HasWaiters())
	})
	clk.Step(9 * time.Minute)
	time.Sleep(50 * time.Millisecond)
	if n := lists.Load(); n != 2 {
		t.Fatalf("%d lists before the interval passed, want 2", n)
	}
	clk.Step(time.Minute)
	testenv.Eventually(t, 5*time.Second, "the sweep after one interval lists both kinds", func() (bool, string) {
		return lists.Load() == 4, fmt.Sprintf("%d lists", lists.Load())
	})
	if got, _ := testenv.Histogram(t, reg, "kubeshard_labeler_sweep_duration_seconds", map[string]string{"ring": ringName}); got < 1 {
		t.Errorf("kubeshard_labeler_sweep_duration_seconds count = %v, want at least 1", got)
	}
	cancel()
	<-stopped
}

func TestSlimMetadata(t *testing.T) {
	in := &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "ns", Name: "a", UID: "u", ResourceVersion: "7",
			Labels:      map[string]string{"app": "x"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "o1"},
				{APIVersion: "example.kubeshard.dev/v1", Kind: "Widget", Name: "w", UID: "o2", Controller: new(true)},
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
	}
	out, err := slimMetadata(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*metav1.PartialObjectMetadata)
	if got.Name != "a" || got.Namespace != "ns" || got.UID != "u" || got.ResourceVersion != "7" || got.Kind != "ConfigMap" {
		t.Errorf("identity lost: %+v", got)
	}
	if len(got.Annotations) != 0 || len(got.ManagedFields) != 0 || len(got.Labels) != 0 {
		t.Errorf("kept metadata the labeler never reads: %+v", got.ObjectMeta)
	}
	if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].Name != "w" {
		t.Errorf("owner references = %+v, want only the controller", got.OwnerReferences)
	}
}

func labelsTotal(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return testenv.MetricValue(t, reg, "kubeshard_labeler_labels_total", map[string]string{"ring": ringName, "reason": reason})
}
