package shardcache

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/wirecount"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
)

const (
	slots        = 64
	perNamespace = 1000
	childEvery   = 10 // every tenth LargeData has a child ConfigMap
)

var (
	namespaces    = []string{"shard-a", "shard-b"}
	largeDataKind = datav1alpha1.GroupVersion.WithKind("LargeData")
	configMapKind = corev1.SchemeGroupVersion.WithKind("ConfigMap")
)

// TestTheCacheFollowsTheServedSlots drives one member's cache through gains,
// a loss and a compaction on a real API server, with a controller on top.
func TestTheCacheFollowsTheServedSlots(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Now()
	fx := createObjects(t, ctx)
	t.Logf("created %d LargeData and %d ConfigMaps in %v", fx.count(fx.largeData, seq(0, slots-1)),
		fx.count(fx.children, seq(0, slots-1)), time.Since(start).Round(time.Millisecond))

	wire := &wire{objects: map[string]int{}, open: map[string]int{}}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(wire.wrap)
	rec := &reconciles{n: map[types.NamespacedName]int{}}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: env.Scheme,
		NewCache: shardcache.NewCacheFunc(shardcache.Options{
			ShardedObjects: []client.Object{&datav1alpha1.LargeData{}, &corev1.ConfigMap{}},
			Slots:          slots,
			CompactAfter:   time.Second,
		}),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctrl.NewControllerManagedBy(mgr).For(&datav1alpha1.LargeData{}).Owns(&corev1.ConfigMap{}).Complete(rec); err != nil {
		t.Fatal(err)
	}
	c := mgr.GetCache().(*shardcache.Cache)
	reader := mgr.GetClient()
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}

	t.Run("serving nothing", func(t *testing.T) {
		key := fx.largeData[0][0]
		if err := reader.Get(ctx, key, &datav1alpha1.LargeData{}); !apierrors.IsNotFound(err) {
			t.Errorf("Get %s = %v, want NotFound", key, err)
		}
		checkList(t, ctx, reader, fx.largeData, nil)
		// Unsharded kinds come from the ordinary cache.
		if err := reader.Get(ctx, types.NamespacedName{Name: namespaces[0]}, &corev1.Namespace{}); err != nil {
			t.Errorf("Get of a namespace = %v", err)
		}
	})

	t.Run("gaining slots 0-15", func(t *testing.T) {
		begin := time.Now()
		if err := c.AddSlots(ctx, seq(0, 15)); err != nil {
			t.Fatal(err)
		}
		t.Logf("AddSlots(0-15) returned after %v", time.Since(begin).Round(time.Millisecond))
		checkList(t, ctx, reader, fx.largeData, seq(0, 15))
		outside := fx.largeData[40][0]
		if err := reader.Get(ctx, outside, &datav1alpha1.LargeData{}); !apierrors.IsNotFound(err) {
			t.Errorf("Get %s of slot 40 = %v, want NotFound", outside, err)
		}
		inside := fx.largeData[7][0]
		if err := reader.Get(ctx, inside, &datav1alpha1.LargeData{}); err != nil {
			t.Errorf("Get %s of slot 7 = %v", inside, err)
		}
		want := fx.count(fx.largeData, seq(0, 15))
		testenv.Eventually(t, wait, "every object of slots 0-15 is reconciled", func() (bool, string) {
			n := rec.reconciled(fx.objects(fx.largeData, seq(0, 15)))
			return n == want, fmt.Sprintf("%d of %d", n, want)
		})
		if n := rec.reconciled(fx.objects(fx.largeData, seq(16, slots-1))); n != 0 {
			t.Errorf("%d objects of unserved slots were reconciled", n)
		}
		t.Logf("%d objects of slots 0-15 reconciled, %d reconciles in all", want, rec.total())
	})

	t.Run("gaining slots 16-31 lists only them", func(t *testing.T) {
		if err := c.AddSlots(ctx, seq(16, 31)); err != nil {
			t.Fatal(err)
		}
		want := fx.count(fx.largeData, seq(16, 31))
		sel := "largedata " + selector(seq(16, 31))
		testenv.Eventually(t, wait, "the new group's lists and watches are counted", func() (bool, string) {
			n := wire.objectsOf(sel)
			return n >= want, fmt.Sprintf("%d of %d objects received", n, want)
		})
		if got := wire.objectsOf(sel); got != want {
			t.Errorf("the group of 16-31 received %d LargeData from the API server, want the %d of its slots", got, want)
		}
		groups := c.Groups()
		if len(groups) != 2 || groups[1].Objects[largeDataKind] != want {
			t.Errorf("groups = %+v, want a second group holding %d LargeData", groups, want)
		}
		t.Logf("the group of slots 16-31 received %d LargeData (of %d in all)", wire.objectsOf(sel), fx.count(fx.largeData, seq(0, slots-1)))
		checkList(t, ctx, reader, fx.largeData, seq(0, 31))
		testenv.Eventually(t, wait, "every object of slots 16-31 is reconciled", func() (bool, string) {
			n := rec.reconciled(fx.objects(fx.largeData, seq(16, 31)))
			return n == want, fmt.Sprintf("%d of %d", n, want)
		})
	})

	t.Run("losing slots 0-7 hides them at once and compacts without an Add storm", func(t *testing.T) {
		kept := fx.objects(fx.largeData, seq(8, 15))
		before := rec.snapshot()
		c.RemoveSlots(seq(0, 7))
		gone := fx.largeData[3][0]
		if err := reader.Get(ctx, gone, &datav1alpha1.LargeData{}); !apierrors.IsNotFound(err) {
			t.Errorf("Get %s of removed slot 3 = %v, want NotFound", gone, err)
		}
		checkList(t, ctx, reader, fx.largeData, seq(8, 31))
		if got, want := c.Counts()[largeDataKind], fx.count(fx.largeData, seq(8, 31)); got != want {
			t.Errorf("Counts = %d LargeData, want %d", got, want)
		}

		begin := time.Now()
		oldSel := selector(seq(0, 15))
		testenv.Eventually(t, wait, "the group of 0-15 is compacted and stopped", func() (bool, string) {
			for _, g := range c.Groups() {
				if slices.Contains(g.Slots, 0) {
					return false, fmt.Sprintf("a group still serves slots %v", g.Slots)
				}
			}
			ld, cm := wire.openOf("largedata "+oldSel), wire.openOf("configmaps "+oldSel)
			return ld == 0 && cm == 0, fmt.Sprintf("the old group still has %d LargeData and %d ConfigMap watches open", ld, cm)
		})
		t.Logf("compacted %v after RemoveSlots (CompactAfter 1s)", time.Since(begin).Round(time.Millisecond))
		var replacement *shardcache.GroupStatus
		for _, g := range c.Groups() {
			if slices.Equal(g.Slots, seq(8, 15)) {
				replacement = &g
			}
		}
		switch {
		case replacement == nil:
			t.Fatalf("no group for slots 8-15: %+v", c.Groups())
		case replacement.Objects[largeDataKind] != len(kept):
			t.Errorf("the replacement holds %d LargeData, want the %d of slots 8-15", replacement.Objects[largeDataKind], len(kept))
		case replacement.Objects[configMapKind] != fx.count(fx.children, seq(8, 15)):
			t.Errorf("the replacement holds %d ConfigMaps, want %d", replacement.Objects[configMapKind], fx.count(fx.children, seq(8, 15)))
		}
		again := rec.since(before, kept)
		if again > 5 {
			t.Errorf("compaction caused %d reconciles of the %d unchanged objects of slots 8-15", again, len(kept))
		}
		// The replacement takes its objects from the store of the group it
		// replaces and watches from there: the API server sends it nothing
		// of what did not change.
		newSel := selector(seq(8, 15))
		if ld, cm := wire.objectsOf("largedata "+newSel), wire.objectsOf("configmaps "+newSel); ld != 0 || cm != 0 {
			t.Errorf("the replacement was sent %d LargeData and %d ConfigMaps, want none", ld, cm)
		}
		t.Logf("compaction: %d of the %d unchanged objects reconciled again", again, len(kept))
		checkList(t, ctx, reader, fx.largeData, seq(8, 31))
	})

	t.Run("new objects are reconciled only in served slots", func(t *testing.T) {
		unserved := createLargeData(t, ctx, 40, "late")
		removed := createLargeData(t, ctx, 3, "late")
		served := createLargeData(t, ctx, 20, "late")
		testenv.Eventually(t, wait, "the new object of served slot 20 is reconciled", func() (bool, string) {
			n := rec.reconciled([]types.NamespacedName{served})
			return n == 1, fmt.Sprintf("reconciled %d times", n)
		})
		never(t, "a new object of an unserved slot was reconciled", func() bool {
			return rec.reconciled([]types.NamespacedName{unserved, removed}) != 0
		})
	})

	t.Run("children follow their label", func(t *testing.T) {
		var cms corev1.ConfigMapList
		if err := reader.List(ctx, &cms); err != nil {
			t.Fatal(err)
		}
		var got []types.NamespacedName
		for _, cm := range cms.Items {
			got = append(got, client.ObjectKeyFromObject(&cm))
		}
		if want := fx.objects(fx.children, seq(8, 31)); !sameKeys(got, want) {
			t.Errorf("List of ConfigMaps = %d, want the %d children of slots 8-31 (and no unlabeled ConfigMap)", len(got), len(want))
		}
		servedChild, unservedChild := fx.children[20][0], fx.children[50][0]
		before := rec.snapshot()
		for _, key := range []types.NamespacedName{unservedChild, servedChild} {
			cm := &corev1.ConfigMap{}
			if err := env.Client.Get(ctx, key, cm); err != nil {
				t.Fatal(err)
			}
			cm.Data = map[string]string{"touched": "yes"}
			if err := env.Client.Update(ctx, cm); err != nil {
				t.Fatal(err)
			}
		}
		// A child is named after its owner.
		testenv.Eventually(t, wait, "the owner of the served child is reconciled", func() (bool, string) {
			n := rec.since(before, []types.NamespacedName{servedChild})
			return n == 1, fmt.Sprintf("reconciled %d times", n)
		})
		never(t, "the owner of an unserved child was reconciled", func() bool {
			return rec.since(before, []types.NamespacedName{unservedChild}) != 0
		})
	})

	t.Run("metadata and unstructured lists of sharded kinds", func(t *testing.T) {
		want := 0
		for _, key := range fx.objects(fx.largeData, seq(8, 31)) {
			if key.Namespace == namespaces[1] {
				want++
			}
		}
		meta := &metav1.PartialObjectMetadataList{}
		meta.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
		if err := c.List(ctx, meta, client.InNamespace(namespaces[1])); err != nil {
			t.Fatal(err)
		}
		if len(meta.Items) != want {
			t.Errorf("metadata List = %d items, want %d", len(meta.Items), want)
		}
		u := &unstructured.UnstructuredList{}
		u.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
		if err := c.List(ctx, u, client.InNamespace(namespaces[1])); err != nil {
			t.Fatal(err)
		}
		if len(u.Items) != want {
			t.Errorf("unstructured List = %d items, want %d", len(u.Items), want)
		}
	})
}

