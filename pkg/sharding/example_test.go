package sharding_test

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

// The main of a sharded operator, as docs/implement-sharding.md has it: the
// lines marked "sharding" are all that sharding adds to an operator's main.
func Example() {
	ctx := ctrl.SetupSignalHandler()
	cfg := ctrl.GetConfigOrDie()
	opts := ctrl.Options{Scheme: testkind.NewScheme()}

	ring, err := sharding.Setup(ctx, cfg, &opts, sharding.Options{ // sharding
		Ring: "widgets", Namespace: os.Getenv("POD_NAMESPACE"), Member: os.Getenv("POD_NAME"), // sharding
	}) // sharding
	if err != nil { // sharding
		panic(err) // sharding
	} // sharding
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		panic(err)
	}
	if err := ring.SetupWithManager(mgr); err != nil { // sharding
		panic(err) // sharding
	} // sharding
	r := &WidgetReconciler{Client: mgr.GetClient(), LabelChild: ring.LabelChild} // sharding: LabelChild
	err = ctrl.NewControllerManagedBy(mgr).
		For(&testkind.Widget{}).
		Owns(&corev1.ConfigMap{}).
		Complete(ring.Reconciler(r)) // sharding: ring.Reconciler
	if err != nil {
		panic(err)
	}
	if err := mgr.Start(ctx); err != nil {
		panic(err)
	}
}

// WidgetReconciler is the guide's reconciler: it keeps a ConfigMap for each
// Widget. It knows nothing of sharding but LabelChild, which gives the child
// its owner's slot label so that the member serving the owner sees it.
type WidgetReconciler struct {
	Client     client.Client
	LabelChild func(owner, child client.Object) bool
	// Reconciled, if set, is told of each Widget reconciled (for tests).
	Reconciled func(key client.ObjectKey)
}

func (r *WidgetReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	w := &testkind.Widget{}
	if err := r.Client.Get(ctx, req.NamespacedName, w); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name + "-widget"}}
	_, err := controllerutil.CreateOrPatch(ctx, r.Client, cm, func() error {
		r.LabelChild(w, cm)
		cm.Data = map[string]string{"size": fmt.Sprint(w.Spec.Size)}
		return controllerutil.SetControllerReference(w, cm, r.Client.Scheme())
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("writing the ConfigMap of Widget %s: %w", req.NamespacedName, err)
	}
	if r.Reconciled != nil {
		r.Reconciled(req.NamespacedName)
	}
	return reconcile.Result{}, nil
}
