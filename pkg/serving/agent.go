package serving

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// A member writes its own Lease and reads its ring, both in the ring's
// namespace; it needs no Lease anywhere else.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update,namespace=system
// +kubebuilder:rbac:groups=sharding.kubeshard.dev,resources=shardrings,verbs=get;list;watch,namespace=system

// Agent is the member's side of the ring. Start runs the member's Lease and,
// on shutdown, leaves gracefully; Reconcile follows the ShardRing status and
// opens and closes slots on the Gate in the order that keeps the invariant:
//
//   - losing a slot: close it, wait for its reconciles in flight, then publish
//     a serving list without it (the coordinator completes the move only then);
//   - gaining a slot: publish a serving list with it first, then open it, so the
//     published list always covers every slot the member may work on.
type Agent struct {
	opts    Options
	client  client.Client
	reader  client.Reader
	member  *membership.Member
	gate    *Gate
	metrics *Metrics

	// mu serialises Reconcile; controller-runtime already runs one at a time
	// per controller, but tests and the graceful leave call in directly.
	// fencedCh is closed when the member fences itself, so that reconciles in
	// flight can be told to stop.
	fencedCh   chan struct{}
	fencedOnce sync.Once

	mu        sync.Mutex
	seenEpoch int64 // the newest epoch followed, or the floor read at start
	floorRead bool
	published []int
	pubEpoch  int64
	// prepared are the slots OnGain has set up (the cache lists them) and
	// OnLose has not taken down. A failed OnGain leaves its slots open on
	// the gate but not prepared, so that the next follow tries again.
	prepared []int
	// gainHeld is when OnGain was first held back for slots still on their
	// way (Options.GainWindow); zero when it is not.
	gainHeld time.Time
	// warming are the slots Warmer.Warm was asked to cache that are neither
	// served yet (OnGain adopts them) nor cooled; publishedWarm is what the
	// Lease last said of them.
	warming       []int
	publishedWarm []int
	// keepSince is when the member first kept serving slots that are moving
	// away, for the receiver to warm them; zero when it keeps none.
	keepSince time.Time
	leaving   bool
}

// NewAgent returns the agent of one member. c writes the member's Lease (it
// should read from the API server, not a cache); reader reads the ShardRing
// (the manager's cache is right). metrics may be nil.
func NewAgent(c client.Client, reader client.Reader, opts Options, metrics *Metrics) (*Agent, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, client: c, reader: reader, metrics: metrics, fencedCh: make(chan struct{})}
	member, err := membership.NewMember(c, membership.Options{
		Ring:          opts.Ring.Name,
		Namespace:     opts.Ring.Namespace,
		Name:          opts.Member,
		LeaseDuration: opts.LeaseDuration,
		RenewDeadline: opts.RenewDeadline,
		RetryPeriod:   opts.RetryPeriod,
		Slots:         opts.Slots,
		Clock:         opts.Clock,
		OnFenced:      a.fenced,
		Annotations:   opts.LeaseAnnotations,
	})
	if err != nil {
		return nil, err
	}
	a.member = member
	a.gate = NewGate(opts.Slots, member.Valid)
	if a.warms() {
		member.SetWarm(nil) // tells the members giving it slots to wait for it
	}
	return a, nil
}

// Gate admits reconciles of the slots this member serves.
func (a *Agent) Gate() *Gate { return a.gate }

// Member is the member's Lease.
func (a *Agent) Member() *membership.Member { return a.member }

// NeedLeaderElection is false: every member runs its agent.
func (a *Agent) NeedLeaderElection() bool { return false }

// Start holds the member's Lease until ctx ends, then leaves gracefully: it
// stops admitting reconciles, waits for those in flight (at most
// DrainTimeout), and releases the Lease so that the coordinator reassigns the
// slots at once. It returns an error wrapping membership.ErrFenced when the
// member fenced itself; the process should then exit non-zero.
func (a *Agent) Start(ctx context.Context) error {
	err := a.member.Run(ctx)
	if errors.Is(err, membership.ErrFenced) {
		return err
	}
	// The manager's context is gone; leaving needs one of its own.
	leaveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.DrainTimeout+a.opts.RenewDeadline)
	defer cancel()
	return errors.Join(err, a.Leave(leaveCtx))
}

