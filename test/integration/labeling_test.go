package integration

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/labeler"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

const (
	labelingNamespace = "labeling"
	// labelingObjects is how many LargeData exist before the labeler starts,
	// as when kubeshard is installed into a cluster that already has them.
	labelingObjects = 10_000
	// labelingSweepInterval is the labeler's default. The test drives the
	// labeler's clock, so a sweep runs exactly when the test steps it: not
	// during the labelling it measures, and at once when it wants one.
	labelingSweepInterval = 10 * time.Minute
)

var (
	labelingLargeDataGVK = datav1alpha1.GroupVersion.WithKind("LargeData")
	labelingConfigMapGVK = corev1.SchemeGroupVersion.WithKind("ConfigMap")
)

func labelingSlot(name string) string {
	return slotlabel.Value(ring.Slot(labelingNamespace, name, ring.DefaultSlots))
}

// TestLabeler runs without the webhook: every label comes from the labeler.
//
// It has a control plane of its own rather than the package's: its 10,000
// objects would otherwise be listed and watched by every later test, and
// deleting them takes longer (about 35 s, the API server deletes a
// collection one object at a time) than starting a control plane (about 5 s).
func TestLabeler(t *testing.T) {
	ctx := t.Context()
	own, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := own.Stop(); err != nil {
			t.Error(err)
		}
	})
	c := own.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: labelingNamespace}}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: "largedata"},
		Spec: shardingv1alpha1.ShardRingSpec{Resources: []shardingv1alpha1.ShardedResource{{
			GroupResource: shardingv1alpha1.GroupResource{Group: datav1alpha1.GroupVersion.Group, Resource: "largedata"},
			Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
		}}},
	}
	if err := c.Create(ctx, sr); err != nil {
		t.Fatalf("creating the ShardRing: %v", err)
	}

	// Before the labeler starts: objects without label, one with a label a
	// client chose, a child of a LargeData and a ConfigMap that is nobody's
	// child.
	start := time.Now()
	labelingCreateMany(t, own, labelingObjects)
	t.Logf("created %d LargeData in %v", labelingObjects, time.Since(start).Round(time.Millisecond))
	chosen := &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: "chosen",
			Labels: map[string]string{shardingv1alpha1.LabelSlot: "7777"}},
		Spec: datav1alpha1.LargeDataSpec{Items: 1},
	}
	owner := &datav1alpha1.LargeData{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: labelingNamespace, Name: labelingName(0)}, owner); err != nil {
		t.Fatal(err)
	}
	child := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: "summary",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: datav1alpha1.GroupVersion.String(), Kind: "LargeData",
			Name: owner.Name, UID: owner.UID, Controller: new(true)}}}}
	settings := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: "settings"}}
	for _, obj := range []client.Object{chosen, child, settings} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %s: %v", obj.GetName(), err)
		}
	}

	reg := prometheus.NewRegistry()
	clk := clocktesting.NewFakeClock(time.Now())
	l := labelingStart(t, own, client.ObjectKeyFromObject(sr), clk, reg)
	labelStart := time.Now()

	// Every object created before the labeler ends up with its slot.
	labelingWaitAllLabelled(t, c, labelingObjects+1, 120*time.Second)
	took := time.Since(labelStart)
	t.Logf("labelled %d LargeData in %v (%.0f objects/s)", labelingObjects+1, took.Round(time.Millisecond),
		float64(labelingObjects+1)/took.Seconds())

	labelingWantLabel(t, c, labelingLargeDataGVK, "chosen", labelingSlot("chosen"))
	labelingWantLabel(t, c, labelingConfigMapGVK, "summary", labelingSlot(owner.Name))
	labelingWantLabel(t, c, labelingConfigMapGVK, "settings", "")

	t.Run("generateName", func(t *testing.T) {
		ld := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, GenerateName: "generated-"},
			Spec:       datav1alpha1.LargeDataSpec{Items: 1},
		}
		if err := c.Create(ctx, ld); err != nil {
			t.Fatal(err)
		}
		took := testenv.Eventually(t, 10*time.Second, "the generated object is labelled", func() (bool, string) {
			got, want := labelingLabel(t, c, labelingLargeDataGVK, ld.Name), labelingSlot(ld.Name)
			return got == want, fmt.Sprintf("slot label %q, want %q", got, want)
		})
		t.Logf("labelled %s in %v", ld.Name, took.Round(time.Millisecond))
	})

	t.Run("a label that names no slot is corrected at once", func(t *testing.T) {
		// The watch selects "slot notin (0..P-1)": a missing label and one
		// that is no slot of the ring alike. No sweep is due meanwhile.
		for i, bad := range []string{"abc", "7777"} {
			name := labelingName(2 + i)
			patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, shardingv1alpha1.LabelSlot, bad)
			ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: name}}
			if err := c.Patch(ctx, ld, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
				t.Fatal(err)
			}
			took := testenv.Eventually(t, 10*time.Second, "the watch corrects the label", func() (bool, string) {
				got, want := labelingLabel(t, c, labelingLargeDataGVK, name), labelingSlot(name)
				return got == want, fmt.Sprintf("slot label %q, want %q", got, want)
			})
			t.Logf("corrected %q in %v, without a sweep", bad, took.Round(time.Millisecond))
		}
	})

	t.Run("a label that names the wrong slot is corrected by the sweep", func(t *testing.T) {
		// A slot of the ring, but not this object's: the watch does not
		// select it, the sweep finds it.
		name := labelingName(1)
		right := ring.Slot(labelingNamespace, name, ring.DefaultSlots)
		wrong := slotlabel.Value((right + 1) % ring.DefaultSlots)
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, shardingv1alpha1.LabelSlot, wrong)
		ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: name}}
		if err := c.Patch(ctx, ld, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
		// Nothing corrects it before the next sweep is due.
		time.Sleep(2 * time.Second)
		if got := labelingLabel(t, c, labelingLargeDataGVK, name); got != wrong {
			t.Fatalf("slot label %q before the sweep was due, want the wrong %s still", got, wrong)
		}
		testenv.Eventually(t, 10*time.Second, "the sweeper waits for its next sweep", func() (bool, string) {
			return clk.HasWaiters(), ""
		})
		clk.Step(labelingSweepInterval)
		took := testenv.Eventually(t, 20*time.Second, "the sweep corrects the label", func() (bool, string) {
			got, want := labelingLabel(t, c, labelingLargeDataGVK, name), labelingSlot(name)
			return got == want, fmt.Sprintf("slot label %q, want %q", got, want)
		})
		t.Logf("corrected %v after the sweep was due", took.Round(time.Millisecond))
	})

	t.Run("memory", func(t *testing.T) {
		// The labeler's cache holds only unlabelled objects: no LargeData is
		// left, and of the ConfigMaps only the one that is nobody's child.
		for _, tc := range []struct {
			kind string
			n    int
		}{{"LargeData", 0}, {"ConfigMap", 1}} {
			gvk := labelingLargeDataGVK
			if tc.kind == "ConfigMap" {
				gvk = labelingConfigMapGVK
			}
			var n int
			testenv.Eventually(t, 5*time.Second, "the labeler's cache drops labelled objects", func() (bool, string) {
				var err error
				n, err = l.Unlabelled(ctx, gvk, client.InNamespace(labelingNamespace))
				if err != nil {
					t.Fatal(err)
				}
				return n == tc.n, fmt.Sprintf("%d %s in the cache, want %d", n, tc.kind, tc.n)
			})
			t.Logf("%s in the labeler's cache: %d", tc.kind, n)
		}
	})

	missing := testenv.MetricValue(t, reg, "kubeshard_labeler_labels_total", map[string]string{"reason": "missing"})
	wrong := testenv.MetricValue(t, reg, "kubeshard_labeler_labels_total", map[string]string{"reason": "wrong"})
	t.Logf("kubeshard_labeler_labels_total: missing=%v wrong=%v", missing, wrong)
	if want := float64(labelingObjects + 2); missing < want {
		t.Errorf("labels_total{reason=missing} = %v, want at least %v", missing, want)
	}
	if wrong < 4 {
		t.Errorf("labels_total{reason=wrong} = %v, want at least 4", wrong)
	}
}

