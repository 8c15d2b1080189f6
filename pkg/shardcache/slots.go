package shardcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// handoverGrace is how long a compacted group keeps delivering events after
// its replacement has taken over and delivered its initial list. A
// notification still queued in the old group's listeners when it stops would
// be lost (client-go drops them), and the replacement suppressed its own Add
// for that object because the old group's store already held it. Handlers
// that only enqueue, as controller-runtime's do, drain in microseconds.
const handoverGrace = time.Second

// AddSlots starts serving slots: it starts one slot group for those of them
// not served yet, with an informer for every sharded kind asked for so far,
// and returns when they have synced. Their objects arrive as Add events.
// Slots that Warm cached beforehand are adopted instead: their group's
// objects are delivered as Adds at once, without listing them again.
// Before Start, it only records the group; Start starts it.
//
// If ctx ends first, the slots are not served and AddSlots can be called
// again.
func (c *Cache) AddSlots(ctx context.Context, slots []int) error {
	if err := c.checkSlots(slots); err != nil {
		return err
	}

	c.mu.Lock()
	var gained []int
	warm := map[*group][]int{}
	for _, s := range slices.Compact(slices.Sorted(slices.Values(slots))) {
		switch {
		case c.owner[s] != nil:
		case c.warmGroupLocked(s) != nil:
			g := c.warmGroupLocked(s)
			warm[g] = append(warm[g], s)
		default:
			gained = append(gained, s)
		}
	}
	if len(gained) == 0 {
		c.mu.Unlock()
		return c.adopt(ctx, warm)
	}
	g, err := c.newGroupLocked(ctx, gained, nil, "")
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("caching slots %s: %w", formatSlots(gained), err)
	}
	// The group owns its slots before it has synced, so that its initial
	// list arrives as events; reads of them wait for the sync.
	for _, s := range gained {
		c.setOwnerLocked(s, g)
	}
	started := c.runCtx != nil
	if started {
		c.startLocked(g)
	}
	c.mu.Unlock()

	log := logf.FromContext(ctx).WithValues("slots", formatSlots(gained), "group", g.id)
	if !started {
		log.V(1).Info("Recorded slots to cache on start")
		return nil
	}
	adopted := c.adopt(ctx, warm)
	select {
	case <-g.synced:
		log.V(1).Info("Caching slots")
		return adopted
	case <-g.stopped:
		return errors.Join(adopted, fmt.Errorf("slot group of %s stopped before it synced", formatSlots(gained)))
	case <-ctx.Done():
		c.mu.Lock()
		c.retireLocked(g)
		c.mu.Unlock()
		return errors.Join(adopted, fmt.Errorf("waiting for slots %s to sync: %w", formatSlots(gained), ctx.Err()))
	}
}

// checkSlots rejects slots outside the ring and maps every sharded kind: the
// first mapping of a kind may ask the API server, and creating a group's
// cache maps every sharded kind under the lock.
func (c *Cache) checkSlots(slots []int) error {
	for _, s := range slots {
		if s < 0 || s >= c.opts.Slots {
			return fmt.Errorf("shardcache: slot %d is not in [0, %d)", s, c.opts.Slots)
		}
	}
	for gvk := range c.sharded {
		if _, err := c.base.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("mapping %s to a resource: %w", gvk, err)
		}
	}
	return nil
}

// RemoveSlots stops serving slots at once: from now on Get does not find
// their objects, List omits them and no event of them is delivered. A group
// left without slots stops now; one left with some is compacted after
// Options.CompactAfter.
func (c *Cache) RemoveSlots(slots []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	affected := map[*group]bool{}
	var removed []int
	for _, s := range slots {
		if s < 0 || s >= c.opts.Slots || c.owner[s] == nil {
			continue
		}
		affected[c.owner[s]] = true
		removed = append(removed, s)
		c.setOwnerLocked(s, nil)
	}
	if len(removed) == 0 {
		return
	}
	c.loggerLocked().V(1).Info("Stopped serving slots", "slots", formatSlots(removed))
	for g := range affected {
		c.reviewLocked(g)
	}
}

// Served returns the served slots in order.
func (c *Cache) Served() []int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []int
	for s, g := range c.owner {
		if g != nil {
			out = append(out, s)
		}
	}
	return out
}

