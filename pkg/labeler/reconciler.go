package labeler

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// Request names an object of any of the ring's kinds: the labeler has one
// work queue for all of them.
type Request struct {
	// GVK is the object's kind, at the version the labeler watches.
	GVK schema.GroupVersionKind
	types.NamespacedName
}

// Reconciler labels one object whose slot label is missing or names no slot.
type Reconciler struct {
	// Reader reads the labeler's own cache, which holds only objects without
	// the slot label: an object missing from it is labelled or deleted.
	Reader client.Reader
	// Client writes the label.
	Client client.Client
	// Kinds are the ring's kinds.
	Kinds *slotlabel.Kinds
	// Ring is the ring's name, the metrics' ring label.
	Ring string

	metrics *metrics // nil: not counted
}

// Reconcile labels the object req names if it is still unlabelled.
func (r *Reconciler) Reconcile(ctx context.Context, req Request) (reconcile.Result, error) {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(req.GVK)
	if err := r.Reader.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading %s %s from the labeler's cache: %w", req.GVK.Kind, req.NamespacedName, err)
	}
	_, err := r.Relabel(ctx, obj)
	return reconcile.Result{}, err
}

// NewReconciler returns a Reconciler of ring that writes labels with c and
// counts them in reg's kubeshard_labeler_labels_total. Its Reader is left
// empty: set it before calling Reconcile, or call only Relabel, as a member
// does that finds an object in its cache under a slot it does not hash to.
func NewReconciler(c client.Client, kinds *slotlabel.Kinds, ring string, reg prometheus.Registerer) (*Reconciler, error) {
	m, err := newMetrics(reg, ring)
	if err != nil {
		return nil, err
	}
	return &Reconciler{Client: c, Kinds: kinds, Ring: ring, metrics: m}, nil
}

// Relabel sets obj's slot label when obj has a slot and the label is missing
// or wrong, and reports whether it wrote it. obj must carry its kind, uid and
// resourceVersion: the patch is conditional on them, and a conflict or a
// deleted object is not an error (nothing is written; the newer version is
// judged when it is seen).
func (r *Reconciler) Relabel(ctx context.Context, obj *metav1.PartialObjectMetadata) (bool, error) {
	gk := obj.GroupVersionKind().GroupKind()
	slot, ok := r.Kinds.SlotOf(obj, gk)
	if !ok {
		return false, nil
	}
	want := slotlabel.Value(slot)
	have, had := obj.Labels[shardingv1alpha1.LabelSlot]
	if had && have == want {
		return false, nil
	}
	reason := reasonMissing
	if had {
		reason = reasonWrong
	}

	// A merge patch of the one label, made conditional on the version that
	// was judged: uid and resourceVersion are preconditions. If the object
	// changed since (labelled meanwhile, or deleted and recreated with
	// another owner), the patch fails with a conflict and the newer version
	// is judged on its own: by the watch, which sees every change of an
	// unlabelled object, or by the next sweep.
	var p labelPatch
	p.Metadata.UID, p.Metadata.ResourceVersion = obj.UID, obj.ResourceVersion
	p.Metadata.Labels = map[string]string{shardingv1alpha1.LabelSlot: want}
	patch, err := json.Marshal(&p)
	if err != nil {
		return false, fmt.Errorf("encoding the slot label patch: %w", err)
	}
	if err := r.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("setting the slot label of %s %s: %w", gk.Kind, klog.KObj(obj), err)
	}
	if r.metrics != nil {
		r.metrics.labels.WithLabelValues(r.Ring, reason).Inc()
	}
	logf.FromContext(ctx).V(1).Info("Set slot label", "kind", gk.Kind, "object", klog.KObj(obj),
		"slot", slot, "reason", reason)
	return true, nil
}

// labelPatch is a JSON merge patch of the slot label with preconditions.
type labelPatch struct {
	Metadata struct {
		// Empty fields are left out: an empty uid would not be a missing
		// precondition but an attempt to change the uid.
		UID             types.UID         `json:"uid,omitempty"`
		ResourceVersion string            `json:"resourceVersion,omitempty"`
		Labels          map[string]string `json:"labels"`
	} `json:"metadata"`
}

// eventHandler enqueues the objects of kind gvk that have a slot. Others,
// such as ConfigMaps that are nobody's child, stay in the labeler's cache
// (they match its selector forever) but never reach the queue.
func eventHandler(kinds *slotlabel.Kinds, gvk schema.GroupVersionKind) handler.TypedEventHandler[*metav1.PartialObjectMetadata, Request] {
	add := func(obj *metav1.PartialObjectMetadata, q workqueue.TypedRateLimitingInterface[Request]) {
		if _, ok := kinds.SlotOf(obj, gvk.GroupKind()); ok {
			q.Add(Request{GVK: gvk, NamespacedName: types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}})
		}
	}
	type queue = workqueue.TypedRateLimitingInterface[Request]
	return handler.TypedFuncs[*metav1.PartialObjectMetadata, Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[*metav1.PartialObjectMetadata], q queue) {
			add(e.Object, q)
		},
		// An object still unlabelled after an update may have become
		// labellable: a child that got its controller reference.
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[*metav1.PartialObjectMetadata], q queue) {
			add(e.ObjectNew, q)
		},
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[*metav1.PartialObjectMetadata], q queue) {
			add(e.Object, q)
		},
	}
}
