package shardcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// A slot group's informers can take their first list from caches that hold
// the slots already, and watch the API server from where those caches stand:
//
//   - a compaction's replacement from the store of the group it replaces (a
//     member that gave slots away would otherwise list the slots it kept
//     again, CompactAfter later, at the same moment as every other member
//     that gave slots away: without the API server's watch cache, each such
//     list is a scan of every object of the kind in etcd);
//   - a warm group from the members that serve its slots now, when the cache
//     has a SnapshotSource (see snapshot.go).
//
// Where a store stands: an informer applies the events of its watch in
// resourceVersion order, after a list that holds the objects as of one
// resourceVersion. So if the store holds an object at resourceVersion M,
// every change up to M is in the store, and a watch from M delivers every
// change after it. The informer's resourceVersion, read beside the store,
// would say more but is not safe: the reflector sets it when an event enters
// the informer's queue, before the store has it.
//
// Objects of several stores come at several versions, one per slot. The
// watch starts from the oldest, and drops an event of slot s at or below the
// version of s's store: the list has it already, and applying it would take
// the object back to an older state. What the watch may still deliver again
// is what happened after a store's version and is in the store without a
// trace of that version: deletions (of objects the list does not hold, so
// handlers see a deletion of an object already gone, which
// controller-runtime's handlers take as an enqueue), and objects created and
// deleted again (an Add and a Delete). No change is lost, and no object
// goes back to an older state.
//
// When the first list cannot come from another cache (the old group's
// informer has not synced or is gone, a resourceVersion is not a number, as
// etcd's and kine's are, the store is empty, a peer does not answer), the
// informer lists from the API server. A watch from a resourceVersion the API
// server has compacted away fails with 410 Gone; the reflector then lists
// from the API server.

// firstList returns the first list of an informer of a kind: objects, and
// per slot the resourceVersion they are current to (every slot of the
// group, with or without objects).
type firstList func(ctx context.Context, key kindKey) (items []runtime.Object, versions map[int]uint64, err error)

// seedable tells whether a group's informers can take their first list from
// elsewhere: when every sharded kind is cached across all namespaces. A
// cache restricted to namespaces has one informer per namespace, and their
// lists cannot tell a store which namespace they are for.
func (c *Cache) seedable() bool {
	if c.base.DefaultNamespaces != nil {
		return false
	}
	for _, bo := range c.byObject {
		if bo.Namespaces != nil {
			return false
		}
	}
	return true
}

// fromGroup is the first list of a compaction's replacement for slots: the
// objects of those slots in the store of from's informer of the kind, at the
// store's newest resourceVersion. Both stores hold the same objects, not
// copies: an informer's objects are never modified (readers get copies,
// handlers must not write to what they are given, and the replacement skips
// the transform for them), so a member that compacts ~200,000 objects does
// not allocate them all again, and keeps no second copy of them until the
// old group stops.
func (c *Cache) fromGroup(from *group, slots []int) firstList {
	return func(_ context.Context, key kindKey) ([]runtime.Object, map[int]uint64, error) {
		c.mu.RLock()
		inf, retired := from.informers[key], from.retired
		c.mu.RUnlock()
		switch {
		case retired || inf == nil:
			return nil, nil, errors.New("the old group stopped")
		case !inf.HasSynced():
			return nil, nil, errors.New("the old group has not synced")
		}
		items, newest, err := c.storeSlots(key, inf, slots)
		if err != nil {
			return nil, nil, err
		}
		versions := make(map[int]uint64, len(slots))
		for _, s := range slots {
			versions[s] = newest
		}
		return items, versions, nil
	}
}

// storeSlots returns the objects of slots in inf's store (not copies) and
// the newest resourceVersion the store holds.
func (c *Cache) storeSlots(key kindKey, inf cache.Informer, slots []int) ([]runtime.Object, uint64, error) {
	var (
		newest uint64
		items  []runtime.Object
	)
	for _, o := range storeOf(inf) {
		obj, ok := o.(runtime.Object)
		if !ok {
			return nil, 0, fmt.Errorf("the store holds a %T", o)
		}
		rv, err := resourceVersion(obj)
		if err != nil {
			return nil, 0, err
		}
		newest = max(newest, rv)
		if s, ok := c.slotOf(key.gvk, obj); ok {
			if _, found := slices.BinarySearch(slots, s); found {
				items = append(items, obj)
			}
		}
	}
	if newest == 0 {
		return nil, 0, errEmptyStore
	}
	return items, newest, nil
}

// errEmptyStore: a store without objects tells no version.
var errEmptyStore = errors.New("the store is empty")

func resourceVersion(obj runtime.Object) (uint64, error) {
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return 0, err
	}
	rv, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceVersion %q of %s/%s is not a number", m.GetResourceVersion(), m.GetNamespace(), m.GetName())
	}
	return rv, nil
}