// reviewLocked stops g when it owns nothing and schedules its compaction
// when it owns only some of its slots. A group still warming slots for a
// gain waits until it has been adopted or given them up.
func (c *Cache) reviewLocked(g *group) {
	switch {
	case g.retired || g.handedOver:
		// A group that handed over is retired by its compaction.
	case len(g.warm) > 0:
	case g.owned == 0:
		c.retireLocked(g)
	case g.owned == len(g.slots) || g.compacting:
	case c.runCtx == nil:
		// Start replaces it before anything is cached.
	default:
		g.compacting = true
		go c.compact(c.runCtx, g)
	}
}

// replaceUnstartedLocked compacts a group that has not started: nothing is
// cached or delivered yet, so the replacement simply takes its place.
func (c *Cache) replaceUnstartedLocked(ctx context.Context, g *group) {
	live := c.ownedLocked(g)
	n, err := c.newGroupLocked(ctx, live, nil, "")
	if err != nil {
		c.loggerLocked().Error(err, "Cannot compact slot group; it keeps its removed slots", "group", g.id)
		return
	}
	for _, s := range live {
		c.setOwnerLocked(s, n)
	}
	c.retireLocked(g)
}

// compact replaces g, which lost some of its slots, by a group for the
// slots it still owns, so that the objects of the others are freed.
//
// The replacement's informers take their first list from g's store and
// watch the API server from there (seed.go); only where that is not possible
// do they list the slots again. Until it has synced, g owns them
// and answers reads; both deliver events, and an Add from the replacement
// for an object that g's store holds at the same resourceVersion is
// dropped (one at another resourceVersion arrives as an Update), so
// handlers see no burst of Adds for objects they know. Once the
// replacement has synced it owns the slots; g keeps delivering until the
// replacement's handlers have had its initial list and handoverGrace has
// passed, then stops.
func (c *Cache) compact(ctx context.Context, g *group) {
	log := logf.FromContext(ctx).WithName("shardcache").WithValues("group", g.id)
	if !c.sleep(ctx, g.stopped, c.opts.CompactAfter) {
		return
	}

	c.mu.Lock()
	if g.retired {
		c.mu.Unlock()
		return
	}
	live := c.ownedLocked(g)
	if len(live) == len(g.slots) || len(live) == 0 {
		g.compacting = false
		c.reviewLocked(g)
		c.mu.Unlock()
		return
	}
	var first firstList
	if !c.opts.RelistOnCompaction {
		first = c.fromGroup(g, live)
	}
	n, err := c.newGroupLocked(ctx, live, first, fmt.Sprintf("slot group %d", g.id))
	if err != nil {
		// Keep the flag: another attempt is not likelier to succeed soon,
		// and the objects of the lost slots are invisible all the same.
		c.mu.Unlock()
		log.Error(err, "Cannot compact slot group; it keeps its removed slots")
		return
	}
	g.successor, n.predecessor = n, g
	c.startLocked(n)
	c.mu.Unlock()
	log.V(1).Info("Compacting slot group", "slots", formatSlots(live), "replacement", n.id)

	select {
	case <-n.synced:
	case <-n.stopped:
		return // retired with g's slots, or by retireLocked(g)
	case <-ctx.Done():
		return
	}

	c.mu.Lock()
	if n.retired {
		c.mu.Unlock()
		return
	}
	for _, s := range n.slots {
		if c.owner[s] == g {
			c.setOwnerLocked(s, n)
		}
	}
	g.handedOver = true
	var delivered []toolscache.DoneChecker
	for _, k := range c.kinds {
		for _, r := range k.handlers {
			if hr := r.regs[n]; hr != nil {
				delivered = append(delivered, hr.HasSyncedChecker())
			}
		}
	}
	c.mu.Unlock()

	for _, d := range delivered {
		select {
		case <-d.Done():
		case <-n.stopped:
		case <-ctx.Done():
			return
		}
	}
	if !c.sleep(ctx, n.stopped, handoverGrace) {
		return
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if n.predecessor == g {
		n.predecessor, g.successor = nil, nil
	}
	c.retireLocked(g)
	c.reviewLocked(n) // it may have lost slots meanwhile
	log.V(1).Info("Compacted slot group", "replacement", n.id)
}

// sleep waits d on the cache's clock; false if ctx ended or stop closed
// first.
func (c *Cache) sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := c.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

func formatSlots(slots []int) string { return ring.FormatRanges(slots) }
