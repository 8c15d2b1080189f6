package largedata

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// +kubebuilder:rbac:groups=data.kubeshard.dev,resources=largedata,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=data.kubeshard.dev,resources=largedata/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=data.kubeshard.dev,resources=largedata/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Add adds the LargeData reconciler, with its records in st, to the manager.
// The manager's scheme must know the data.kubeshard.dev API and ConfigMaps.
// st stays the caller's to close.
func Add(mgr manager.Manager, st store.Store, opts Options) error {
	r, err := NewReconciler(mgr.GetClient(), mgr.GetScheme(), st, opts)
	if err != nil {
		return fmt.Errorf("creating the LargeData reconciler: %w", err)
	}
	return r.SetupWithManager(mgr)
}

// SetupWithManager adds r to the manager as a controller of LargeData that
// owns the summary ConfigMaps.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	var rec reconcile.Reconciler = r
	if r.opts.Wrap != nil {
		rec = r.opts.Wrap(r)
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named(r.opts.ControllerName).
		// The reconciler's own writes (status, finalizer) change no
		// generation and need no reconcile: the next batch comes from
		// RequeueAfter.
		For(&datav1alpha1.LargeData{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, deletionStarted()))).
		Owns(&corev1.ConfigMap{}).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: r.opts.MaxConcurrentReconciles,
			NeedLeaderElection:      r.opts.NeedLeaderElection,
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](
				r.opts.RetryBaseDelay, r.opts.RetryMaxDelay),
		}).
		Complete(rec)
	if err != nil {
		return fmt.Errorf("adding the LargeData controller to the manager: %w", err)
	}
	return nil
}

// deletionStarted passes the update that sets deletionTimestamp, whether or
// not the API server counts it as a new generation.
func deletionStarted() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetDeletionTimestamp() == nil && e.ObjectNew.GetDeletionTimestamp() != nil
		},
	}
}
