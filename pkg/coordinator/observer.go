package coordinator

import (
	"context"
	"fmt"
	"sync/atomic"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// leaseObserver watches the ring's member Leases on every member, elected or
// not, and feeds what it sees to the Tracker. A member that wins the election
// then already knows, by its own clock, how long each member has been
// silent, and takes over a dead member's slots as soon as its lease has run
// out instead of a full lease duration after the election.
//
// Its cache holds the ring's member Leases only (its namespace and its
// label), not every Lease of the cluster (one per node, renewed every few
// seconds, on a real cluster).
type leaseObserver struct {
	cache   cache.Cache
	tracker *membership.Tracker
	ring    types.NamespacedName
	// changed wakes the coordinator after the Tracker has seen a change, so
	// that a step never runs on a view older than the event that caused it.
	// One pending wake-up is enough: every Lease maps to the one ring.
	changed      chan event.GenericEvent
	registration atomic.Pointer[toolscache.ResourceEventHandlerRegistration]
}

func newLeaseObserver(mgr ctrl.Manager, ring types.NamespacedName, tracker *membership.Tracker) (*leaseObserver, error) {
	leases, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient:        mgr.GetHTTPClient(),
		Scheme:            mgr.GetScheme(),
		Mapper:            mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{ring.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{&coordinationv1.Lease{}: {
			Label: labels.SelectorFromSet(labels.Set{shardingv1alpha1.LabelRing: ring.Name}),
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the cache of the ring's member Leases: %w", err)
	}
	return &leaseObserver{cache: leases, tracker: tracker, ring: ring, changed: make(chan event.GenericEvent, 1)}, nil
}

// NeedLeaderElection is false: every member observes, so that any of them
// can coordinate with a history of its own.
func (o *leaseObserver) NeedLeaderElection() bool { return false }

// Start watches the Leases until ctx ends.
func (o *leaseObserver) Start(ctx context.Context) error {
	informer, err := o.cache.GetInformer(ctx, &coordinationv1.Lease{})
	if err != nil {
		return fmt.Errorf("watching the ring's member Leases: %w", err)
	}
	reg, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.observe(obj) },
		UpdateFunc: func(_, obj any) { o.observe(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if lease, ok := obj.(*coordinationv1.Lease); ok {
				o.tracker.Forget(lease.Name)
				o.wake()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching the ring's member Leases: %w", err)
	}
	o.registration.Store(&reg)
	return o.cache.Start(ctx)
}

func (o *leaseObserver) observe(obj any) {
	if lease, ok := obj.(*coordinationv1.Lease); ok {
		o.tracker.Observe(lease)
		o.wake()
	}
}

func (o *leaseObserver) wake() {
	ring := &shardingv1alpha1.ShardRing{}
	ring.Namespace, ring.Name = o.ring.Namespace, o.ring.Name
	select {
	case o.changed <- event.GenericEvent{Object: ring}:
	default: // a wake-up is already pending
	}
}

// HasSynced reports whether the Tracker has seen every Lease of the initial
// list: before that, a member it lacks would look gone.
func (o *leaseObserver) HasSynced() bool {
	reg := o.registration.Load()
	return reg != nil && (*reg).HasSynced()
}
