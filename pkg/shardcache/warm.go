package shardcache

import (
	"context"
	"errors"
	"fmt"
	"slices"

	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Warm starts caching slots that are on their way to this member, before it
// serves them: one slot group lists and watches them, but delivers no event
// of them, and reads do not see them, until AddSlots adopts them. A member
// that warms the slots of a handover while their old owner still serves them
// starts serving them with a synced cache, however long the list takes.
//
// Slots already served or warming are skipped. Warm returns at once; Warmed
// tells which slots have synced. Before Start it does nothing.
func (c *Cache) Warm(ctx context.Context, slots []int) error {
	if err := c.checkSlots(slots); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runCtx == nil || c.stopping {
		return nil
	}
	var fresh []int
	for _, s := range slices.Compact(slices.Sorted(slices.Values(slots))) {
		if c.owner[s] == nil && c.warmGroupLocked(s) == nil {
			fresh = append(fresh, s)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	var first firstList
	if c.opts.Snapshots != nil {
		first = c.fromPeers(fresh)
	}
	g, err := c.newGroupLocked(ctx, fresh, first, "peers")
	if err != nil {
		return fmt.Errorf("warming slots %s: %w", formatSlots(fresh), err)
	}
	g.warm = slices.Clone(fresh) // shrinks in place; g.slots must not
	c.startLocked(g)
	c.loggerLocked().V(1).Info("Warming slots", "slots", formatSlots(fresh), "group", g.id)
	return nil
}

// Warmed returns those of slots that a warming group has synced: AddSlots
// serves them without listing them.
func (c *Cache) Warmed(slots []int) []int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []int
	for _, s := range slots {
		if g := c.warmGroupLocked(s); g != nil && isClosed(g.synced) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Cool gives up warming slots that will not come after all (their move was
// cancelled). A group left with nothing to warm and nothing served stops.
func (c *Cache) Cool(slots []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	affected := map[*group]bool{}
	for _, s := range slots {
		if s < 0 || s >= c.opts.Slots {
			continue
		}
		if g := c.warmGroupLocked(s); g != nil {
			g.warm = slices.DeleteFunc(g.warm, func(w int) bool { return w == s })
			affected[g] = true
		}
	}
	for g := range affected {
		if len(g.warm) == 0 {
			c.reviewLocked(g)
		}
	}
}

// warmGroupLocked returns the group warming slot s, or nil.
func (c *Cache) warmGroupLocked(s int) *group {
	for _, g := range c.groups {
		if _, found := slices.BinarySearch(g.warm, s); found && !g.retired {
			return g
		}
	}
	return nil
}

// adopt serves the warming slots of each group: once the group has synced
// it owns them, and every handler receives their objects as Adds. Slots
// that stopped warming meanwhile (their group stopped, or they were cooled)
// are cached the ordinary way.
func (c *Cache) adopt(ctx context.Context, warm map[*group][]int) error {
	var errs []error
	var cold []int
	for g, slots := range warm {
		if !g.waitForSync(ctx) {
			if ctx.Err() != nil {
				errs = append(errs, fmt.Errorf("waiting for the warm slots %s to sync: %w", formatSlots(slots), ctx.Err()))
				continue
			}
			cold = append(cold, slots...) // the group stopped
			continue
		}
		c.mu.Lock()
		var adopted []int
		for _, s := range slots {
			if _, found := slices.BinarySearch(g.warm, s); found && c.owner[s] == nil && !g.retired {
				c.setOwnerLocked(s, g)
				adopted = append(adopted, s)
			} else if c.owner[s] == nil {
				cold = append(cold, s)
			}
		}
		g.warm = slices.DeleteFunc(g.warm, func(s int) bool { _, found := slices.BinarySearch(adopted, s); return found })
		deliveries := c.adoptedLocked(g, adopted)
		if len(g.warm) == 0 {
			c.reviewLocked(g) // it may serve only some of its slots
		}
		c.mu.Unlock()
		if len(adopted) > 0 {
			logf.FromContext(ctx).V(1).Info("Serving warm slots", "slots", formatSlots(adopted), "group", g.id)
		}
		c.deliverAdopted(g, deliveries)
	}
	if len(cold) > 0 {
		errs = append(errs, c.AddSlots(ctx, cold))
	}
	return errors.Join(errs...)
}

// delivery is the objects of adopted slots that one handler is to receive.
type delivery struct {
	r       *registration
	objects []any
}

// adoptedLocked collects, for every handler of every sharded kind, the
// objects of g's store in the adopted slots. They are delivered after the
// lock is released: events of those slots that g's informers deliver from
// the moment of adoption on go to the handlers too, so a handler may see an
// object's Update just before its Add, or an object that was just created
// twice; handlers that enqueue, as controller-runtime's do, do not mind.
func (c *Cache) adoptedLocked(g *group, adopted []int) []delivery {
	if len(adopted) == 0 {
		return nil
	}
	var out []delivery
	for _, k := range c.kinds {
		inf := g.informers[k.key]
		if inf == nil {
			continue
		}
		var objects []any
		for _, obj := range storeOf(inf) {
			if s, ok := c.slotOf(k.key.gvk, obj); ok {
				if _, found := slices.BinarySearch(adopted, s); found {
					objects = append(objects, obj)
				}
			}
		}
		if len(objects) == 0 {
			continue
		}
		for _, r := range k.handlers {
			if r.regs[g] != nil {
				out = append(out, delivery{r: r, objects: objects})
			}
		}
	}
	return out
}
