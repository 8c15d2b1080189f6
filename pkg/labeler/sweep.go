package labeler

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// maxSweepRestarts bounds how often the sweep of one kind starts over after
// its continue token expired; a kind that cannot be listed within the API
// server's compaction window this many times in a row waits for the next sweep.
const maxSweepRestarts = 3

// Sweeper lists every object of the ring's kinds, page by page, and labels
// those whose label is wrong, and those whose label is missing but that the
// watch has missed. The watch never sees a wrong label (its selector matches
// only missing ones), so this is how a wrong label gets corrected.
//
// A Sweeper is used by one goroutine at a time.
type Sweeper struct {
	// Reader lists past every cache (mgr.GetAPIReader()): a cache of every
	// object is exactly what the labeler avoids holding.
	Reader client.Reader
	// Pending is the labeler's cache of unlabelled objects, which the watch
	// works from. Optional: without it, the sweep labels every unlabelled
	// object it lists.
	Pending client.Reader
	// Reconciler writes the labels.
	Reconciler *Reconciler
	// Kinds are the ring's kinds.
	Kinds *slotlabel.Kinds
	// PageSize is how many objects one list request returns.
	PageSize int64
	// Interval is the time between the starts of two sweeps.
	Interval time.Duration
	// Clock times the sweeps.
	Clock clock.WithTicker

	// suspects are the unlabelled objects that the previous sweep listed but
	// did not find in Pending, at the resourceVersion it listed.
	suspects map[objectKey]string
	next     map[objectKey]string
}

type objectKey struct {
	gk schema.GroupKind
	types.NamespacedName
}

// SweepResult counts what a sweep saw.
type SweepResult struct {
	// Objects is how many objects were listed, restarts included.
	Objects int
	// Labelled is how many got their label written.
	Labelled int
}

// Run sweeps at once and then every Interval until ctx is done. A failed
// sweep is logged and retried at the next interval.
func (s *Sweeper) Run(ctx context.Context) {
	ticker := s.Clock.NewTicker(s.Interval)
	defer ticker.Stop()
	for {
		s.sweepOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
	}
}

func (s *Sweeper) sweepOnce(ctx context.Context) {
	log := logf.FromContext(ctx)
	start := s.Clock.Now()
	res, err := s.Sweep(ctx)
	took := s.Clock.Since(start)
	if ctx.Err() != nil {
		return
	}
	if m := s.Reconciler.metrics; m != nil {
		m.sweepDuration.WithLabelValues(s.Reconciler.Ring).Observe(took.Seconds())
	}
	if err != nil {
		log.Error(err, "Sweep failed, retrying at the next interval", "objects", res.Objects, "labelled", res.Labelled)
		return
	}
	log.Info("Swept the ring's objects", "objects", res.Objects, "labelled", res.Labelled, "duration", took)
}

// Sweep lists every object of the ring's sharded and child kinds once and
// labels those whose slot label is wrong, or missing for the second sweep in
// a row without the watch having it. An error with one kind does not stop
// the others; all errors are returned joined.
func (s *Sweeper) Sweep(ctx context.Context) (SweepResult, error) {
	var (
		total SweepResult
		errs  []error
	)
	s.next = make(map[objectKey]string, len(s.suspects))
	for _, gvk := range s.Kinds.Labelled() {
		for restarts := 0; ; restarts++ {
			res, err := s.sweepKind(ctx, gvk)
			total.Objects += res.Objects
			total.Labelled += res.Labelled
			// The continue token expires when a sweep of a large kind takes
			// longer than the API server keeps old revisions (etcd compaction,
			// five minutes by default). What was labelled stays labelled.
			if (apierrors.IsResourceExpired(err) || apierrors.IsGone(err)) && restarts < maxSweepRestarts {
				logf.FromContext(ctx).V(1).Info("Continue token expired, restarting the sweep of the kind",
					"kind", gvk.Kind, "restarts", restarts+1)
				continue
			}
			if err != nil {
				errs = append(errs, err)
			}
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	s.suspects, s.next = s.next, nil
	return total, errors.Join(errs...)
}

func (s *Sweeper) sweepKind(ctx context.Context, gvk schema.GroupVersionKind) (SweepResult, error) {
	var (
		res  SweepResult
		errs []error
	)
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	opts := &client.ListOptions{Limit: s.PageSize}
	for {
		if err := s.Reader.List(ctx, list, opts); err != nil {
			return res, fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		res.Objects += len(list.Items)
		for i := range list.Items {
			obj := &list.Items[i]
			// Items of a metadata list are typed PartialObjectMetadata; the
			// patch needs the object's own kind.
			obj.SetGroupVersionKind(gvk)
			if !s.needsLabel(ctx, obj) {
				continue
			}
			labelled, err := s.Reconciler.Relabel(ctx, obj)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if labelled {
				res.Labelled++
			}
		}
		if list.Continue == "" || ctx.Err() != nil {
			break
		}
		opts.Continue = list.Continue
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("sweeping %s: %d labels not written, first: %w", gvk.Kind, len(errs), errs[0])
	}
	return res, nil
}

// needsLabel reports whether the sweep should label obj: it has a slot and
// its label is wrong, or missing and the watch has missed it.
//
// An unlabelled object in Pending is the watch's. One that is not may just
// have been labelled by the watch since this page was listed: while the
// watch works off a backlog (the first sweep after installing kubeshard),
// that is most of them, and patching each would cost a request that fails
// on its resourceVersion precondition. So the sweep labels an unlabelled
// object only when the previous sweep already saw it unlabelled, unchanged,
// and not in Pending: the watch has missed it for a whole interval.
func (s *Sweeper) needsLabel(ctx context.Context, obj *metav1.PartialObjectMetadata) bool {
	gk := obj.GroupVersionKind().GroupKind()
	slot, ok := s.Kinds.SlotOf(obj, gk)
	if !ok {
		return false
	}
	have, had := obj.Labels[shardingv1alpha1.LabelSlot]
	if had {
		return have != slotlabel.Value(slot)
	}
	if s.Pending == nil {
		return true
	}
	pending := &metav1.PartialObjectMetadata{}
	pending.SetGroupVersionKind(obj.GroupVersionKind())
	if s.Pending.Get(ctx, client.ObjectKeyFromObject(obj), pending) == nil {
		return false
	}
	key := objectKey{gk: gk, NamespacedName: client.ObjectKeyFromObject(obj)}
	if rv, seen := s.suspects[key]; seen && rv == obj.ResourceVersion {
		return true
	}
	s.next[key] = obj.ResourceVersion
	return false
}
