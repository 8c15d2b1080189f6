package shardcache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

var _ cache.Cache = (*Cache)(nil)

// Cache is a cache.Cache whose sharded kinds hold only the objects of the
// served slots. They live in slot groups: one controller-runtime cache per
// AddSlots call (or compaction), whose informers select exactly that call's
// slots on the server. Each served slot has one owner group, which answers
// reads and delivers events for it (while a group is being compacted, its
// replacement delivers too); a group that lost slots keeps their objects,
// invisible, until it is stopped or compacted. Other kinds are served by an
// ordinary cache.
type Cache struct {
	opts      Options
	cfg       *rest.Config
	base      cache.Options // with Scheme, Mapper and HTTPClient filled in
	sharded   map[schema.GroupVersionKind]bool
	byUID     map[schema.GroupVersionKind]bool           // selected by shardSelector; also in sharded
	byObject  map[schema.GroupVersionKind]cache.ByObject // the manager's settings for sharded kinds
	unsharded cache.Cache

	// newCache creates each group's cache; tests replace it to fake the API
	// server.
	newCache func(*rest.Config, cache.Options) (cache.Cache, error)

	started chan struct{} // closed by Start
	wg      sync.WaitGroup

	mu        sync.RWMutex
	runCtx    context.Context // Start's; nil before
	stopping  bool            // Start is waiting for the groups to stop
	owner     []*group        // by slot; nil: not served
	groups    []*group        // every group not retired
	kinds     map[kindKey]*kind
	nextGroup int

	selector selectorState // what the API server does with shardSelector

	pacer *pacer // delivers adopted objects at Options.HandoverRate; nil without one
}

// NewCacheFunc returns a cache.NewCacheFunc for ctrl.Options.NewCache.
func NewCacheFunc(opts Options) cache.NewCacheFunc {
	return func(cfg *rest.Config, base cache.Options) (cache.Cache, error) {
		return New(cfg, base, opts)
	}
}

// New returns a cache that serves no slot yet. base is what the manager
// passes to a NewCacheFunc; its settings apply to both unsharded kinds and
// slot groups, and managedFields are stripped from every object.
func New(cfg *rest.Config, base cache.Options, opts Options) (*Cache, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	base, err := withClients(cfg, base)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		opts:     opts,
		cfg:      cfg,
		base:     base,
		sharded:  make(map[schema.GroupVersionKind]bool, len(opts.ShardedObjects)),
		byUID:    map[schema.GroupVersionKind]bool{},
		byObject: map[schema.GroupVersionKind]cache.ByObject{},
		newCache: cache.New,
		started:  make(chan struct{}),
		owner:    make([]*group, opts.Slots),
		kinds:    map[kindKey]*kind{},
	}
	if opts.HandoverRate > 0 {
		c.pacer = newPacer(c, opts.HandoverRate)
	}
	for _, obj := range opts.ShardedObjects {
		gvk, err := apiutil.GVKForObject(obj, base.Scheme)
		if err != nil {
			return nil, fmt.Errorf("finding the kind of sharded object %T: %w", obj, err)
		}
		c.sharded[gvk] = true
	}
	for _, obj := range opts.ShardSelectorObjects {
		gvk, err := apiutil.GVKForObject(obj, base.Scheme)
		if err != nil {
			return nil, fmt.Errorf("finding the kind of shard-selector object %T: %w", obj, err)
		}
		if c.sharded[gvk] {
			return nil, fmt.Errorf("shardcache: %s is in both ShardedObjects and ShardSelectorObjects; a kind is selected one way", gvk.Kind)
		}
		c.sharded[gvk] = true
		c.byUID[gvk] = true
	}

	unsharded := base
	unsharded.ByObject = map[client.Object]cache.ByObject{}
	for obj, bo := range base.ByObject {
		gvk, err := apiutil.GVKForObject(obj, base.Scheme)
		if err != nil {
			return nil, fmt.Errorf("finding the kind of ByObject entry %T: %w", obj, err)
		}
		if c.sharded[gvk] {
			c.byObject[gvk] = bo
		} else {
			unsharded.ByObject[obj] = bo
		}
	}
	unsharded.DefaultTransform = chain(cache.TransformStripManagedFields(), base.DefaultTransform)
	if c.unsharded, err = cache.New(cfg, unsharded); err != nil {
		return nil, fmt.Errorf("creating the cache of unsharded kinds: %w", err)
	}
	return c, nil
}

// withClients fills in what every group would otherwise create for itself:
// one HTTP client and one REST mapper serve them all.
func withClients(cfg *rest.Config, base cache.Options) (cache.Options, error) {
	if base.Scheme == nil {
		base.Scheme = scheme.Scheme
	}
	if base.HTTPClient == nil {
		hc, err := rest.HTTPClientFor(cfg)
		if err != nil {
			return base, fmt.Errorf("creating an HTTP client: %w", err)
		}
		base.HTTPClient = hc
	}
	if base.Mapper == nil {
		m, err := apiutil.NewDynamicRESTMapper(cfg, base.HTTPClient)
		if err != nil {
			return base, fmt.Errorf("creating a REST mapper: %w", err)
		}
		base.Mapper = m
	}
	return base, nil
}