// seededInformer returns a cache.Options.NewInformer whose informers take
// their first list from first and everything else from lw (through next).
// what names first's source in logs.
func (c *Cache) seededInformer(first firstList, what string, next newInformerFunc) newInformerFunc {
	if next == nil {
		next = toolscache.NewSharedIndexInformer
	}
	return func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
		key, err := c.keyFor(obj)
		if err != nil {
			return next(lw, obj, resync, indexers)
		}
		s := &seedLW{
			c: c, key: key, first: first, what: what,
			inner:  toolscache.ToListerWatcherWithContext(lw),
			seeded: map[string]bool{},
		}
		return &seededInf{SharedIndexInformer: next(s, obj, resync, indexers), lw: s}
	}
}

// seedLW is the ListerWatcher of an informer whose first list comes from
// other caches; the rest comes from the API server.
type seedLW struct {
	c     *Cache
	key   kindKey
	first firstList
	what  string
	inner toolscache.ListerWatcherWithContext
	used  atomic.Bool

	mu       sync.Mutex
	seeded   map[string]bool // namespace/name@resourceVersion of the objects of the first list
	versions map[int]uint64  // per slot, the version of the first list; nil when they are all one
}

var (
	_ toolscache.ListerWatcher            = (*seedLW)(nil)
	_ toolscache.ListerWatcherWithContext = (*seedLW)(nil)
)

func (l *seedLW) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	if opts.Continue != "" || l.used.Swap(true) {
		return l.inner.ListWithContext(ctx, opts)
	}
	l.c.mu.RLock()
	log := l.c.loggerLocked().WithValues("kind", l.key.gvk.Kind, "from", l.what)
	l.c.mu.RUnlock()
	list, n, err := l.seed(ctx)
	if err != nil {
		log.V(1).Info("Listing from the API server instead", "reason", err.Error())
		return l.inner.ListWithContext(ctx, opts)
	}
	log.V(1).Info("Listed from other caches", "objects", n, "resourceVersion", list.ResourceVersion)
	return list, nil
}

// seed builds the first list, at the oldest of its versions.
func (l *seedLW) seed(ctx context.Context) (*metav1.List, int, error) {
	items, versions, err := l.first(ctx, l.key)
	if err != nil {
		return nil, 0, err
	}
	if len(versions) == 0 {
		return nil, 0, errors.New("no version")
	}
	oldest, newest := uint64(0), uint64(0)
	for _, v := range versions {
		if oldest == 0 || v < oldest {
			oldest = v
		}
		newest = max(newest, v)
	}
	if oldest == 0 {
		return nil, 0, errors.New("a version is 0")
	}
	keys := make([]string, 0, len(items))
	for _, obj := range items {
		m, err := apimeta.Accessor(obj)
		if err != nil {
			return nil, 0, err
		}
		keys = append(keys, seedKey(m.GetNamespace(), m.GetName(), m.GetResourceVersion()))
	}
	list := &metav1.List{}
	if err := apimeta.SetList(list, items); err != nil {
		return nil, 0, err
	}
	list.ResourceVersion = strconv.FormatUint(oldest, 10)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		l.seeded[k] = true
	}
	if newest > oldest {
		l.versions = versions
	}
	return list, len(items), nil
}

func (l *seedLW) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := l.inner.WatchWithContext(ctx, opts)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	versions := l.versions
	l.mu.Unlock()
	if versions == nil {
		return w, nil
	}
	// After a list from the API server, every event is newer than every
	// version: the filter drops nothing then.
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted:
		default:
			return ev, true
		}
		s, ok := l.c.slotOf(l.key.gvk, ev.Object)
		if !ok {
			return ev, true
		}
		v, ok := versions[s]
		if !ok {
			return ev, true
		}
		rv, err := resourceVersion(ev.Object)
		return ev, err != nil || rv > v
	}), nil
}

func (l *seedLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	return l.ListWithContext(context.Background(), opts)
}

func (l *seedLW) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return l.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported makes the reflector list: a streamed
// initial list would bypass the first list.
func (l *seedLW) IsWatchListSemanticsUnSupported() bool { return true }

// fromFirstList tells whether obj is one the first list returned, and
// forgets it: each arrives once.
func (l *seedLW) fromFirstList(obj any) bool {
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return false
	}
	k := seedKey(m.GetNamespace(), m.GetName(), m.GetResourceVersion())
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.seeded[k] {
		return false
	}
	delete(l.seeded, k)
	return true
}

func seedKey(namespace, name, rv string) string { return namespace + "/" + name + "@" + rv }

// seededInf is the informer of a seedLW. Objects of the first list were
// transformed on their way into the caches they come from; they skip the
// transform, which need not be idempotent (one may turn an object into
// another type).
type seededInf struct {
	toolscache.SharedIndexInformer
	lw *seedLW
}

func (i *seededInf) SetTransform(f toolscache.TransformFunc) error {
	if f == nil {
		return i.SharedIndexInformer.SetTransform(nil)
	}
	return i.SharedIndexInformer.SetTransform(func(obj any) (any, error) {
		if i.lw.fromFirstList(obj) {
			return obj, nil
		}
		return f(obj)
	})
}

var _ cache.Informer = (*seededInf)(nil)