// fixture is what the test created, by slot.
type fixture struct {
	largeData map[int][]types.NamespacedName
	children  map[int][]types.NamespacedName
}

func (f *fixture) objects(of map[int][]types.NamespacedName, slots []int) []types.NamespacedName {
	var out []types.NamespacedName
	for _, s := range slots {
		out = append(out, of[s]...)
	}
	return out
}

func (f *fixture) count(of map[int][]types.NamespacedName, slots []int) int {
	return len(f.objects(of, slots))
}

// createObjects creates perNamespace LargeData in each namespace, labelled
// with their slot as the webhook would, and a child ConfigMap for every
// tenth, labelled with its owner's slot.
func createObjects(t *testing.T, ctx context.Context) *fixture {
	t.Helper()
	fx := &fixture{largeData: map[int][]types.NamespacedName{}, children: map[int][]types.NamespacedName{}}
	for _, ns := range namespaces {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	type job struct {
		ns string
		i  int
	}
	jobs := make(chan job)
	errs := make(chan error, 8)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				name := fmt.Sprintf("ld-%04d", j.i)
				slot := ring.Slot(j.ns, name, slots)
				ld := &datav1alpha1.LargeData{
					ObjectMeta: metav1.ObjectMeta{Namespace: j.ns, Name: name, Labels: slotLabel(slot)},
					Spec:       datav1alpha1.LargeDataSpec{Items: 1},
				}
				if err := env.Client.Create(ctx, ld); err != nil {
					errs <- err
					return
				}
				key := client.ObjectKeyFromObject(ld)
				child := j.i%childEvery == 0
				if child {
					cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: j.ns, Name: name, Labels: slotLabel(slot)}}
					if err := controllerutil.SetControllerReference(ld, cm, env.Scheme); err != nil {
						errs <- err
						return
					}
					if err := env.Client.Create(ctx, cm); err != nil {
						errs <- err
						return
					}
				}
				mu.Lock()
				fx.largeData[slot] = append(fx.largeData[slot], key)
				if child {
					fx.children[slot] = append(fx.children[slot], key)
				}
				mu.Unlock()
			}
		})
	}
	go func() {
		defer close(jobs)
		for _, ns := range namespaces {
			for i := range perNamespace {
				select {
				case jobs <- job{ns, i}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("creating objects: %v", err)
	default:
	}
	for _, s := range []int{20, 50} {
		if len(fx.children[s]) == 0 {
			t.Fatalf("no child ConfigMap in slot %d; the test needs one", s)
		}
	}
	return fx
}

// createLargeData creates a LargeData in slot, with a name found by trying.
func createLargeData(t *testing.T, ctx context.Context, slot int, prefix string) types.NamespacedName {
	t.Helper()
	ns := namespaces[0]
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if ring.Slot(ns, name, slots) != slot {
			continue
		}
		ld := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: slotLabel(slot)},
			Spec:       datav1alpha1.LargeDataSpec{Items: 1},
		}
		if err := env.Client.Create(ctx, ld); err != nil {
			t.Fatal(err)
		}
		return client.ObjectKeyFromObject(ld)
	}
}

