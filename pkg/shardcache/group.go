package shardcache

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// group is one controller-runtime cache whose sharded kinds select a fixed
// set of slots on the server.
type group struct {
	id    int
	slots []int // sorted; what its selector names; never changes
	cache cache.Cache

	stopped chan struct{} // closed when retired
	synced  chan struct{} // closed when its informers first synced

	// The fields below are guarded by Cache.mu.
	cancel    context.CancelFunc // stops its informers; nil until started
	informers map[kindKey]cache.Informer
	owned     int // slots s with owner[s] == this group
	// warm are the slots the group caches for a gain still to come
	// (Cache.Warm): no event of them is delivered and reads do not see
	// them until AddSlots adopts them or Cool gives them up.
	warm []int

	// A compaction replaces predecessor by successor. Until the successor
	// has synced the predecessor owns the slots and both deliver events;
	// the successor's Adds are checked against the predecessor's store so
	// that objects known already do not arrive a second time.
	predecessor, successor *group
	handedOver             bool // the successor owns the slots now
	compacting             bool // a compaction is scheduled or running
	retired                bool
}

// waitForSync waits until the group's informers have synced. It returns
// false if ctx ended or the group stopped first.
func (g *group) waitForSync(ctx context.Context) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-g.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	return g.cache.WaitForCacheSync(ctx) && !isClosed(g.stopped)
}

// newGroupLocked creates a group for slots with an informer for every kind
// asked for so far, with their handlers and indexes. It does not start it
// nor give it slots. With first, its informers take their first list from
// there (seed.go), which what names in logs.
func (c *Cache) newGroupLocked(ctx context.Context, slots []int, first firstList, what string) (*group, error) {
	opts, err := c.groupOptions(slots)
	if err != nil {
		return nil, err
	}
	if first != nil && c.seedable() {
		opts.NewInformer = c.seededInformer(first, what, opts.NewInformer)
	}
	gc, err := c.newCache(c.cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("creating the cache of a slot group: %w", err)
	}
	g := &group{
		id:        c.nextGroup,
		slots:     slots,
		cache:     gc,
		stopped:   make(chan struct{}),
		synced:    make(chan struct{}),
		informers: map[kindKey]cache.Informer{},
	}
	c.nextGroup++
	for _, k := range c.kinds {
		if err := c.addKindToGroupLocked(ctx, k, g); err != nil {
			for _, k := range c.kinds {
				for _, r := range k.handlers {
					delete(r.regs, g)
				}
			}
			return nil, err
		}
	}
	c.groups = append(c.groups, g)
	return g, nil
}

func (c *Cache) addKindToGroupLocked(ctx context.Context, k *kind, g *group) error {
	for _, f := range k.fields {
		if err := g.cache.IndexField(ctx, k.proto, f.field, f.extract); err != nil {
			return fmt.Errorf("indexing %s in slot group %d: %w", f.field, g.id, err)
		}
	}
	inf, err := g.cache.GetInformer(ctx, k.proto, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("creating the %s informer of slot group %d: %w", k.key.gvk, g.id, err)
	}
	if len(k.indexers) > 0 {
		if err := inf.AddIndexers(k.indexers); err != nil {
			return fmt.Errorf("adding indexers to slot group %d: %w", g.id, err)
		}
	}
	g.informers[k.key] = inf
	for _, r := range k.handlers {
		if err := r.addToLocked(c, g, inf); err != nil {
			return err
		}
	}
	return nil
}

// startLocked runs the group's cache under the cache's run context.
func (c *Cache) startLocked(g *group) {
	if c.stopping {
		return
	}
	ctx, cancel := context.WithCancel(c.runCtx)
	g.cancel = cancel
	log := c.loggerLocked().WithValues("group", g.id)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		if err := g.cache.Start(ctx); err != nil {
			log.Error(err, "Slot group stopped")
		}
	}()
	go func() {
		defer c.wg.Done()
		if g.cache.WaitForCacheSync(ctx) {
			close(g.synced)
			c.groupSynced()
		}
	}()
}

func (c *Cache) setOwnerLocked(s int, g *group) {
	if old := c.owner[s]; old != nil {
		old.owned--
	}
	c.owner[s] = g
	if g != nil {
		g.owned++
	}
}

// ownedLocked lists the slots g owns.
func (c *Cache) ownedLocked(g *group) []int {
	var out []int
	for _, s := range g.slots {
		if c.owner[s] == g {
			out = append(out, s)
		}
	}
	return out
}

// retireLocked stops g and forgets it, so that its objects can be freed.
// A compaction partner that is left with nothing to do goes too.
func (c *Cache) retireLocked(g *group) {
	if g.retired {
		return
	}
	g.retired = true
	close(g.stopped)
	if g.cancel != nil {
		// controller-runtime's cache stops every informer when its context
		// ends; dropping the last reference frees the stores.
		g.cancel()
	}
	for _, s := range g.slots {
		if c.owner[s] == g {
			c.setOwnerLocked(s, nil)
		}
	}
	for i, other := range c.groups {
		if other == g {
			c.groups = append(c.groups[:i], c.groups[i+1:]...)
			break
		}
	}
	for _, k := range c.kinds {
		for _, r := range k.handlers {
			delete(r.regs, g)
		}
	}
	g.informers = nil
	c.loggerLocked().V(1).Info("Stopped slot group", "group", g.id, "slots", formatSlots(g.slots))

	if s := g.successor; s != nil {
		g.successor, s.predecessor = nil, nil
		if s.owned == 0 {
			c.retireLocked(s) // it was to take over slots that are gone
		} else {
			c.reviewLocked(s)
		}
	}
	if p := g.predecessor; p != nil {
		g.predecessor, p.successor = nil, nil
		p.compacting = false
		if p.owned == 0 {
			c.retireLocked(p)
		} else {
			c.reviewLocked(p) // its compaction failed; try again later
		}
	}
}