func labelingName(i int) string { return fmt.Sprintf("dataset-%05d", i) }

// labelingCreateMany creates n LargeData with 32 concurrent clients.
func labelingCreateMany(t *testing.T, e *testenv.Environment, n int) {
	t.Helper()
	ctx := t.Context()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, 32)
	)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				ld := &datav1alpha1.LargeData{
					ObjectMeta: metav1.ObjectMeta{Namespace: labelingNamespace, Name: labelingName(i)},
					Spec:       datav1alpha1.LargeDataSpec{Items: 1000, Seed: int64(i)},
				}
				if err := e.Client.Create(ctx, ld); err != nil {
					errs <- fmt.Errorf("creating %s: %w", ld.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// labelingStart runs a manager with only the labeler until the test ends.
func labelingStart(t *testing.T, e *testenv.Environment, ring types.NamespacedName, clk clock.WithTicker, reg *prometheus.Registry) *labeler.Labeler {
	t.Helper()
	log := zap.New(zap.WriteTo(os.Stderr))
	// controller-runtime's global logger: without it, the manager's client
	// prints a warning with a stack trace. It only ever goes to stderr.
	logf.SetLogger(log)
	mgr, err := manager.New(e.Config, manager.Options{
		Scheme:                 e.Scheme,
		Logger:                 log,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatalf("creating the manager: %v", err)
	}
	l, err := labeler.New(mgr, labeler.Options{
		Ring: ring, SweepInterval: labelingSweepInterval, MaxConcurrentReconciles: 16, Clock: clk, Registerer: reg,
	})
	if err != nil {
		t.Fatalf("creating the labeler: %v", err)
	}
	if err := mgr.Add(l); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return l
}

// labelingWaitAllLabelled waits until no LargeData in the namespace lacks
// the slot label (a cheap, server-side filtered list, so that polling does
// not slow the labeler down), then checks that all n carry their own slot.
func labelingWaitAllLabelled(t *testing.T, c client.Client, n int, timeout time.Duration) {
	t.Helper()
	unlabelled, err := labels.Parse("!" + shardingv1alpha1.LabelSlot)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, "every LargeData has a slot label", func() (bool, string) {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
		if err := c.List(t.Context(), list, client.InNamespace(labelingNamespace),
			client.MatchingLabelsSelector{Selector: unlabelled}, client.Limit(1)); err != nil {
			t.Fatalf("listing LargeData: %v", err)
		}
		if len(list.Items) > 0 {
			return false, list.Items[0].Name + " has none"
		}
		return true, ""
	})

	var right, total int
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
	opts := &client.ListOptions{Namespace: labelingNamespace, Limit: 2000}
	for {
		if err := c.List(t.Context(), list, opts); err != nil {
			t.Fatalf("listing LargeData: %v", err)
		}
		for _, item := range list.Items {
			total++
			if item.Labels[shardingv1alpha1.LabelSlot] == labelingSlot(item.Name) {
				right++
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	if right != n || total != n {
		t.Errorf("%d of %d LargeData carry their slot, want all %d", right, total, n)
	}
}

func labelingLabel(t *testing.T, c client.Client, gvk schema.GroupVersionKind, name string) string {
	t.Helper()
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(gvk)
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: labelingNamespace, Name: name}, obj); err != nil {
		t.Fatalf("reading %s %s: %v", gvk.Kind, name, err)
	}
	return obj.Labels[shardingv1alpha1.LabelSlot]
}

func labelingWantLabel(t *testing.T, c client.Client, gvk schema.GroupVersionKind, name, want string) {
	t.Helper()
	// The labeler works through its queue in no particular order: the wait
	// for every LargeData to have a label says nothing of this object.
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%s %s has slot label %q", gvk.Kind, name, want), func() (bool, string) {
		got := labelingLabel(t, c, gvk, name)
		return got == want, fmt.Sprintf("label %q", got)
	})
}
