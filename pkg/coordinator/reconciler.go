package coordinator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Reconciler coordinates one ring. It keeps in memory only what a successor
// can do without: the debounce timer. The Tracker's observation times are
// this member's own, gathered whether it coordinates or not; everything else
// is read from the ShardRing and the Leases.
type Reconciler struct {
	// Client reads the ShardRing (cached) and writes the status.
	Client client.Client
	// APIReader reads a Lease from the API server itself, to confirm an
	// expiry that the Tracker saw through a watch.
	APIReader client.Reader
	// Synced, if set, reports whether the Tracker has seen the initial list
	// of the ring's Leases; the coordinator waits for it.
	Synced func() bool
	// Recorder records events on the ShardRing.
	Recorder events.EventRecorder
	// Clock is the coordinator's clock; expiry and debouncing use only it.
	Clock clock.PassiveClock
	// Tracker judges the members' liveness from their Leases.
	Tracker *membership.Tracker
	// Metrics, if set, receives the ring's figures.
	Metrics *Metrics
	// Options are the coordinator's options, with defaults applied.
	Options Options

	liveSet       string            // the live members at the last reconcile, joined
	liveChangedAt time.Time         // when liveSet last changed
	pendingSince  time.Time         // when a rebalance was first found needed; zero if none
	timings       timings           // when the pending moves were recorded, for their durations
	reported      map[string]string // Lease anomalies already recorded as events
}

// Reconcile advances the ring's assignment by one step and records it.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.NamespacedName != r.Options.Ring {
		return reconcile.Result{}, nil
	}
	log := logf.FromContext(ctx)
	sr := &shardingv1alpha1.ShardRing{}
	if err := r.Client.Get(ctx, req.NamespacedName, sr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}

	ringOpts, err := ringOptions(sr)
	if err != nil {
		// The CRD validates the spec, so this is an older or hand-edited
		// object: say why in a condition and keep the assignment as it is.
		return reconcile.Result{}, r.writeInvalid(ctx, sr, err)
	}

	if r.Synced != nil && !r.Synced() {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	r.reportLeaseAnomalies(ctx, sr)
	members, err := r.members(ctx, sr)
	if err != nil {
		return reconcile.Result{}, err
	}

	table := assignment.New(ringOpts.Slots)
	if sr.Status.Epoch > 0 {
		if table, err = assignment.FromStatus(&sr.Status, ringOpts.Slots); err != nil {
			return reconcile.Result{}, r.writeInvalid(ctx, sr, fmt.Errorf("the recorded assignment is unreadable: %w", err))
		}
	}

	now := r.Clock.Now()
	rebalance, wait, err := r.shouldRebalance(table, members, ringOpts, now)
	if err != nil {
		return reconcile.Result{}, r.writeInvalid(ctx, sr, err)
	}
	res, err := plan(planInput{current: table, members: members, rebalance: rebalance, ring: ringOpts})
	if err != nil {
		return reconcile.Result{}, r.writeInvalid(ctx, sr, err)
	}
	if rebalance {
		r.pendingSince = time.Time{}
	}

	status := buildStatus(&sr.Status, sr.Generation, res.next, members, !rebalance && wait > 0)
	setServerSideSharding(&status, &sr.Spec, sr.Generation, members)
	if !apiequality.Semantic.DeepEqual(status, sr.Status) {
		old := sr.Status.DeepCopy()
		sr.Status = status
		// Update, not patch: the write must fail if the status changed since it
		// was read, or two coordinators could interleave their decisions.
		if err := r.Client.Status().Update(ctx, sr); err != nil {
			if apierrors.IsConflict(err) {
				// Another writer moved the status on: look again at once.
				return reconcile.Result{RequeueAfter: time.Millisecond}, nil
			}
			return reconcile.Result{}, fmt.Errorf("writing the ShardRing status: %w", err)
		}
		r.recordEvents(sr, old, &status, members, res)
		if res.changed {
			log.Info("Assignment changed", "ring", klog.KObj(sr), "epoch", status.Epoch,
				"started", res.started, "completed", res.completed, "cancelled", res.cancelled,
				"moving", status.MovingSlots, "unowned", status.UnownedSlots)
		}
	}
	r.Metrics.observe(sr.Name, &status, res, r.timings.step(table, res.next, now))

	return reconcile.Result{RequeueAfter: r.requeueAfter(now, wait)}, nil
}

