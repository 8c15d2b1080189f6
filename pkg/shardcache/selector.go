package shardcache

import (
	"context"
	"fmt"
	"sync"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// newInformerFunc is the type of cache.Options.NewInformer.
type newInformerFunc = func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer

// shardSelectorInformer returns a cache.Options.NewInformer for the group of
// slots: the informers of the kinds selected by uid list and watch with the
// slots' shardSelector, and keep only objects whose uid is in those slots.
//
// The check costs one hash per object received. It is what makes the cache
// correct on an API server that ignores the selector (the feature gate off,
// or a server older than 1.36): the informer then receives every object, and
// without the check it would hold them all while the member believed itself
// sharded. It is also how the cache finds out: a custom resource's list
// carries no shardInfo even when the selector was applied, so only an object
// outside the ranges proves that it was not.
func (c *Cache) shardSelectorInformer(slots []int, next newInformerFunc) newInformerFunc {
	if next == nil {
		next = toolscache.NewSharedIndexInformer
	}
	selector := ring.ShardSelector(slots, c.opts.Slots)
	inGroup := make(map[int]bool, len(slots))
	for _, s := range slots {
		inGroup[s] = true
	}
	return func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
		gvk, err := apiutil.GVKForObject(obj, c.base.Scheme)
		if err != nil || !c.byUID[gvk] || selector == "" {
			return next(lw, obj, resync, indexers)
		}
		f := &uidFilter{c: c, gvk: gvk, inGroup: inGroup}
		inner := toolscache.ToListerWatcherWithContext(lw)
		return next(&toolscache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.ShardSelector = selector
				list, err := inner.ListWithContext(ctx, opts)
				if err != nil {
					return nil, err
				}
				return list, f.filterList(list)
			},
			WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.ShardSelector = selector
				w, err := inner.WatchWithContext(ctx, opts)
				if err != nil {
					return nil, err
				}
				return watch.Filter(w, f.keepEvent), nil
			},
		}, obj, resync, indexers)
	}
}

// uidFilter keeps the objects of one group's slots.
type uidFilter struct {
	c       *Cache
	gvk     schema.GroupVersionKind
	inGroup map[int]bool
}

func (f *uidFilter) keeps(obj runtime.Object) bool {
	s, ok := f.c.slotOf(f.gvk, obj)
	return ok && f.inGroup[s]
}

// filterList drops the items outside the group's slots from list.
func (f *uidFilter) filterList(list runtime.Object) error {
	items, err := apimeta.ExtractList(list)
	if err != nil {
		return fmt.Errorf("reading a %s list: %w", f.gvk.Kind, err)
	}
	kept := items[:0]
	for _, item := range items {
		if f.keeps(item) {
			kept = append(kept, item)
		}
	}
	if len(kept) == len(items) {
		return nil
	}
	f.c.selectorIgnored(f.gvk, len(items)-len(kept), len(items))
	return apimeta.SetList(list, kept)
}

func (f *uidFilter) keepEvent(ev watch.Event) (watch.Event, bool) {
	switch ev.Type {
	case watch.Added, watch.Modified, watch.Deleted:
		if !f.keeps(ev.Object) {
			f.c.selectorIgnored(f.gvk, 1, 1)
			return ev, false
		}
	}
	return ev, true
}

// selectorState records what the cache has learnt about the API server's
// handling of shardSelector.
type selectorState struct {
	mu      sync.Mutex
	applied bool // a group synced before anything proved otherwise
	ignored bool // an object outside the requested ranges arrived
	notify  func(applied bool)
}

// OnShardSelector sets fn to be told whether the API server applies the
// shardSelector of the kinds in Options.ShardSelectorObjects: false, once and
// for good, when a list or watch returns an object outside the requested
// ranges; true when a slot group has synced before any such object arrived.
// What is known already is told at once. fn runs at most once with each
// value, true first if at all; it must not block.
func (c *Cache) OnShardSelector(fn func(applied bool)) {
	c.selector.mu.Lock()
	defer c.selector.mu.Unlock()
	c.selector.notify = fn
	if c.selector.applied {
		fn(true)
	}
	if c.selector.ignored {
		fn(false)
	}
}

// selectorIgnored records that the API server sent dropped of got objects
// outside the requested ranges.
func (c *Cache) selectorIgnored(gvk schema.GroupVersionKind, dropped, got int) {
	c.mu.RLock()
	log := c.loggerLocked()
	c.mu.RUnlock()
	// The callback runs under the lock, so that a report of true cannot
	// overtake this one.
	c.selector.mu.Lock()
	defer c.selector.mu.Unlock()
	if c.selector.ignored {
		return
	}
	c.selector.ignored = true
	// Who is told (sharding.New) says it at V(0), with the ring and member.
	log.V(1).Info("API server ignored the shard selector; filtering the objects received",
		"kind", gvk.Kind, "outsideRanges", dropped, "received", got)
	if c.selector.notify != nil {
		c.selector.notify(false)
	}
}

// groupSynced records that a group synced; unless an object outside its
// ranges arrived first, that is the evidence that the selector is applied.
func (c *Cache) groupSynced() {
	if len(c.byUID) == 0 {
		return
	}
	c.selector.mu.Lock()
	defer c.selector.mu.Unlock()
	if c.selector.ignored || c.selector.applied {
		return
	}
	c.selector.applied = true
	if c.selector.notify != nil {
		c.selector.notify(true)
	}
}

// ShardSelectorIgnored reports whether the API server was found to ignore
// the shardSelector of the kinds selected by uid.
func (c *Cache) ShardSelectorIgnored() bool {
	c.selector.mu.Lock()
	defer c.selector.mu.Unlock()
	return c.selector.ignored
}
