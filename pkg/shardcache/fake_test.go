package shardcache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	fcache "k8s.io/client-go/tools/cache/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testkind"
)

// fakeAPI stands in for the API server: one source of objects per kind,
// which each slot group's informers see through their label selector, as a
// real server would serve them.
type fakeAPI struct {
	scheme    *runtime.Scheme
	failLists atomic.Bool // lists fail, so that informers never sync
	// Watches from a resourceVersion below this fail with 410 Gone, as
	// from one that the API server has compacted away.
	compactedBelow atomic.Int64

	mu        sync.Mutex
	sources   map[schema.GroupVersionKind]*fcache.FakeControllerSource
	listed    map[string]int // objects returned by lists, per label selector
	lists     map[string]int // lists, per label selector
	informers map[string]toolscache.SharedIndexInformer
}

func newFakeAPI(scheme *runtime.Scheme) *fakeAPI {
	return &fakeAPI{
		scheme:    scheme,
		sources:   map[schema.GroupVersionKind]*fcache.FakeControllerSource{},
		listed:    map[string]int{},
		lists:     map[string]int{},
		informers: map[string]toolscache.SharedIndexInformer{},
	}
}

func (f *fakeAPI) source(gvk schema.GroupVersionKind) *fcache.FakeControllerSource {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sources[gvk]
	if s == nil {
		s = fcache.NewFakeControllerSource()
		f.sources[gvk] = s
	}
	return s
}

// newCache is Cache.newCache: controller-runtime's cache, whose informers
// list and watch the fake sources instead of an API server.
func (f *fakeAPI) newCache(cfg *rest.Config, opts cache.Options) (cache.Cache, error) {
	selectors := map[schema.GroupVersionKind]labels.Selector{}
	for obj, bo := range opts.ByObject {
		gvk, err := apiutil.GVKForObject(obj, f.scheme)
		if err != nil {
			return nil, err
		}
		selectors[gvk] = bo.Label
	}
	// The group's own NewInformer (a compaction's replacement has one) gets
	// the fake's ListerWatcher in place of the API server's.
	next := opts.NewInformer
	if next == nil {
		next = toolscache.NewSharedIndexInformer
	}
	opts.NewInformer = func(_ toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, idx toolscache.Indexers) toolscache.SharedIndexInformer {
		gvk, err := apiutil.GVKForObject(obj, f.scheme)
		if err != nil {
			panic(err)
		}
		sel := selectors[gvk]
		if sel == nil {
			sel = labels.Everything()
		}
		inf := next(&filteredLW{api: f, src: f.source(gvk), sel: sel}, obj, resync, idx)
		f.mu.Lock()
		f.informers[gvk.Kind+" "+sel.String()] = inf
		f.mu.Unlock()
		return inf
	}
	return cache.New(cfg, opts)
}

func (f *fakeAPI) listedFor(sel string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listed[sel]
}

func (f *fakeAPI) listsFor(sel string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[sel]
}

func (f *fakeAPI) informer(kind, sel string) toolscache.SharedIndexInformer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.informers[kind+" "+sel]
}

type filteredLW struct {
	api *fakeAPI
	src *fcache.FakeControllerSource
	sel labels.Selector
}

func (l *filteredLW) matches(obj runtime.Object) bool {
	m, err := apimeta.Accessor(obj)
	return err == nil && l.sel.Matches(labels.Set(m.GetLabels()))
}

func (l *filteredLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	if l.api.failLists.Load() {
		return nil, errors.New("the fake API server fails lists")
	}
	list, err := l.src.List(opts)
	if err != nil {
		return nil, err
	}
	items, err := apimeta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	kept := slices.DeleteFunc(items, func(o runtime.Object) bool { return !l.matches(o) })
	if err := apimeta.SetList(list, kept); err != nil {
		return nil, err
	}
	l.api.mu.Lock()
	l.api.listed[l.sel.String()] += len(kept)
	l.api.lists[l.sel.String()]++
	l.api.mu.Unlock()
	return list, nil
}

func (l *filteredLW) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	if rv, err := strconv.ParseInt(opts.ResourceVersion, 10, 64); err == nil && rv < l.api.compactedBelow.Load() {
		return nil, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", rv))
	}
	w, err := l.src.Watch(opts)
	if err != nil {
		return nil, err
	}
	// Each watcher gets its own copy, as each would decode its own from a
	// real server: informers transform what they receive in place.
	return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
		e.Object = e.Object.DeepCopyObject()
		return e, l.matches(e.Object)
	}), nil
}

// IsWatchListSemanticsUnSupported makes informers list, as the fake
// source cannot stream an initial list.
func (l *filteredLW) IsWatchListSemanticsUnSupported() bool { return true }