// members returns the Tracker's view of the ring's members, checked against
// the API server itself wherever it would take slots away. The Tracker learns
// of the Leases through a watch, and a watch can fall behind or stall without
// an error: a member it shows silent or released may have renewed, or come
// back under its name, since. So every member that is not live by the
// Tracker, or unknown to it, and that still owns slots or takes part in a
// move, is read from the API server before this step plans: a read that
// returns the version the Tracker holds leaves the judgement as it is (for an
// expiry: the member has written nothing for a lease duration by this
// member's own clock), a newer version counts as a change seen now. Members
// with nothing to take cost no read.
func (r *Reconciler) members(ctx context.Context, sr *shardingv1alpha1.ShardRing) ([]membership.MemberInfo, error) {
	members := r.Tracker.Members()
	live := make(map[string]bool, len(members))
	for _, m := range members {
		live[m.LeaseName] = m.Live
	}
	holding := map[string]bool{}
	for _, m := range sr.Status.Members {
		if m.SlotCount > 0 {
			holding[membership.LeaseName(sr.Name, m.Name)] = true
		}
	}
	for _, mv := range sr.Status.Moves {
		holding[membership.LeaseName(sr.Name, mv.From)] = true
		holding[membership.LeaseName(sr.Name, mv.To)] = true
	}
	read := false
	for _, name := range slices.Sorted(maps.Keys(holding)) {
		if live[name] {
			continue
		}
		lease := &coordinationv1.Lease{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: sr.Namespace, Name: name}, lease)
		switch {
		case apierrors.IsNotFound(err):
			r.Tracker.Forget(name)
		case err != nil:
			return nil, fmt.Errorf("reading Lease %s to confirm what the watch shows: %w", name, err)
		default:
			r.Tracker.Observe(lease)
		}
		read = true
	}
	if read {
		members = r.Tracker.Members()
	}
	return members, nil
}

// shouldRebalance decides whether this step may compute a new target, and if
// not, how long to wait. A change of membership is applied once the set of
// live members has been quiet for RebalanceQuiet (at most RebalanceMaxDelay
// after it was first seen), so that a StatefulSet scaling from 3 to 10 causes
// one or two rebalances, not seven. Slots whose owner died are given out at
// once: waiting would only leave them unserved.
func (r *Reconciler) shouldRebalance(t *assignment.Table, members []membership.MemberInfo, opts ring.Options, now time.Time) (bool, time.Duration, error) {
	var live []string
	ownerGone := false
	liveSet := map[string]bool{}
	for _, m := range members {
		if m.Live {
			live = append(live, m.Name)
			liveSet[m.Name] = true
		}
	}
	for _, owner := range t.Owner {
		if owner != "" && !liveSet[owner] {
			ownerGone = true
			break
		}
	}
	if key := strings.Join(live, ","); key != r.liveSet {
		r.liveSet, r.liveChangedAt = key, now
	}
	need, err := needsRebalance(t, members, opts)
	if err != nil || !need {
		r.pendingSince = time.Time{}
		return false, 0, err
	}
	if r.pendingSince.IsZero() {
		r.pendingSince = now
	}
	if ownerGone && t.Epoch > 0 {
		return true, 0, nil
	}
	quietLeft := r.Options.RebalanceQuiet - now.Sub(r.liveChangedAt)
	maxLeft := r.Options.RebalanceMaxDelay - now.Sub(r.pendingSince)
	if wait := min(quietLeft, maxLeft); wait > 0 {
		return false, wait, nil
	}
	return true, 0, nil
}

// requeueAfter returns when to look again even if nothing changes: when a
// debounce ends, when a live member would expire, and at the resync period.
func (r *Reconciler) requeueAfter(now time.Time, wait time.Duration) time.Duration {
	after := r.Options.Resync
	if wait > 0 {
		after = min(after, wait)
	}
	if at, ok := r.Tracker.NextExpiry(); ok {
		// A little past the expiry, so that the next step sees it expired.
		after = min(after, max(at.Sub(now), 0)+100*time.Millisecond)
	}
	return after
}