func slotLabel(slot int) map[string]string {
	return map[string]string{shardingv1alpha1.LabelSlot: strconv.Itoa(slot)}
}

// checkList checks that a List of LargeData returns exactly the objects of
// slots.
func checkList(t *testing.T, ctx context.Context, reader client.Reader, of map[int][]types.NamespacedName, slots []int) {
	t.Helper()
	list := &datav1alpha1.LargeDataList{}
	if err := reader.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	var got, want []types.NamespacedName
	for _, ld := range list.Items {
		got = append(got, client.ObjectKeyFromObject(&ld))
	}
	for _, s := range slots {
		want = append(want, of[s]...)
	}
	if !sameKeys(got, want) {
		t.Errorf("List = %d LargeData, want exactly the %d of slots %s", len(got), len(want), ring.FormatRanges(slots))
	}
}

func sameKeys(a, b []types.NamespacedName) bool {
	cmp := func(x, y types.NamespacedName) int {
		if x.Namespace != y.Namespace {
			return strings.Compare(x.Namespace, y.Namespace)
		}
		return strings.Compare(x.Name, y.Name)
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// selector is the label selector a slot group sends for slots.
func selector(slots []int) string {
	values := make([]string, len(slots))
	for i, s := range slots {
		values[i] = strconv.Itoa(s)
	}
	req, err := labels.NewRequirement(shardingv1alpha1.LabelSlot, selection.In, values)
	if err != nil {
		panic(err)
	}
	return req.String()
}

func seq(lo, hi int) []int {
	var out []int
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

// reconciles counts the reconciles of each object.
type reconciles struct {
	mu sync.Mutex
	n  map[types.NamespacedName]int
}

func (r *reconciles) Reconcile(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[req.NamespacedName]++
	return reconcile.Result{}, nil
}

// reconciled counts the keys reconciled at least once.
func (r *reconciles) reconciled(keys []types.NamespacedName) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range keys {
		if r.n[k] > 0 {
			n++
		}
	}
	return n
}

func (r *reconciles) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.n {
		n += v
	}
	return n
}

func (r *reconciles) snapshot() map[types.NamespacedName]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[types.NamespacedName]int, len(r.n))
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

