package sharding

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/labeler"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// memberRelabel repairs, in selectorMode Labels, the slot label of an object
// of the sharded kind that a member holds only because its label names one
// of the member's slots while its namespace and name hash to another. Such an
// object (a label edited by hand, or set by its creator while the webhook was
// unreachable) is in the wrong member's cache and in no other: its request is
// dropped, because its slot is not served here, and without a repair it would
// wait for the labeler's next sweep, which at a million objects runs rarely
// (see Options.LabelerSweepInterval). The member sets the right label, the
// object leaves its cache and reaches its owner's. The label is a function of
// namespace and name, so a member and the labeler that repair one object at
// once write the same value.
type memberRelabel struct {
	kind    schema.GroupVersionKind
	mgr     ctrl.Manager
	labeler *labeler.Reconciler
}

// newMemberRelabel returns the repair of the ring's one sharded kind, or nil
// when the ring has several (a request names no kind, and reading another
// kind from the cache would start informers for it; the sweep repairs
// those) or is in selectorMode ShardSelector (its sharded kind has no label).
func newMemberRelabel(mgr ctrl.Manager, sr *shardingv1alpha1.ShardRing, reg prometheus.Registerer) (*memberRelabel, error) {
	kinds, err := slotlabel.NewKinds(sr.Spec, mgr.GetRESTMapper())
	if err != nil {
		return nil, fmt.Errorf("resolving the kinds of ShardRing %s: %w", sr.Name, err)
	}
	sharded := kinds.Sharded()
	if kinds.ByUID() || len(sharded) != 1 || !mgr.GetScheme().Recognizes(sharded[0]) {
		return nil, nil
	}
	l, err := labeler.NewReconciler(mgr.GetClient(), kinds, sr.Name, reg)
	if err != nil {
		return nil, err
	}
	return &memberRelabel{kind: sharded[0], mgr: mgr, labeler: l}, nil
}

// repair reads the object req names from the member's cache, which holds it
// only if its label names a slot the member serves, and relabels it if that
// is not slot, the slot of its namespace and name.
func (m *memberRelabel) repair(ctx context.Context, req reconcile.Request, slot int) error {
	o, err := m.mgr.GetScheme().New(m.kind)
	if err != nil {
		return fmt.Errorf("creating a %s: %w", m.kind.Kind, err)
	}
	obj, ok := o.(client.Object)
	if !ok {
		return fmt.Errorf("%s is not a client.Object", m.kind)
	}
	if err := m.mgr.GetCache().Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading %s %s to check its slot label: %w", m.kind.Kind, req.NamespacedName, err)
	}
	have := obj.GetLabels()[shardingv1alpha1.LabelSlot]
	if have == slotlabel.Value(slot) {
		return nil
	}
	part := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID(),
		ResourceVersion: obj.GetResourceVersion(), Labels: obj.GetLabels(),
		OwnerReferences: obj.GetOwnerReferences(),
	}}
	part.SetGroupVersionKind(m.kind)
	repaired, err := m.labeler.Relabel(ctx, part)
	if err != nil {
		return err
	}
	if repaired {
		logf.FromContext(ctx).Info("Repaired a slot label that named another slot than the object's own",
			"kind", m.kind.Kind, "object", klog.KObj(obj), "label", have, "slot", slot)
	}
	return nil
}
