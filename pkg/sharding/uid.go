package sharding

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// uidSlots finds the slot of a request in selectorMode ShardSelector, where
// it is the slot of the object's uid.
type uidSlots struct {
	kind   schema.GroupVersionKind // the ring's sharded kind
	reader client.Reader           // the manager's cache
	mgr    ctrl.Manager
	slots  int
}

func newUIDSlots(mgr ctrl.Manager, sr *shardingv1alpha1.ShardRing, slots int) (*uidSlots, error) {
	kinds, err := slotlabel.NewKinds(sr.Spec, mgr.GetRESTMapper())
	if err != nil {
		return nil, fmt.Errorf("resolving the kinds of ShardRing %s: %w", sr.Name, err)
	}
	sharded := kinds.Sharded()
	// A request names no kind: with two sharded kinds, one namespace/name
	// could be two objects with two slots.
	if len(sharded) != 1 {
		return nil, fmt.Errorf("ShardRing %s: selectorMode ShardSelector needs exactly one sharded resource, it has %d (list the others as children, or use selectorMode Labels)", sr.Name, len(sharded))
	}
	if !mgr.GetScheme().Recognizes(sharded[0]) {
		return nil, fmt.Errorf("ShardRing %s: the sharded kind %s is not in the manager's scheme", sr.Name, sharded[0])
	}
	return &uidSlots{kind: sharded[0], reader: mgr.GetCache(), mgr: mgr, slots: slots}, nil
}

// slotOf returns the slot of the object req names. In selectorMode Labels it
// is the slot of its namespace and name. In selectorMode ShardSelector the
// object is read from the manager's cache; found is false when it is not
// there: another member serves it, or it is gone.
func (r *Ring) slotOf(ctx context.Context, req reconcile.Request) (slot int, found bool, err error) {
	if r.uid == nil {
		return ring.Slot(req.Namespace, req.Name, r.slots), true, nil
	}
	u := r.uid
	o, err := u.mgr.GetScheme().New(u.kind)
	if err != nil {
		return 0, false, fmt.Errorf("creating a %s: %w", u.kind.Kind, err)
	}
	obj, ok := o.(client.Object)
	if !ok {
		return 0, false, reconcile.TerminalError(fmt.Errorf("%s is not a client.Object", u.kind))
	}
	if err := u.reader.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("reading %s %s to find its slot: %w", u.kind.Kind, req.NamespacedName, err)
	}
	slot = ring.UIDSlot(string(obj.GetUID()), u.slots)
	return slot, slot >= 0, nil
}

// shardSelectorReporter is a cache that finds out whether the API server
// applies shardSelector; the cache that shardcache returns is one.
type shardSelectorReporter interface {
	OnShardSelector(fn func(applied bool))
}

// report publishes what the cache finds out about shardSelector: on the
// member's Lease, for the coordinator's ServerSideSharding condition, and as
// the metric kubeshard_member_shard_selector_fallback.
func (u *uidSlots) report(c any, member *membership.Member, log logr.Logger, opts Options) error {
	fallback := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kubeshard_member_shard_selector_fallback",
		Help:        "1 when the API server ignored this member's shardSelector (feature gate ShardedListAndWatch off, or a server older than 1.36) and the member filters the objects it receives itself; 0 when the server applies it.",
		ConstLabels: prometheus.Labels{"ring": opts.Ring, "member": opts.Member},
	})
	if err := opts.Registerer.Register(fallback); err != nil {
		return fmt.Errorf("registering the shard selector fallback metric: %w", err)
	}
	r, ok := c.(shardSelectorReporter)
	if !ok {
		// Another cache caches every object; the reconciler still admits
		// only the served slots.
		return nil
	}
	r.OnShardSelector(func(applied bool) {
		if applied {
			fallback.Set(0)
			member.SetShardSelector(shardingv1alpha1.ShardSelectorApplied)
			return
		}
		fallback.Set(1)
		member.SetShardSelector(shardingv1alpha1.ShardSelectorIgnored)
		log.Info("API server ignored the shard selector; this member filters the objects it receives itself, so it receives all of them",
			"ring", opts.Ring, "member", opts.Member,
			"hint", "enable the kube-apiserver feature gate ShardedListAndWatch (Kubernetes 1.36 or later)")
	})
	return nil
}
