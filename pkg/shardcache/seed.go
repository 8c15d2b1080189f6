package shardcache

import (
	"context"
	"errors"
	"fmt"
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

// A compaction's replacement does not list its slots from the API server:
// the group it replaces holds every object of them already, decoded and
// current. Its informers take their first list from that group's store and
// watch the API server from where the store stands. Without this, every
// member that gave slots away in a rebalance lists the slots it kept again
// CompactAfter later, all at the same moment: without the API server's watch
// cache, each of those lists is a scan of every object of the kind in etcd.
//
// Where the store stands: an informer applies the events of its watch in
// resourceVersion order, after a list that holds the objects as of one
// resourceVersion. So if the store holds an object at resourceVersion M,
// every change up to M is in the store, and a watch from M delivers every
// change after it. What it may deliver again is only what happened after M
// and is in the store already without a trace of M's successor: deletions
// (of objects the replacement does not hold, so handlers see a deletion of
// an object already gone, which controller-runtime's handlers take as an
// enqueue), and an object created and deleted again (an Add and a Delete of
// it). No change is lost, and no object goes back to an older state. The
// informer's resourceVersion, read beside the store, would say more but is
// not safe: the reflector sets it when an event enters the informer's queue,
// before the store has it.
//
// The list from the store is refused, and the replacement lists from the API
// server as before, when the old group's informer of the kind has not synced
// or is gone, when a resourceVersion is not a number (etcd's and kine's are),
// or when the store is empty. A watch from a resourceVersion the API server
// has compacted away fails with 410 Gone; the reflector then lists from the
// API server.

// seedable tells whether a compaction's replacement can take its first list
// from the group it replaces: when every sharded kind is cached across all
// namespaces. A cache restricted to namespaces has one informer per
// namespace, and their lists cannot tell the store which namespace they are
// for.
func (c *Cache) seedable() bool {
	if c.opts.RelistOnCompaction || c.base.DefaultNamespaces != nil {
		return false
	}
	for _, bo := range c.byObject {
		if bo.Namespaces != nil {
			return false
		}
	}
	return true
}

// seededInformer returns a cache.Options.NewInformer for the replacement of
// from that serves slots: each informer's first list returns the objects of
// those slots from the store of from's informer of the same kind, and
// everything else goes to lw (through next).
func (c *Cache) seededInformer(from *group, slots []int, next newInformerFunc) newInformerFunc {
	if next == nil {
		next = toolscache.NewSharedIndexInformer
	}
	keep := make(map[int]bool, len(slots))
	for _, s := range slots {
		keep[s] = true
	}
	return func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
		key, err := c.keyFor(obj)
		if err != nil {
			return next(lw, obj, resync, indexers)
		}
		s := &seedLW{
			c: c, from: from, key: key, keep: keep,
			inner:  toolscache.ToListerWatcherWithContext(lw),
			seeded: map[string]bool{},
		}
		return &seededInf{SharedIndexInformer: next(s, obj, resync, indexers), lw: s}
	}
}

// seedLW is the ListerWatcher of a replacement's informer: its first list
// comes from the old group's store, the rest from the API server.
type seedLW struct {
	c     *Cache
	from  *group
	key   kindKey
	keep  map[int]bool
	inner toolscache.ListerWatcherWithContext
	used  atomic.Bool

	mu     sync.Mutex
	seeded map[string]bool // namespace/name@resourceVersion of the objects listed from the store
}

var (
	_ toolscache.ListerWatcher            = (*seedLW)(nil)
	_ toolscache.ListerWatcherWithContext = (*seedLW)(nil)
)

func (l *seedLW) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	if opts.Continue != "" || l.used.Swap(true) {
		return l.inner.ListWithContext(ctx, opts)
	}
	list, n, err := l.snapshot()
	l.c.mu.RLock()
	log := l.c.loggerLocked().WithValues("kind", l.key.gvk.Kind, "group", l.from.id)
	l.c.mu.RUnlock()
	if err != nil {
		log.V(1).Info("Compaction lists from the API server", "reason", err.Error())
		return l.inner.ListWithContext(ctx, opts)
	}
	log.V(1).Info("Compaction lists from the old group's store", "objects", n, "resourceVersion", list.(*metav1.List).ResourceVersion)
	return list, nil
}

func (l *seedLW) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return l.inner.WatchWithContext(ctx, opts)
}

func (l *seedLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	return l.ListWithContext(context.Background(), opts)
}

func (l *seedLW) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return l.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported makes the reflector list: a streamed
// initial list would bypass the store.
func (l *seedLW) IsWatchListSemanticsUnSupported() bool { return true }

// snapshot returns the objects of the kept slots in the old group's store,
// deep copies, as a list at the newest resourceVersion the store holds, and
// their number.
func (l *seedLW) snapshot() (runtime.Object, int, error) {
	l.c.mu.RLock()
	inf, retired := l.from.informers[l.key], l.from.retired
	l.c.mu.RUnlock()
	switch {
	case retired || inf == nil:
		return nil, 0, errors.New("the old group stopped")
	case !inf.HasSynced():
		return nil, 0, errors.New("the old group has not synced")
	}
	var (
		newest uint64
		items  []runtime.Object
		keys   []string
	)
	for _, o := range storeOf(inf) {
		obj, ok := o.(runtime.Object)
		if !ok {
			return nil, 0, fmt.Errorf("the store holds a %T", o)
		}
		m, err := apimeta.Accessor(obj)
		if err != nil {
			return nil, 0, err
		}
		rv, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("resourceVersion %q of %s/%s is not a number", m.GetResourceVersion(), m.GetNamespace(), m.GetName())
		}
		newest = max(newest, rv)
		if s, ok := l.c.slotOf(l.key.gvk, obj); ok && l.keep[s] {
			items = append(items, obj.DeepCopyObject())
			keys = append(keys, seedKey(m.GetNamespace(), m.GetName(), m.GetResourceVersion()))
		}
	}
	if newest == 0 {
		return nil, 0, errors.New("the old group's store is empty")
	}
	list := &metav1.List{}
	if err := apimeta.SetList(list, items); err != nil {
		return nil, 0, err
	}
	list.ResourceVersion = strconv.FormatUint(newest, 10)
	l.mu.Lock()
	for _, k := range keys {
		l.seeded[k] = true
	}
	l.mu.Unlock()
	return list, len(items), nil
}

// fromStore tells whether obj is one the store's list returned, and forgets
// it: each arrives once.
func (l *seedLW) fromStore(obj any) bool {
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

// seededInf is a replacement's informer. Objects listed from the old group's
// store were transformed on their way into it; they skip the transform,
// which need not be idempotent (one may turn an object into another type).
type seededInf struct {
	toolscache.SharedIndexInformer
	lw *seedLW
}

func (i *seededInf) SetTransform(f toolscache.TransformFunc) error {
	if f == nil {
		return i.SharedIndexInformer.SetTransform(nil)
	}
	return i.SharedIndexInformer.SetTransform(func(obj any) (any, error) {
		if i.lw.fromStore(obj) {
			return obj, nil
		}
		return f(obj)
	})
}

var _ cache.Informer = (*seededInf)(nil)