// groupOptions are the options of the cache of a group of slots: the
// manager's, with the slot requirement added to every sharded kind's label
// selector, and the slots' shardSelector set on every list and watch of the
// kinds selected by uid.
func (c *Cache) groupOptions(slots []int) (cache.Options, error) {
	values := make([]string, len(slots))
	for i, s := range slots {
		values[i] = strconv.Itoa(s)
	}
	req, err := labels.NewRequirement(shardingv1alpha1.LabelSlot, selection.In, values)
	if err != nil {
		return cache.Options{}, fmt.Errorf("building the slot selector: %w", err)
	}
	strip := cache.TransformStripManagedFields()
	opts := c.base
	opts.ByObject = make(map[client.Object]cache.ByObject, len(c.opts.ShardedObjects)+len(c.opts.ShardSelectorObjects))
	if len(c.byUID) > 0 {
		opts.NewInformer = c.shardSelectorInformer(slots, c.base.NewInformer)
	}
	for _, obj := range slices.Concat(c.opts.ShardedObjects, c.opts.ShardSelectorObjects) {
		gvk, _ := apiutil.GVKForObject(obj, c.base.Scheme) // New checked it
		byUID := c.byUID[gvk]
		bo := c.byObject[gvk]
		if bo.Label == nil {
			bo.Label = c.base.DefaultLabelSelector
		}
		if !byUID {
			bo.Label = withRequirement(bo.Label, *req)
		}
		if bo.Transform == nil {
			bo.Transform = c.base.DefaultTransform
		}
		bo.Transform = chain(strip, bo.Transform, c.opts.Transform)
		// A namespace's own selector or transform would replace the kind's,
		// so the slot requirement and the stripping go into each of them.
		namespaces := bo.Namespaces
		if namespaces == nil {
			namespaces = c.base.DefaultNamespaces
		}
		if namespaces != nil {
			namespaces = maps.Clone(namespaces)
			for ns, cfg := range namespaces {
				if cfg.LabelSelector != nil && !byUID {
					cfg.LabelSelector = withRequirement(cfg.LabelSelector, *req)
				}
				if cfg.Transform != nil {
					cfg.Transform = chain(strip, cfg.Transform, c.opts.Transform)
				}
				namespaces[ns] = cfg
			}
			bo.Namespaces = namespaces
		}
		opts.ByObject[obj] = bo
	}
	return opts, nil
}

func withRequirement(sel labels.Selector, req labels.Requirement) labels.Selector {
	if sel == nil {
		sel = labels.Everything()
	}
	return sel.Add(req)
}

// chain applies the non-nil transforms in order.
func chain(fns ...toolscache.TransformFunc) toolscache.TransformFunc {
	var set []toolscache.TransformFunc
	for _, fn := range fns {
		if fn != nil {
			set = append(set, fn)
		}
	}
	if len(set) == 1 {
		return set[0]
	}
	return func(obj any) (any, error) {
		var err error
		for _, fn := range set {
			if obj, err = fn(obj); err != nil {
				return nil, err
			}
		}
		return obj, nil
	}
}

// Start runs the cache of unsharded kinds and every slot group until ctx
// ends. Groups added before Start start now; groups added later start at
// once.
func (c *Cache) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.runCtx != nil {
		c.mu.Unlock()
		return errors.New("shardcache: the cache was already started")
	}
	c.runCtx = ctx
	for _, g := range slices.Clone(c.groups) {
		if g.owned < len(g.slots) {
			c.replaceUnstartedLocked(ctx, g) // slots were removed before Start
		}
	}
	for _, g := range c.groups {
		c.startLocked(g)
	}
	close(c.started)
	if c.pacer != nil {
		c.wg.Go(func() { c.pacer.run(ctx) })
	}
	c.mu.Unlock()

	err := c.unsharded.Start(ctx)
	c.mu.Lock()
	c.stopping = true // no group starts after this, so that wg.Wait is not raced by wg.Add
	c.mu.Unlock()
	c.wg.Wait()
	if err != nil {
		return fmt.Errorf("running the cache of unsharded kinds: %w", err)
	}
	return nil
}

// WaitForCacheSync waits for the unsharded cache and every slot group.
func (c *Cache) WaitForCacheSync(ctx context.Context) bool {
	select {
	case <-c.started:
	case <-ctx.Done():
		return false
	}
	if !c.unsharded.WaitForCacheSync(ctx) {
		return false
	}
	c.mu.RLock()
	groups := slices.Clone(c.groups)
	c.mu.RUnlock()
	for _, g := range groups {
		if !g.waitForSync(ctx) && ctx.Err() != nil {
			return false
		}
	}
	return true
}

func (c *Cache) isStarted() bool {
	select {
	case <-c.started:
		return true
	default:
		return false
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// loggerLocked is the logger for work that has no context of its own. The
// caller holds c.mu.
func (c *Cache) loggerLocked() logr.Logger {
	if c.runCtx != nil {
		return logf.FromContext(c.runCtx).WithName("shardcache")
	}
	return logf.Log.WithName("shardcache")
}
