package sharding

import (
	"context"

	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeshard/kubeshard/pkg/serving"
)

// ErrLeaseLapsed is the cause of a reconcile's cancelled context when the
// member's Lease lapsed, or the member fenced itself, while it ran: another
// member may soon serve the object.
var ErrLeaseLapsed = serving.ErrLeaseLapsed

// Reconciler wraps the reconciler of a sharded kind (the kind given to For)
// so that it runs only for objects of the slots this member serves:
//
//   - a request for a slot the member does not serve is dropped (its owner
//     reconciles it);
//   - a request is admitted only while the member's Lease is fresh; one of a
//     served slot that arrives while a renewal is late is retried after the
//     Lease's retry period, since nothing else would bring it back;
//   - a reconcile in flight delays the handover of its slot until it ends, and
//     its context is cancelled as soon as the member's Lease lapses (see
//     serving.Agent.Guard), so that after a pause its next request fails.
//
// In selectorMode Labels the slot is computed from the request's namespace and
// name, which is right for the kind the controller is For. An object whose
// slot label names another slot than its own (edited by hand) is in the cache
// of the member serving the label's slot only; when the ring has one sharded
// kind, that member relabels it here, so that its owner gets it (with several,
// the labeler's sweep does that). In selectorMode
// ShardSelector it is the slot of the object's uid, which the request lacks:
// the object is read from the manager's cache, which holds only the served
// slots' objects, so a request for an object that is not there (another
// member's, or deleted) is dropped. Deletion work belongs in a finalizer: an
// object with a finalizer stays readable until the finalizer is removed.
func (r *Ring) Reconciler(inner reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		slot, found, err := r.slotOf(ctx, req)
		if err != nil {
			return reconcile.Result{}, err
		}
		if !found {
			logf.FromContext(ctx).V(1).Info("Dropping a request of an object this member does not hold")
			return reconcile.Result{}, nil
		}
		leave, retryAfter, ok := r.agent.Admit(slot)
		if !ok {
			if retryAfter > 0 {
				logf.FromContext(ctx).V(1).Info("Deferring a request while this member's Lease renewal is late", "slot", slot, "after", retryAfter)
				return reconcile.Result{RequeueAfter: retryAfter}, nil
			}
			logf.FromContext(ctx).V(1).Info("Dropping a request of a slot this member does not serve", "slot", slot)
			if r.relabel != nil {
				// Its label may name one of this member's slots: then it
				// is in this member's cache only, and nobody reconciles it.
				return reconcile.Result{}, r.relabel.repair(ctx, req, slot)
			}
			return reconcile.Result{}, nil
		}
		defer leave()
		ctx, cancel := r.agent.Guard(ctx)
		defer cancel()
		if r.relabel != nil {
			// Both the object's slot and the one its label names are this
			// member's: once its slot moves, only a right label takes the
			// object along.
			if err := r.relabel.repair(ctx, req, slot); err != nil {
				logf.FromContext(ctx).Error(err, "Failed to check the slot label, reconciling anyway")
			}
		}
		return inner.Reconcile(ctx, req)
	})
}