// Leave stops serving, waits for the reconciles in flight (at most
// DrainTimeout) and releases the Lease. Start calls it when its context ends.
func (a *Agent) Leave(ctx context.Context) error {
	log := logf.FromContext(ctx).WithValues("ring", a.opts.Ring.Name, "member", a.opts.Member)
	a.mu.Lock()
	a.leaving = true
	a.mu.Unlock()
	slots := a.gate.CloseAll()
	drainCtx, cancel := context.WithTimeout(ctx, a.opts.DrainTimeout)
	defer cancel()
	if err := a.gate.Drain(drainCtx, slots); err != nil {
		// Releasing now would let another member take the slots while a
		// reconcile still runs here. Leave the Lease to expire instead: that
		// gives the reconcile a lease duration more to notice its cancelled
		// context, and the slots move on all the same.
		return fmt.Errorf("leaving without releasing the lease: %w", err)
	}
	if a.opts.OnLose != nil && len(slots) > 0 {
		a.opts.OnLose(slots)
	}
	a.mu.Lock()
	a.prepared = nil
	a.mu.Unlock()
	a.metrics.setServed(a.opts.Ring.Name, 0)
	if err := a.member.Release(ctx); err != nil {
		return fmt.Errorf("releasing the member lease: %w", err)
	}
	log.Info("Left the ring", "slots", len(slots))
	return nil
}

// fenced runs when the member could not renew its Lease in time: it stops
// admitting reconciles at once. The coordinator gives the slots to others
// once the Lease expires.
func (a *Agent) fenced() {
	a.gate.CloseAll()
	a.fencedOnce.Do(func() { close(a.fencedCh) })
	a.metrics.fenced(a.opts.Ring.Name)
}

// Admit admits one reconcile of an object of slot; the caller must call
// leave when it ends. When it refuses, retryAfter says whether to try again:
//
//   - zero: the slot is not this member's (never was, or was handed over).
//     Its owner's cache delivers the object to the owner, so the request
//     can be dropped.
//   - positive: the slot is this member's but its Lease is overdue, because a
//     renewal is late (a slow or restarting API server). The renewal either
//     succeeds, and the member serves on, or fails, and the member fences
//     itself. In the first case nothing else would bring the request back,
//     a RequeueAfter in particular: it must be retried, not dropped.
func (a *Agent) Admit(slot int) (leave func(), retryAfter time.Duration, ok bool) {
	if leave, ok := a.gate.Enter(slot); ok {
		return leave, 0, true
	}
	if a.gate.IsServed(slot) && !a.member.Fenced() {
		a.metrics.refused(a.opts.Ring.Name, reasonLeaseOverdue)
		return nil, a.opts.RetryPeriod, false
	}
	a.metrics.refused(a.opts.Ring.Name, reasonNotServed)
	return nil, 0, false
}

// ErrLeaseLapsed is the cause of a guarded reconcile's cancelled context:
// the member's Lease was not renewed in time, and another member may serve
// the slot soon.
var ErrLeaseLapsed = errors.New("this member's Lease lapsed: another member may serve the slot")

// Guard returns the context for one admitted reconcile. It is cancelled,
// with cause ErrLeaseLapsed, as soon as the member's last renewal is
// RenewDeadline old or the member has fenced itself. The renewal loop fences
// the member at that point too, but it looks only every RetryPeriod; after a
// pause (SIGSTOP, a long GC pause, a frozen VM) this timer is already due
// when the process runs again, so the reconcile's next request to the API
// server fails instead of acting on a slot that may have moved. Call cancel
// when the reconcile ends.
func (a *Agent) Guard(ctx context.Context) (guarded context.Context, cancel context.CancelFunc) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	go func() {
		for {
			deadline := a.member.LastRenewal().Add(a.opts.RenewDeadline)
			t := a.opts.Clock.NewTimer(deadline.Sub(a.opts.Clock.Now()))
			select {
			case <-t.C():
				if !a.member.Valid() {
					cancelCause(ErrLeaseLapsed)
					return
				}
				// Renewed meanwhile: wait for the next deadline.
			case <-a.fencedCh:
				t.Stop()
				cancelCause(ErrLeaseLapsed)
				return
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}()
	return ctx, func() { cancelCause(nil) }
}

// Fenced is closed when the member has fenced itself: from then on it serves
// nothing, and reconciles still running should stop.
func (a *Agent) Fenced() <-chan struct{} { return a.fencedCh }

// Reconcile follows the ring's assignment: it is the handler of a controller
// that watches the ShardRing on every member.
func (a *Agent) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.NamespacedName != a.opts.Ring {
		return reconcile.Result{}, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leaving {
		return reconcile.Result{}, nil
	}
	if !a.member.Valid() {
		// Not acquired yet, or fenced: serve nothing, look again soon.
		return reconcile.Result{RequeueAfter: a.opts.RetryPeriod}, nil
	}
	if !a.floorRead {
		// A cache can hold an old status, from before moves that took slots
		// away from this member (from a previous incarnation of it, after a
		// restart). Acting on one could serve a slot another member now
		// serves. A direct read is linearizable: nothing older than it is
		// followed.
		sr := &shardingv1alpha1.ShardRing{}
		if err := a.client.Get(ctx, a.opts.Ring, sr); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(fmt.Errorf("reading the ring's current epoch: %w", err))
		}
		a.seenEpoch, a.floorRead = sr.Status.Epoch, true
	}
	sr := &shardingv1alpha1.ShardRing{}
	if err := a.reader.Get(ctx, a.opts.Ring, sr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	table := assignment.New(a.opts.Slots)
	if sr.Status.Epoch > 0 {
		var err error
		if table, err = assignment.FromStatus(&sr.Status, a.opts.Slots); err != nil {
			return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("reading the ring's assignment: %w", err))
		}
	}
	if table.Epoch < a.seenEpoch {
		// Older than what was followed or read directly: wait for the cache
		// to catch up (its update triggers another reconcile).
		return reconcile.Result{}, nil
	}
	a.seenEpoch = table.Epoch
	hold, err := a.follow(ctx, table)
	return reconcile.Result{RequeueAfter: hold}, err
}

