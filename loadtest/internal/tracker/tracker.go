// Package tracker follows the load test's LargeData objects through one
// watch and records, for every create and spec change, the time until the
// status shows that generation Ready. It keeps a few bytes per object, not
// the objects, so that it follows millions; it also counts the objects per
// slot and the writes that changed nothing the harness or the operator
// meant to change.
package tracker

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

// Options configure a Tracker.
type Options struct {
	// Names say which objects to follow. Required.
	Names workload.Names
	// Slots is the ShardRing's slot count. Default 1024.
	Slots int
	// OnReconciled is called for every generation seen Ready, with its
	// latency. Default: none.
	OnReconciled func(latency time.Duration)
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// A generation counts as reconciled when its status says so (see Ready).

// Sample is one generation reconciled: when (seconds since the tracker
// started) and after how long (seconds since its write was sent).
type Sample struct {
	At      float32 `json:"at"`
	Latency float32 `json:"latency"`
	// Create is true for generation 1, false for a spec change.
	Create bool `json:"create"`
}

// Stats are the tracker's counters.
type Stats struct {
	// Present is the number of objects that exist.
	Present int `json:"present"`
	// Reconciled is the number of objects whose newest generation is Ready.
	Reconciled int `json:"reconciled"`
	// ReconciledBefore counts objects found already Ready when the tracker
	// started (no latency is known for them).
	ReconciledBefore int `json:"reconciledBefore"`
	// Unlabelled is the number of objects without a slot label.
	Unlabelled int `json:"unlabelled"`
	// Events counts watch events of followed objects.
	Events int64 `json:"events"`
	// SpecWrites count updates that changed the generation; MetadataWrites
	// those that changed the slot label, the finalizers or the deletion
	// timestamp; StatusWrites the other updates of an object whose newest
	// generation was not reconciled yet (the operator's progress).
	SpecWrites     int64 `json:"specWrites"`
	MetadataWrites int64 `json:"metadataWrites"`
	StatusWrites   int64 `json:"statusWrites"`
	// EchoWrites and IdleWrites count the remaining updates: writes to an
	// object that was reconciled and stays so, at the same generation. An
	// echo comes within IdleAfter of the object's previous change: a second
	// reconcile of the same generation, typically started from a cache that
	// had not seen the first one's status yet. An idle write comes later, to
	// an object that had nothing to do: what a rebalance that rewrote objects
	// would produce.
	EchoWrites int64 `json:"echoWrites"`
	IdleWrites int64 `json:"idleWrites"`
	// Relists counts full lists after the watch lost its place.
	Relists int `json:"relists"`
}

const (
	flagPresent uint8 = 1 << iota
	flagDone
	flagFinalizer
	flagDeleting
	// flagReady: the status reports its generation Ready (see Ready).
	flagReady
)

// object is what the tracker keeps per object: 24 bytes.
type object struct {
	sentAt int64 // Unix nanoseconds of the write of gen
	gen    int32
	obsGen int32
	// lastWrite is when the object last changed, in tenths of a second
	// since the tracker started.
	lastWrite int32
	slot      int16 // -1: no label
	phase     uint8
	flags     uint8
}

// IdleAfter is how long an object must have been reconciled and unchanged
// for a write to it to count as an IdleWrite.
const IdleAfter = 10 * time.Second

// Tracker follows the objects; create it with New and start it with Run.
type Tracker struct {
	opts   Options
	start  time.Time
	synced chan struct{}

	mu          sync.Mutex
	objects     []object
	stats       Stats
	slotObjects []int
	samples     []Sample
	idleAt      []float32
}

// New returns a tracker; its clock for Sample.At starts now.
func New(opts Options) (*Tracker, error) {
	if err := opts.Names.Validate(); err != nil {
		return nil, err
	}
	if opts.Slots == 0 {
		opts.Slots = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Tracker{opts: opts, start: opts.Now(), synced: make(chan struct{}), slotObjects: make([]int, opts.Slots)}, nil
}

// Start is when the tracker's clock started.
func (t *Tracker) Start() time.Time { return t.start }

// Synced is closed once the first list has been processed.
func (t *Tracker) Synced() <-chan struct{} { return t.synced }

// Run lists and watches the run's objects until ctx ends.
func (t *Tracker) Run(ctx context.Context, c client.WithWatch) error {
	first := true
	for ctx.Err() == nil {
		rv, err := t.list(ctx, c, first)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && first:
			return fmt.Errorf("listing LargeData: %w", err)
		case err != nil:
			// The API server may be restarting: list again in a while.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if first {
			close(t.synced)
			first = false
		}
		if err := t.watch(ctx, c, rv); err != nil && ctx.Err() == nil {
			t.mu.Lock()
			t.stats.Relists++
			t.mu.Unlock()
		}
	}
	return nil
}

func (t *Tracker) list(ctx context.Context, c client.WithWatch, first bool) (string, error) {
	list := &datav1alpha1.LargeDataList{}
	opts := []client.ListOption{client.MatchingLabels{workload.LabelRun: t.opts.Names.Prefix}, client.Limit(2000)}
	for {
		if err := c.List(ctx, list, opts...); err != nil {
			return "", err
		}
		now := t.opts.Now()
		t.mu.Lock()
		for i := range list.Items {
			t.observe(&list.Items[i], watch.Added, now, listed(first))
		}
		t.mu.Unlock()
		if list.Continue == "" {
			return list.ResourceVersion, nil
		}
		opts = append(opts[:2:2], client.Continue(list.Continue))
	}
}

// watch follows changes from resourceVersion rv. It returns nil when the
// server ends the watch (to watch again from the last version seen) and an
// error when it must list again.
func (t *Tracker) watch(ctx context.Context, c client.WithWatch, rv string) error {
	for ctx.Err() == nil {
		w, err := c.Watch(ctx, &datav1alpha1.LargeDataList{}, client.MatchingLabels{workload.LabelRun: t.opts.Names.Prefix},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
		if err != nil {
			return err
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Error:
				w.Stop()
				return apierrors.FromObject(ev.Object)
			case watch.Bookmark:
				if o, ok := ev.Object.(client.Object); ok {
					rv = o.GetResourceVersion()
				}
			default:
				ld, ok := ev.Object.(*datav1alpha1.LargeData)
				if !ok {
					continue
				}
				rv = ld.ResourceVersion
				now := t.opts.Now()
				t.mu.Lock()
				t.observe(ld, ev.Type, now, watched)
				t.mu.Unlock()
			}
		}
		w.Stop()
	}
	return nil
}

func phaseCode(p datav1alpha1.Phase) uint8 {
	switch p {
	case datav1alpha1.PhasePending:
		return 1
	case datav1alpha1.PhaseInitializing:
		return 2
	case datav1alpha1.PhaseProcessing:
		return 3
	case datav1alpha1.PhaseReady:
		return 4
	case datav1alpha1.PhaseFailed:
		return 5
	case datav1alpha1.PhaseDeleting:
		return 6
	}
	return 0
}

// source says where observe's object comes from.
type source int

const (
	// watched: a watch event, one write.
	watched source = iota
	// firstList: the first list; objects found reconciled then were
	// reconciled before the tracker started.
	firstList
	// relisted: a list after the watch lost its place; an object that
	// changed may have changed more than once, so no write is classified.
	relisted
)

func listed(first bool) source {
	if first {
		return firstList
	}
	return relisted
}

// observe records one event or listed object.
func (t *Tracker) observe(ld *datav1alpha1.LargeData, typ watch.EventType, now time.Time, src source) {
	i, ok := t.opts.Names.Index(ld.Namespace, ld.Name)
	if !ok {
		return
	}
	if i >= len(t.objects) {
		grown := make([]object, max(i+1, 2*len(t.objects), 1024))
		copy(grown, t.objects)
		t.objects = grown
	}
	o := &t.objects[i]
	t.stats.Events++
	if typ == watch.Deleted {
		if o.flags&flagPresent != 0 {
			t.countSlot(o.slot, -1)
			t.stats.Present--
			if o.flags&flagDone != 0 {
				t.stats.Reconciled--
			}
		}
		*o = object{}
		return
	}

	next := object{
		sentAt:    o.sentAt,
		gen:       int32(ld.Generation),
		obsGen:    int32(ld.Status.ObservedGeneration),
		slot:      slotOf(ld.Labels, len(t.slotObjects)),
		phase:     phaseCode(ld.Status.Phase),
		flags:     flagPresent | o.flags&flagDone,
		lastWrite: t.tenths(now),
	}
	if len(ld.Finalizers) > 0 {
		next.flags |= flagFinalizer
	}
	if ld.DeletionTimestamp != nil {
		next.flags |= flagDeleting
	}
	if Ready(ld) {
		next.flags |= flagReady
	}
	if src == relisted && o.flags&flagPresent != 0 {
		// A list is not a write: keep when the object last changed.
		next.lastWrite = o.lastWrite
	}
	if o.flags&flagPresent == 0 {
		t.stats.Present++
		t.countSlot(next.slot, 1)
		next.flags &^= flagDone
	} else if src == watched {
		switch {
		case next.gen != o.gen:
			t.stats.SpecWrites++
		case next.slot != o.slot || next.flags&^flagReady != o.flags&^flagReady:
			t.stats.MetadataWrites++
		case o.flags&flagDone == 0:
			// Progress of a generation not reconciled yet.
			t.stats.StatusWrites++
		case t.tenths(now)-o.lastWrite < int32(IdleAfter/(100*time.Millisecond)):
			t.stats.EchoWrites++
		default:
			t.stats.IdleWrites++
			t.idleAt = append(t.idleAt, t.since(now))
		}
	}
	if o.flags&flagPresent != 0 && next.slot != o.slot {
		t.countSlot(o.slot, -1)
		t.countSlot(next.slot, 1)
	}
	if next.gen != o.gen || o.flags&flagPresent == 0 {
		// A new generation: its write was sent at the stamp it carries.
		if sent, ok := workload.SentAt(ld.Annotations); ok {
			next.sentAt = sent.UnixNano()
		} else {
			next.sentAt = now.UnixNano()
		}
		if next.flags&flagDone != 0 {
			next.flags &^= flagDone
			t.stats.Reconciled--
		}
	}
	if next.flags&flagDone == 0 && next.flags&flagReady != 0 {
		next.flags |= flagDone
		t.stats.Reconciled++
		if src == firstList {
			t.stats.ReconciledBefore++
		} else {
			latency := now.Sub(time.Unix(0, next.sentAt))
			t.samples = append(t.samples, Sample{At: t.since(now), Latency: float32(latency.Seconds()), Create: next.gen == 1})
			if t.opts.OnReconciled != nil {
				t.opts.OnReconciled(latency)
			}
		}
	}
	*o = next
}

// Ready reports whether the status says the object's generation is
// reconciled: observedGeneration and the Ready condition's both at least the
// generation, and the condition True. The phase alone is not enough: a
// status merge patch computed from a stale copy can leave phase Ready next
// to a Ready condition that is False.
func Ready(ld *datav1alpha1.LargeData) bool {
	if ld.Status.ObservedGeneration < ld.Generation {
		return false
	}
	c := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration >= ld.Generation
}

func (t *Tracker) since(now time.Time) float32 { return float32(now.Sub(t.start).Seconds()) }

func (t *Tracker) tenths(now time.Time) int32 {
	return int32(now.Sub(t.start) / (100 * time.Millisecond))
}

func (t *Tracker) countSlot(slot int16, delta int) {
	if slot < 0 {
		t.stats.Unlabelled += delta
		return
	}
	t.slotObjects[slot] += delta
}

func slotOf(labels map[string]string, slots int) int16 {
	s, err := strconv.Atoi(labels[shardingv1alpha1.LabelSlot])
	if err != nil || s < 0 || s >= slots {
		return -1
	}
	return int16(s)
}

// Stats returns the counters.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// SlotObjects returns the number of objects per slot.
func (t *Tracker) SlotObjects() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]int(nil), t.slotObjects...)
}

// Samples returns every generation reconciled so far, in the order seen.
func (t *Tracker) Samples() []Sample {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Sample(nil), t.samples...)
}

// IdleWrites returns when (seconds since the start) each IdleWrite was seen.
func (t *Tracker) IdleWrites() []float32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]float32(nil), t.idleAt...)
}

// WaitReconciled waits until at least want objects exist and every one is
// reconciled. progress, if set, is called every half second with the stats.
func (t *Tracker) WaitReconciled(ctx context.Context, want int, progress func(Stats)) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		s := t.Stats()
		if progress != nil {
			progress(s)
		}
		if s.Present >= want && s.Reconciled == s.Present {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d objects reconciled: %w", s.Reconciled, want, ctx.Err())
		case <-tick.C:
		}
	}
}