func (r *Reconciler) writeInvalid(ctx context.Context, sr *shardingv1alpha1.ShardRing, cause error) error {
	status := invalidRingStatus(&sr.Status, sr.Generation, cause.Error())
	if !apiequality.Semantic.DeepEqual(status, sr.Status) {
		sr.Status = status
		if err := r.Client.Status().Update(ctx, sr); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("recording that the ring is invalid (%w): %w", cause, err)
		}
		r.Recorder.Eventf(sr, nil, corev1.EventTypeWarning, ReasonInvalidRing, "Coordinate", "%v", cause)
	}
	return reconcile.TerminalError(cause)
}

// reportLeaseAnomalies records, once each, a Warning event for every Lease
// with the ring's label that the Tracker found wrong: one that is no member's
// own (ignored), or a member's held in another name.
func (r *Reconciler) reportLeaseAnomalies(ctx context.Context, sr *shardingv1alpha1.ShardRing) {
	anomalies := r.Tracker.Anomalies()
	for lease, why := range anomalies {
		if r.reported[lease] == why {
			continue
		}
		r.Recorder.Eventf(sr, nil, corev1.EventTypeWarning, ReasonLeaseAnomaly, "Observe", "Lease %s: %s", lease, why)
		logf.FromContext(ctx).Info("A Lease with the ring's label is wrong", "lease", lease, "problem", why)
	}
	r.reported = anomalies
}

// recordEvents records joins, leaves, expiries and rebalances. A member that
// left is dropped from the status once its slots are given out, so each event
// is recorded once.
func (r *Reconciler) recordEvents(sr *shardingv1alpha1.ShardRing, old, cur *shardingv1alpha1.ShardRingStatus, members []membership.MemberInfo, res planResult) {
	before := map[string]shardingv1alpha1.MemberState{}
	for _, m := range old.Members {
		before[m.Name] = m.State
	}
	for _, m := range members {
		prev, known := before[m.Name]
		switch {
		case m.Live && !known:
			r.Recorder.Eventf(sr, nil, corev1.EventTypeNormal, "MemberJoined", "Join", "Member %s joined", m.Name)
		case m.Released && known && prev != shardingv1alpha1.MemberLeaving:
			r.Recorder.Eventf(sr, nil, corev1.EventTypeNormal, "MemberLeft", "Leave", "Member %s released its Lease", m.Name)
		case m.Expired && known && prev != shardingv1alpha1.MemberExpired:
			r.Recorder.Eventf(sr, nil, corev1.EventTypeWarning, "MemberExpired", "Expire",
				"Member %s stopped renewing its Lease; its slots are given to live members", m.Name)
		}
	}
	if res.started > 0 {
		r.Recorder.Eventf(sr, nil, corev1.EventTypeNormal, "RebalanceStarted", "Rebalance", "Moving %d slots (epoch %d)", res.started, cur.Epoch)
	}
	if old.MovingSlots > 0 && cur.MovingSlots == 0 {
		r.Recorder.Eventf(sr, nil, corev1.EventTypeNormal, "RebalanceFinished", "Rebalance", "No slot is moving (epoch %d, %d members)", cur.Epoch, cur.MemberCount)
	}
}

// ringOptions reads the ring's tuning from its spec.
func ringOptions(sr *shardingv1alpha1.ShardRing) (ring.Options, error) {
	opts := ring.Options{Slots: int(sr.Spec.Slots)}
	if opts.Slots == 0 {
		opts.Slots = ring.DefaultSlots
	}
	if sr.Spec.LoadFactor != "" {
		lf, err := strconv.ParseFloat(sr.Spec.LoadFactor, 64)
		if err != nil || lf <= 1 {
			return ring.Options{}, fmt.Errorf("spec.loadFactor %q is not a decimal greater than 1", sr.Spec.LoadFactor)
		}
		opts.LoadFactor = lf
	}
	return opts, nil
}
