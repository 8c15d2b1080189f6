package journal

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Wrap returns a reconciler that runs inner and records each reconcile in j.
// Put it inside the ring's wrapper, ring.Reconciler(journal.Wrap(r, j)), so
// that only the reconciles the ring admitted are recorded: the journal then
// shows what each member actually worked on, and when.
func Wrap(inner reconcile.Reconciler, j *Journal) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		e := Entry{
			Object: objectKey(req.Namespace, req.Name),
			Slot:   ring.Slot(req.Namespace, req.Name, j.opts.Slots),
			Member: j.opts.Member,
			Start:  j.opts.Clock.Now(),
		}
		if j.opts.Reader != nil {
			obj := j.opts.NewObject()
			// A failed read (the object is gone) leaves the generation out;
			// the reconcile itself still runs and is recorded.
			err := j.opts.Reader.Get(ctx, req.NamespacedName, obj)
			if err == nil {
				e.Generation = obj.GetGeneration()
			}
			if j.opts.ByUID {
				e.Slot = -1
				if err == nil {
					e.Slot = ring.UIDSlot(string(obj.GetUID()), j.opts.Slots)
				}
			}
		}
		sent := &requests{clock: j.opts.Clock}
		res, err := inner.Reconcile(withRequests(ctx, sent), req)
		e.End = j.opts.Clock.Now()
		e.Requests, e.LastRequest = sent.snapshot()
		switch {
		case ctx.Err() != nil:
			e.Result = ResultDropped
		case err != nil:
			e.Result = ResultError
		default:
			e.Result = ResultOK
		}
		j.Record(e)
		return res, err
	})
}

// objectKey is how entries name an object, as client.ObjectKey prints it
// for namespaced objects.
func objectKey(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return client.ObjectKey{Namespace: namespace, Name: name}.String()
}