// testCache is a Cache on a fakeAPI, with P = 8 slots.
type testCache struct {
	*Cache
	api     *fakeAPI
	created map[int]int // Widgets per slot and namespace so far, for unique names
}

func newTestCache(t *testing.T, opts Options) *testCache {
	t.Helper()
	return newTestCacheOn(t, nil, opts)
}

// newTestCacheOn is a testCache on api, shared with other caches (members),
// or on a fakeAPI of its own when api is nil.
func newTestCacheOn(t *testing.T, api *fakeAPI, opts Options) *testCache {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := testkind.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := apimeta.NewDefaultRESTMapper(nil)
	mapper.Add(widgetKind, apimeta.RESTScopeNamespace)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("ConfigMap"), apimeta.RESTScopeNamespace)
	if opts.ShardedObjects == nil {
		opts.ShardedObjects = []client.Object{&testkind.Widget{}, &corev1.ConfigMap{}}
	}
	if opts.Slots == 0 {
		opts.Slots = 8
	}
	base := cache.Options{Scheme: scheme, Mapper: mapper, HTTPClient: &http.Client{}}
	c, err := New(&rest.Config{Host: "http://shardcache.invalid"}, base, opts)
	if err != nil {
		t.Fatal(err)
	}
	if api == nil {
		api = newFakeAPI(scheme)
	}
	c.newCache = api.newCache
	return &testCache{Cache: c, api: api, created: map[int]int{}}
}

// start runs the cache until the test ends.
func (tc *testCache) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := tc.Start(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	if !tc.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
}

// widgets adds n Widgets to slot in each of the namespaces a and b.
func (tc *testCache) widgets(slot, n int) []*testkind.Widget {
	var out []*testkind.Widget
	src := tc.api.source(widgetKind)
	first := tc.created[slot]
	tc.created[slot] += n
	for _, ns := range []string{"a", "b"} {
		for i := first; i < first+n; i++ {
			w := &testkind.Widget{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: ns, Name: fmt.Sprintf("w-%d-%d", slot, i),
					Labels: map[string]string{shardingv1alpha1.LabelSlot: strconv.Itoa(slot)},
					// Stripped on the way into the cache.
					ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "test"}},
				},
				Spec: testkind.WidgetSpec{Size: int64(i)},
			}
			src.Add(w.DeepCopy())
			out = append(out, w)
		}
	}
	return out
}

func (tc *testCache) modify(w *testkind.Widget) {
	w = w.DeepCopy()
	w.Spec.Size++
	tc.api.source(widgetKind).Modify(w)
}

// record adds a recorder to the cache's Widget informer.
func (tc *testCache) record(t *testing.T) *recorder {
	t.Helper()
	inf, err := tc.GetInformer(t.Context(), &testkind.Widget{})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if _, err := inf.AddEventHandler(rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// recorder is an event handler that remembers what it saw.
type recorder struct {
	mu                    sync.Mutex
	adds, updates, delete map[string]int
	initial               int               // adds marked as part of an initial list
	latest                map[string]string // resourceVersion of the last add or update, per object not deleted since
}

func newRecorder() *recorder {
	return &recorder{adds: map[string]int{}, updates: map[string]int{}, delete: map[string]int{}, latest: map[string]string{}}
}

func resourceVersionOf(obj any) string {
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return ""
	}
	return m.GetResourceVersion()
}

func keyOf(obj any) string {
	k, _ := toolscache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	return k
}

func (r *recorder) OnAdd(obj any, isInInitialList bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adds[keyOf(obj)]++
	r.latest[keyOf(obj)] = resourceVersionOf(obj)
	if isInInitialList {
		r.initial++
	}
}

func (r *recorder) OnUpdate(_, obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates[keyOf(obj)]++
	r.latest[keyOf(obj)] = resourceVersionOf(obj)
}

func (r *recorder) OnDelete(obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delete[keyOf(obj)]++
	delete(r.latest, keyOf(obj))
}

// counts returns the number of adds, updates and deletes seen.
func (r *recorder) counts() (adds, updates, deletes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.adds {
		adds += n
	}
	for _, n := range r.updates {
		updates += n
	}
	for _, n := range r.delete {
		deletes += n
	}
	return adds, updates, deletes
}

// String says what the recorder saw, for a test that waits for it.
func (r *recorder) String() string {
	a, u, d := r.counts()
	return fmt.Sprintf("%d adds, %d updates, %d deletes", a, u, d)
}

// wait bounds a wait for the cache: its informers run in this process.
const wait = 5 * time.Second

// never checks that cond stays false for a moment: long enough for an
// event in flight to arrive.
func never(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func seq(lo, hi int) []int {
	var out []int
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}