// since counts the reconciles of keys after the snapshot before.
func (r *reconciles) since(before map[types.NamespacedName]int, keys []types.NamespacedName) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range keys {
		n += r.n[k] - before[k]
	}
	return n
}

// wire counts, per resource and label selector, the objects that lists and
// watches bring from the API server, and the watches open now.
type wire struct {
	mu      sync.Mutex
	objects map[string]int
	open    map[string]int
}

func (w *wire) wrap(rt http.RoundTripper) http.RoundTripper {
	return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		q := req.URL.Query()
		sel := q.Get("labelSelector")
		if err != nil || req.Method != http.MethodGet || sel == "" || resp.StatusCode != http.StatusOK {
			return resp, err
		}
		key := path.Base(req.URL.Path) + " " + sel
		watching := q.Get("watch") == "true"
		if watching {
			w.add(w.open, key, 1)
		}
		// The client reads the body; a copy goes to a decoder that counts.
		return wirecount.Received(resp, watching, func(keys []string) { w.add(w.objects, key, len(keys)) }, func() {
			if watching {
				w.add(w.open, key, -1)
			}
		}), nil
	})
}

func (w *wire) add(m map[string]int, key string, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m[key] += n
}

func (w *wire) objectsOf(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.objects[key]
}

func (w *wire) openOf(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.open[key]
}

// wait bounds a wait for the cache and the controller on top of it.
const wait = 20 * time.Second

// never checks that cond stays false for a second, long enough for an
// event in flight to be reconciled.
func never(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatal(what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
