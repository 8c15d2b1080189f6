package shardcache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// Snapshot is the objects of some slots as a member's cache holds them.
type Snapshot struct {
	// Items are the objects of the slots, typed or unstructured.
	Items []runtime.Object
	// Versions are, per slot asked for, the resourceVersion its items are
	// current to: every change of the slot's objects up to it is in Items.
	Versions map[int]uint64
}

// SnapshotSource gives a warm group (Cache.Warm) its first list: the objects
// of the slots from the members that serve them now, which answer with
// Cache.Snapshot. Any error makes the group list from the API server.
type SnapshotSource interface {
	Snapshot(ctx context.Context, gvk schema.GroupVersionKind, slots []int) (*Snapshot, error)
}

// ErrNotHeld is returned by Snapshot for a slot the cache does not hold,
// or holds in a store that can tell no version (it holds no object at all).
var ErrNotHeld = errors.New("shardcache: slot not held")

// Snapshot returns the objects of slots of the kind gvk that the cache
// holds: every slot must be in a synced slot group that caches the kind's
// whole objects (typed or unstructured), served or still kept after it was
// given away, or the answer is ErrNotHeld; a partial answer would lose the
// objects left out until the next relist. The items are the cache's own:
// they must not be modified.
func (c *Cache) Snapshot(gvk schema.GroupVersionKind, slots []int) (*Snapshot, error) {
	if !c.sharded[gvk] {
		return nil, fmt.Errorf("shardcache: %s is not a sharded kind", gvk)
	}
	for _, s := range slots {
		if s < 0 || s >= c.opts.Slots {
			return nil, fmt.Errorf("shardcache: slot %d is not in [0, %d)", s, c.opts.Slots)
		}
	}
	slots = slices.Compact(slices.Sorted(slices.Values(slots)))

	type part struct {
		key   kindKey
		inf   cache.Informer // readable after its group retires
		slots []int
	}
	var parts []*part
	c.mu.RLock()
	byGroup := map[*group]*part{}
	for _, s := range slots {
		g, key := c.holderLocked(gvk, s)
		if g == nil {
			c.mu.RUnlock()
			return nil, fmt.Errorf("%w: slot %d of %s", ErrNotHeld, s, gvk.Kind)
		}
		p := byGroup[g]
		if p == nil {
			p = &part{key: key, inf: g.informers[key]}
			byGroup[g] = p
			parts = append(parts, p)
		}
		p.slots = append(p.slots, s)
	}
	c.mu.RUnlock()

	snap := &Snapshot{Versions: make(map[int]uint64, len(slots))}
	for _, p := range parts {
		if !p.inf.HasSynced() {
			return nil, fmt.Errorf("%w: %d of the slots have not synced their %s", ErrNotHeld, len(p.slots), gvk.Kind)
		}
		items, newest, err := c.storeSlots(p.key, p.inf, p.slots)
		if errors.Is(err, errEmptyStore) {
			return nil, fmt.Errorf("%w: the store of %d of the slots holds no %s to tell its version by", ErrNotHeld, len(p.slots), gvk.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot of %d slots of %s: %w", len(p.slots), gvk.Kind, err)
		}
		snap.Items = append(snap.Items, items...)
		for _, s := range p.slots {
			snap.Versions[s] = newest
		}
	}
	return snap, nil
}

// holderLocked returns a synced group whose selector covers slot s and that
// caches whole objects of gvk, the slot's owner if it does, and the key of
// that informer.
func (c *Cache) holderLocked(gvk schema.GroupVersionKind, s int) (*group, kindKey) {
	candidates := c.groups
	if o := c.owner[s]; o != nil {
		candidates = append([]*group{o}, c.groups...)
	}
	for _, g := range candidates {
		if g.retired || !isClosed(g.synced) {
			continue
		}
		if _, found := slices.BinarySearch(g.slots, s); !found {
			continue
		}
		for _, f := range []form{typed, unstructuredForm} {
			key := kindKey{gvk: gvk, form: f}
			if g.informers[key] != nil {
				return g, key
			}
		}
	}
	return nil, kindKey{}
}

// fromPeers is the first list of a warm group for slots: their objects from
// the cache's SnapshotSource, in the form of the informer asking.
func (c *Cache) fromPeers(slots []int) firstList {
	return func(ctx context.Context, key kindKey) ([]runtime.Object, map[int]uint64, error) {
		snap, err := c.opts.Snapshots.Snapshot(ctx, key.gvk, slots)
		if err != nil {
			return nil, nil, fmt.Errorf("asking the slots' members: %w", err)
		}
		for _, s := range slots {
			if snap.Versions[s] == 0 {
				return nil, nil, fmt.Errorf("the slots' members sent no version for slot %d", s)
			}
		}
		items := make([]runtime.Object, 0, len(snap.Items))
		for _, obj := range snap.Items {
			s, ok := c.slotOf(key.gvk, obj)
			if _, found := slices.BinarySearch(slots, s); !ok || !found {
				return nil, nil, errors.New("the slots' members sent an object of another slot")
			}
			rv, err := resourceVersion(obj)
			if err != nil {
				return nil, nil, err
			}
			if rv > snap.Versions[s] {
				return nil, nil, fmt.Errorf("the slots' members sent an object of slot %d newer than the slot's version", s)
			}
			converted, err := c.toForm(key, obj)
			if err != nil {
				return nil, nil, err
			}
			items = append(items, converted)
		}
		return items, snap.Versions, nil
	}
}

// toForm converts obj, typed or unstructured, to the form of the informer
// of key.
func (c *Cache) toForm(key kindKey, obj runtime.Object) (runtime.Object, error) {
	switch key.form {
	case unstructuredForm:
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
			if err != nil {
				return nil, err
			}
			u = &unstructured.Unstructured{Object: m}
		}
		u.SetGroupVersionKind(key.gvk)
		return u, nil
	case metadataForm:
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return nil, err
		}
		pm := &metav1.PartialObjectMetadata{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(map[string]any{"metadata": m["metadata"]}, pm); err != nil {
			return nil, err
		}
		pm.SetGroupVersionKind(key.gvk)
		return pm, nil
	}
	out, err := c.base.Scheme.New(key.gvk)
	if err != nil {
		return nil, err
	}
	if reflect.TypeOf(obj) == reflect.TypeOf(out) {
		return obj, nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("cannot convert a %T to %s", obj, key.gvk)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("converting a %s: %w", key.gvk.Kind, err)
	}
	return out, nil
}
