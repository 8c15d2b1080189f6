package slotlabel

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Kinds are the kinds of one ring, resolved from the resources its spec
// names: the sharded kinds, whose objects are hashed into slots, and the
// child kinds, whose objects live on the slot of their controller owner.
// A Kinds is immutable and safe for concurrent use.
type Kinds struct {
	slots int
	// byUID: selectorMode ShardSelector. Slots derive from uids, and only
	// children carry the slot label.
	byUID bool

	// sharded maps each sharded kind to whether it is namespaced: the owner
	// of a child has the child's namespace only when its kind is namespaced.
	sharded map[schema.GroupKind]bool
	// owners maps each child kind to the sharded kinds that list it as a
	// child: a ConfigMap is a child of, for example, a Widget only when the
	// Widget's resource names configmaps among its children.
	owners map[schema.GroupKind]map[schema.GroupKind]struct{}

	shardedGVKs []schema.GroupVersionKind
	childGVKs   []schema.GroupVersionKind
}

// NewKinds resolves the resources of a ring spec to kinds with mapper (in a
// manager, mgr.GetRESTMapper()), each at the version the API server prefers.
// It fails, naming the resource, when a resource is unknown, for instance
// because its CRD is not installed yet. A spec without slots gets the API
// server's default, ring.DefaultSlots.
func NewKinds(spec shardingv1alpha1.ShardRingSpec, mapper meta.RESTMapper) (*Kinds, error) {
	k := &Kinds{
		slots:   int(spec.Slots),
		sharded: make(map[schema.GroupKind]bool, len(spec.Resources)),
		owners:  map[schema.GroupKind]map[schema.GroupKind]struct{}{},
		byUID:   spec.SelectorMode == shardingv1alpha1.SelectorModeShardSelector,
	}
	if k.slots == 0 {
		k.slots = ring.DefaultSlots
	}
	if k.slots < 0 {
		return nil, fmt.Errorf("ring spec has %d slots, want at least 1", spec.Slots)
	}
	for _, res := range spec.Resources {
		gvk, namespaced, err := resolve(mapper, res.GroupResource)
		if err != nil {
			return nil, fmt.Errorf("resolving sharded resource %q: %w", groupResource(res.GroupResource), err)
		}
		if _, dup := k.sharded[gvk.GroupKind()]; !dup {
			k.shardedGVKs = append(k.shardedGVKs, gvk)
		}
		k.sharded[gvk.GroupKind()] = namespaced

		for _, child := range res.Children {
			cgvk, _, err := resolve(mapper, child)
			if err != nil {
				return nil, fmt.Errorf("resolving resource %q, a child of %q: %w",
					groupResource(child), groupResource(res.GroupResource), err)
			}
			owners, seen := k.owners[cgvk.GroupKind()]
			if !seen {
				owners = map[schema.GroupKind]struct{}{}
				k.owners[cgvk.GroupKind()] = owners
				k.childGVKs = append(k.childGVKs, cgvk)
			}
			owners[gvk.GroupKind()] = struct{}{}
		}
	}
	return k, nil
}

func resolve(mapper meta.RESTMapper, gr shardingv1alpha1.GroupResource) (schema.GroupVersionKind, bool, error) {
	gvk, err := mapper.KindFor(schema.GroupVersionResource{Group: gr.Group, Resource: gr.Resource})
	if err != nil {
		return schema.GroupVersionKind{}, false, err
	}
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return schema.GroupVersionKind{}, false, err
	}
	return gvk, mapping.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

func groupResource(gr shardingv1alpha1.GroupResource) string {
	return schema.GroupResource{Group: gr.Group, Resource: gr.Resource}.String()
}

// Slots is the ring's number of slots.
func (k *Kinds) Slots() int { return k.slots }

// Sharded returns the sharded kinds in the order of the spec.
func (k *Kinds) Sharded() []schema.GroupVersionKind { return slices.Clone(k.shardedGVKs) }

// Children returns the child kinds in the order of the spec, each once.
func (k *Kinds) Children() []schema.GroupVersionKind { return slices.Clone(k.childGVKs) }

// ByUID reports whether the ring is in selectorMode ShardSelector: a sharded
// object's slot derives from its uid, the API server selects the sharded
// kinds by uid hash, and only children carry the slot label.
func (k *Kinds) ByUID() bool { return k.byUID }

// Labelled returns the kinds whose objects carry the slot label, in the order
// of the spec: the sharded kinds and the child kinds, or in selectorMode
// ShardSelector the child kinds only.
func (k *Kinds) Labelled() []schema.GroupVersionKind {
	if k.byUID {
		return k.Children()
	}
	return append(k.Sharded(), k.childGVKs...)
}

// IsSharded reports whether gk is a sharded kind of the ring.
func (k *Kinds) IsSharded(gk schema.GroupKind) bool {
	_, ok := k.sharded[gk]
	return ok
}

// IsChild reports whether gk is a child kind of some sharded kind.
func (k *Kinds) IsChild(gk schema.GroupKind) bool {
	_, ok := k.owners[gk]
	return ok
}

// SlotOf returns the slot label obj, an object of kind gk, must carry. A
// child (an object of a child kind whose controller ownerReference points to
// a sharded kind that lists it) gets its owner's slot, computed from the
// reference alone (the owner's namespace and name, or in selectorMode
// ShardSelector its uid); this wins when a kind is both sharded and a child,
// so that a child always lives with its owner. Any other object of a sharded
// kind gets the slot of its own namespace and name.
//
// ok is false when obj carries no slot label: its kind is not in the ring, it
// is of a child kind but not controlled by a sharded owner, it has no name yet
// (generateName, at admission), or the ring is in selectorMode ShardSelector
// and obj is not a child (the API server selects it by uid; see ring.UIDSlot).
func (k *Kinds) SlotOf(obj metav1.Object, gk schema.GroupKind) (slot int, ok bool) {
	if owners, isChild := k.owners[gk]; isChild {
		if ref := metav1.GetControllerOfNoCopy(obj); ref != nil && ref.Name != "" {
			if ogk, known := refGroupKind(ref); known {
				if _, listed := owners[ogk]; listed {
					if k.byUID {
						if ref.UID == "" {
							return 0, false
						}
						return ring.UIDSlot(string(ref.UID), k.slots), true
					}
					ns := ""
					if k.sharded[ogk] {
						ns = obj.GetNamespace()
					}
					return ring.Slot(ns, ref.Name, k.slots), true
				}
			}
		}
	}
	if _, sharded := k.sharded[gk]; sharded && obj.GetName() != "" && !k.byUID {
		return ring.Slot(obj.GetNamespace(), obj.GetName(), k.slots), true
	}
	return 0, false
}

// refGroupKind is the owner's kind: an ownerReference names a version, but
// an owner keeps its slot across versions, so only group and kind count. It
// parses apiVersion as schema.ParseGroupVersion does, without its allocations.
func refGroupKind(ref *metav1.OwnerReference) (schema.GroupKind, bool) {
	group, version, found := strings.Cut(ref.APIVersion, "/")
	switch {
	case !found: // "v1": the core group
		return schema.GroupKind{Kind: ref.Kind}, ref.APIVersion != ""
	case strings.Contains(version, "/"):
		return schema.GroupKind{}, false
	}
	return schema.GroupKind{Group: group, Kind: ref.Kind}, true
}
