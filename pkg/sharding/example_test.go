package sharding_test

import (
	"context"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

// The main of a sharded operator: the cache holds only the member's slots,
// the ring makes the replica a member, and the reconciler, unchanged, is
// wrapped so that it runs only for the member's slots. The controller runs on
// every replica; leader election picks only the ring's coordinator.
func Example() {
	ctx := ctrl.SetupSignalHandler()
	cfg := ctrl.GetConfigOrDie()
	ns, member := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
	scheme := newScheme()

	sr, err := sharding.ReadRing(ctx, cfg, scheme, types.NamespacedName{Namespace: ns, Name: "largedata"})
	if err != nil {
		panic(err)
	}
	opts := ctrl.Options{
		Scheme: scheme,
		NewCache: shardcache.NewCacheFunc(shardcache.Options{
			ShardedObjects: []client.Object{&datav1alpha1.LargeData{}, &corev1.ConfigMap{}},
			Slots:          int(sr.Spec.Slots),
		}),
	}
	// One member at a time coordinates, timed by the ring's lease.
	sharding.ElectCoordinator(&opts, cfg, sr)
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		panic(err)
	}
	ring, err := sharding.New(ctx, mgr, sharding.Options{Ring: "largedata", Namespace: ns, Member: member})
	if err != nil {
		panic(err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		For(&datav1alpha1.LargeData{}).
		Owns(&corev1.ConfigMap{}).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(ring.Reconciler(reconcile.Func(myReconcile)))
	if err != nil {
		panic(err)
	}
	if err := mgr.Start(ctx); err != nil {
		panic(err)
	}
}

func myReconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	return reconcile.Result{}, nil
}