// follow applies one assignment: close and drain what is lost, publish, open
// what is gained. It returns how long OnGain is held back, if it is, for
// slots still on their way.
func (a *Agent) follow(ctx context.Context, table *assignment.Table) (time.Duration, error) {
	log := logf.FromContext(ctx).WithValues("ring", a.opts.Ring.Name, "member", a.opts.Member, "epoch", table.Epoch)
	served := a.gate.Served()
	keep, keepFor := a.keepForWarmup(ctx, table, served)
	want := union(table.Servable(a.opts.Member), keep)
	// What the member may still be working on is what it serves plus what it
	// last published: a slot closed by an earlier attempt whose drain did not
	// finish is still in the published list, and must be drained before a
	// list without it goes out.
	lose := difference(union(served, a.published), want)
	gain := difference(want, served)

	if len(lose) > 0 {
		start := a.opts.Clock.Now()
		a.gate.Close(lose)
		if err := a.gate.Drain(ctx, lose); err != nil {
			return 0, err
		}
		if a.opts.OnLose != nil {
			a.opts.OnLose(lose)
		}
		a.prepared = difference(a.prepared, lose)
		a.metrics.released(a.opts.Ring.Name, len(lose), a.opts.Clock.Since(start))
		log.V(1).Info("Stopped serving slots", "slots", len(lose))
	}

	if !slices.Equal(want, a.published) || table.Epoch > a.pubEpoch {
		a.member.SetServing(want, table.Epoch)
		if err := a.member.PublishServing(ctx); err != nil {
			return 0, fmt.Errorf("publishing the served slots: %w", err)
		}
		a.published, a.pubEpoch = want, table.Epoch
	}

	if len(gain) > 0 {
		a.gate.Open(gain)
		log.V(1).Info("Started serving slots", "slots", len(gain))
	}
	warmFor, incoming, err := a.warmIncoming(ctx, table, want)
	if err != nil {
		return 0, err
	}
	a.metrics.setWarmup(a.opts.Ring.Name, len(incoming), len(a.publishedWarm), len(keep))
	requeue := shortest(keepFor, warmFor)
	// Not only the slots gained now: an earlier OnGain may have failed
	// (its cache did not sync in time) after its slots were opened. Until
	// it succeeds their objects are not delivered, and nothing but this
	// retry would ever deliver them.
	unprepared := difference(want, a.prepared)
	if a.opts.OnGain == nil {
		unprepared = nil
	}
	// Slots the Warmer cached need no list: they are set up at once, not
	// held back with the rest.
	if warm := intersection(unprepared, a.warming); len(warm) > 0 {
		if err := a.opts.OnGain(ctx, warm); err != nil {
			return 0, fmt.Errorf("starting to serve %d warm slots: %w", len(warm), err)
		}
		a.prepared = union(a.prepared, warm)
		a.warming = difference(a.warming, warm)
		unprepared = difference(unprepared, warm)
	}
	if len(unprepared) > 0 {
		if hold := a.holdGain(table); hold > 0 {
			log.V(1).Info("Holding back the cache of gained slots until the rest arrive", "slots", len(unprepared),
				"incoming", table.Incoming(a.opts.Member), "atMost", hold)
			return shortest(hold, requeue), nil
		}
		if err := a.opts.OnGain(ctx, unprepared); err != nil {
			return 0, fmt.Errorf("starting to serve %d slots: %w", len(unprepared), err)
		}
		a.prepared = union(a.prepared, unprepared)
	} else {
		a.gainHeld = time.Time{} // nothing held back: a later gain gets a whole window
	}
	a.metrics.setServed(a.opts.Ring.Name, len(want))
	return requeue, nil
}

func (a *Agent) warms() bool { return a.opts.Warmer != nil && a.opts.WarmupTimeout >= 0 }

