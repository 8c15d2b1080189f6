package shardcache

import (
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// Counts returns how many objects of each sharded kind the cache serves:
// those of the served slots, summed over the groups (and over typed,
// unstructured and metadata informers of a kind, each a copy in memory).
// It walks every store, so call it when metrics are scraped, not per event.
func (c *Cache) Counts() map[schema.GroupVersionKind]int {
	counts := map[schema.GroupVersionKind]int{}
	for _, st := range c.snapshot() {
		for kk, inf := range st.informers {
			for _, obj := range storeOf(inf) {
				if s, ok := c.slotOf(kk.gvk, obj); ok && st.owner[s] == st.g {
					counts[kk.gvk]++
				}
			}
		}
	}
	return counts
}

// GroupStatus describes one slot group.
type GroupStatus struct {
	// ID tells groups apart; every new group gets the next number.
	ID int
	// Slots are the slots its server-side selector names.
	Slots []int
	// Served are the slots it answers reads and events for; the others were
	// removed and await compaction.
	Served []int
	// Synced is true once its informers have had their initial list.
	Synced bool
	// Objects counts the objects its informers hold per kind, of any slot:
	// the memory it takes, which compaction brings down to Served.
	Objects map[schema.GroupVersionKind]int
}

// Groups describes the running slot groups in the order they were created,
// for debugging and tests.
func (c *Cache) Groups() []GroupStatus {
	var out []GroupStatus
	for _, st := range c.snapshot() {
		gs := GroupStatus{
			ID:      st.g.id,
			Slots:   slices.Clone(st.g.slots),
			Synced:  isClosed(st.g.synced),
			Objects: map[schema.GroupVersionKind]int{},
		}
		for _, s := range st.g.slots {
			if st.owner[s] == st.g {
				gs.Served = append(gs.Served, s)
			}
		}
		for kk, inf := range st.informers {
			gs.Objects[kk.gvk] += len(storeOf(inf))
		}
		out = append(out, gs)
	}
	return out
}

type groupSnapshot struct {
	g         *group
	informers map[kindKey]cache.Informer
	owner     []*group
}

// snapshot copies what the walks of every store need, so that they do not
// hold the lock that event handlers read.
func (c *Cache) snapshot() []groupSnapshot {
	c.mu.RLock()
	defer c.mu.RUnlock()
	owner := slices.Clone(c.owner)
	out := make([]groupSnapshot, 0, len(c.groups))
	for _, g := range c.groups {
		out = append(out, groupSnapshot{g: g, informers: maps.Clone(g.informers), owner: owner})
	}
	return out
}

func storeOf(inf cache.Informer) []any {
	if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
		return s.GetStore().List()
	}
	return nil
}
