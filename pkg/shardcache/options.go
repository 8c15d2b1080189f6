package shardcache

import (
	"errors"
	"fmt"
	"math"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// DefaultCompactAfter is how long a slot group that lost some of its slots
// keeps their objects before it is replaced by a group for the rest: long
// enough that a burst of moves (a scale event hands over many slots in a
// few steps) costs one relist per group, not one per step.
const DefaultCompactAfter = 30 * time.Second

// Options configure a Cache.
type Options struct {
	// ShardedObjects are the kinds selected by the slot label: the sharded
	// kinds and their child kinds, for example an operator's &Widget{} and
	// &corev1.ConfigMap{}. An object of one of these kinds without a valid
	// slot label is invisible through the cache. Required unless
	// ShardSelectorObjects names a kind.
	ShardedObjects []client.Object

	// ShardSelectorObjects are kinds selected by uid instead of by slot
	// label, with the API server's shardSelector (KEP-5866): in selectorMode
	// ShardSelector, the ring's sharded kinds (their children stay in
	// ShardedObjects). An object's slot is ring.UIDSlot of its uid; its
	// labels do not matter. When the API server ignores the selector (the
	// ShardedListAndWatch feature gate is off, or the server is older), the
	// cache filters what it receives by itself: it holds the same objects,
	// but receives and decodes all of them (see Cache.OnShardSelector).
	// Optional.
	ShardSelectorObjects []client.Object

	// Slots is the ring's number of slots (spec.slots); slot labels outside
	// [0, Slots) are never served. Default ring.DefaultSlots (1024).
	Slots int

	// Transform is applied to objects of the sharded kinds before they enter
	// the cache, after managedFields are stripped and after the manager's
	// DefaultTransform (or the kind's ByObject transform). Optional.
	Transform toolscache.TransformFunc

	// CompactAfter is how long a slot group that lost some, but not all, of
	// its slots keeps them in memory before it is replaced by a group for
	// the slots it still serves. A group that lost all its slots stops at
	// once. Default DefaultCompactAfter (30s).
	CompactAfter time.Duration

	// RelistOnCompaction makes a compaction's replacement list its slots
	// from the API server. By default it takes them from the store of the
	// group it replaces and only watches the API server (see seed.go); that
	// is not possible when the sharded kinds are cached in some namespaces
	// only, and the replacement then lists as with this set.
	RelistOnCompaction bool

	// Snapshots, when set, gives the groups that Warm starts their first
	// list: the slots' objects from the members that serve them now, which
	// keeps a newcomer's join from costing a list of its slots from the API
	// server (without the watch cache, a scan of every object of the kind in
	// etcd). Optional; ignored when the sharded kinds are cached in some
	// namespaces only.
	Snapshots SnapshotSource

	// HandoverRate, when positive, is how many objects per second of the
	// slots this member adopts from Warm (a handover from a member that
	// served them until now) are delivered to the handlers as Adds; the
	// rest wait in a queue (Cache.HandoverPending). Their changes are
	// delivered at once all the same, and so are the objects of slots
	// gained without warming. 0 delivers them all at once. See handover.go.
	HandoverRate float64

	// Clock times compaction and HandoverRate. Default: the real clock.
	Clock clock.Clock
}

func (o Options) withDefaults() Options {
	if o.Slots == 0 {
		o.Slots = ring.DefaultSlots
	}
	if o.CompactAfter == 0 {
		o.CompactAfter = DefaultCompactAfter
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

func (o Options) validate() error {
	switch {
	case len(o.ShardedObjects) == 0 && len(o.ShardSelectorObjects) == 0:
		return errors.New("shardcache: Options.ShardedObjects and Options.ShardSelectorObjects name no kind")
	case o.Slots < 1:
		return errors.New("shardcache: Options.Slots must be at least 1")
	case o.CompactAfter < 0:
		return errors.New("shardcache: Options.CompactAfter must not be negative")
	case o.HandoverRate < 0 || math.IsNaN(o.HandoverRate) || math.IsInf(o.HandoverRate, 0):
		return fmt.Errorf("shardcache: Options.HandoverRate is %v; want a number of objects per second, or 0 for no limit", o.HandoverRate)
	}
	return nil
}