// keepForWarmup returns the served slots that are moving away but that the
// member keeps serving until their receiver has warmed them, and how soon
// to look again. It lets go of every slot once WarmupTimeout has passed
// since it first kept some, and at once of those whose receiver does not
// warm slots. Keeping a slot is safe: the coordinator completes its move
// only when the member publishes a serving list without it, and the
// receiver serves it only after that.
func (a *Agent) keepForWarmup(ctx context.Context, table *assignment.Table, served []int) ([]int, time.Duration) {
	if a.opts.WarmupTimeout < 0 {
		return nil, 0
	}
	moving := map[string][]int{}
	for _, s := range served {
		if to := table.MoveTo[s]; to != "" && table.Owner[s] == a.opts.Member {
			if _, published := slices.BinarySearch(a.published, s); published {
				moving[to] = append(moving[to], s)
			}
		}
	}
	if len(moving) == 0 {
		a.keepSince = time.Time{}
		return nil, 0
	}
	now := a.opts.Clock.Now()
	if a.keepSince.IsZero() {
		a.keepSince = now
	}
	left := a.opts.WarmupTimeout - now.Sub(a.keepSince)
	if left <= 0 {
		return nil, 0
	}
	log := logf.FromContext(ctx).WithValues("ring", a.opts.Ring.Name, "member", a.opts.Member)
	var keep []int
	for to, slots := range moving {
		warm, warms, err := membership.ReadWarm(ctx, a.client, a.opts.Ring.Namespace, a.opts.Ring.Name, to, a.opts.Slots)
		switch {
		case err != nil:
			log.Error(err, "Cannot tell whether the receiver of slots has warmed them; keeping them until it can", "receiver", to)
			keep = append(keep, slots...)
		case warms:
			keep = append(keep, difference(slots, warm)...)
		}
	}
	if len(keep) == 0 {
		return nil, 0
	}
	slices.Sort(keep)
	return keep, min(left, a.opts.RetryPeriod)
}

// warmIncoming has the Warmer cache the slots on their way to the member and
// publishes those that are warm. It returns how soon to look again while
// some are not, and the incoming slots.
func (a *Agent) warmIncoming(ctx context.Context, table *assignment.Table, want []int) (again time.Duration, incoming []int, err error) {
	if !a.warms() {
		return 0, nil, nil
	}
	for s, to := range table.MoveTo {
		if to == a.opts.Member {
			incoming = append(incoming, s)
		}
	}
	// Warming slots that neither come any more nor are the member's: their
	// move was cancelled.
	if cancelled := difference(difference(a.warming, incoming), want); len(cancelled) > 0 {
		a.opts.Warmer.Cool(cancelled)
		a.warming = difference(a.warming, cancelled)
	}
	if start := difference(incoming, a.warming); len(start) > 0 {
		// Warming only spares the slots a wait; a failure must not keep the
		// member from following the ring. It is tried again on the next look.
		if err := a.opts.Warmer.Warm(ctx, start); err != nil {
			logf.FromContext(ctx).Error(err, "Cannot warm incoming slots; trying again", "ring", a.opts.Ring.Name,
				"member", a.opts.Member, "slots", len(start))
		} else {
			a.warming = union(a.warming, start)
		}
	}
	warm := a.opts.Warmer.Warmed(incoming)
	if !slices.Equal(warm, a.publishedWarm) {
		a.member.SetWarm(warm)
		if err := a.member.PublishServing(ctx); err != nil {
			return 0, incoming, fmt.Errorf("publishing the warm slots: %w", err)
		}
		a.publishedWarm = warm
	}
	if len(warm) < len(incoming) {
		return a.opts.RetryPeriod, incoming, nil
	}
	return 0, incoming, nil
}

// shortest returns the shorter of two requeue delays, 0 meaning none.
func shortest(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}

// holdGain says how much longer OnGain waits for the slots still on their
// way to this member, counted from the first time it held back within
// Options.GainWindow; 0 or less: call it now.
func (a *Agent) holdGain(table *assignment.Table) time.Duration {
	if a.opts.GainWindow < 0 || table.Incoming(a.opts.Member) == 0 {
		a.gainHeld = time.Time{}
		return 0
	}
	now := a.opts.Clock.Now()
	if a.gainHeld.IsZero() {
		a.gainHeld = now
	}
	hold := a.opts.GainWindow - now.Sub(a.gainHeld)
	if hold <= 0 {
		// The window is spent: set up what is here; what arrives later
		// gets a window of its own.
		a.gainHeld = time.Time{}
	}
	return hold
}

// union returns the sorted slots in a or b (both sorted).
func union(a, b []int) []int {
	return slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a), b...))))
}

// intersection returns the sorted slots in both a and b (both sorted).
func intersection(a, b []int) []int {
	var out []int
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); found {
			out = append(out, s)
		}
	}
	return out
}

// difference returns the sorted slots of a that are not in b (both sorted).
func difference(a, b []int) []int {
	var out []int
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			out = append(out, s)
		}
	}
	return out
}
