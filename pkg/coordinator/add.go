package coordinator

import (
	"fmt"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// Everything the coordinator touches is in the ring's namespace ("system"
// until kustomize names it): the ShardRing, the member Leases, the events on
// the ShardRing.
// +kubebuilder:rbac:groups=sharding.kubeshard.dev,resources=shardrings,verbs=get;list;watch,namespace=system
// +kubebuilder:rbac:groups=sharding.kubeshard.dev,resources=shardrings/status,verbs=get;update;patch,namespace=system
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch,namespace=system
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch,namespace=system

// Add registers the coordinator of one ring with the manager. The
// coordinator runs only on the member that holds the manager's leader
// election, so the manager must have leader election enabled when several
// members run; the watch of the ring's member Leases that feeds its Tracker
// runs on every member.
func Add(mgr ctrl.Manager, opts Options, metrics *Metrics) error {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	tracker := membership.NewTracker(membership.TrackerOptions{Ring: opts.Ring.Name, Clock: opts.Clock})
	observer, err := newLeaseObserver(mgr, opts.Ring, tracker)
	if err != nil {
		return err
	}
	if err := mgr.Add(observer); err != nil {
		return fmt.Errorf("adding the watch of the ring's member Leases: %w", err)
	}
	r := &Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Synced:    observer.HasSynced,
		Recorder:  mgr.GetEventRecorder("kubeshard-coordinator"),
		Clock:     opts.Clock,
		Tracker:   tracker,
		Metrics:   metrics,
		Options:   opts,
	}
	isRing := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == opts.Ring.Namespace && o.GetName() == opts.Ring.Name
	})
	err = ctrl.NewControllerManagedBy(mgr).
		Named("kubeshard-coordinator").
		// Elected, whatever the manager's default for controllers: members
		// run the operator's own controllers everywhere (sharding.Setup).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(true)}).
		For(&shardingv1alpha1.ShardRing{}, builder.WithPredicates(isRing)).
		WatchesRawSource(source.Channel(observer.changed, &handler.EnqueueRequestForObject{})).
		Complete(r)
	if err != nil {
		return fmt.Errorf("creating the coordinator controller: %w", err)
	}
	return nil
}
