package membership

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// The defaults are client-go leader election's: a member that cannot renew
// stops serving 5 s before any observer may call it dead, which leaves room for
// watch latency and for clocks that run at slightly different rates.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Timings returns the renew deadline and the retry period that go with a
// lease duration, in the defaults' proportions (10/15 and 2/15): the member
// Leases and the coordinator's election of one ring both use them, so that
// the ring's leaseDurationSeconds sets how fast either kind of loss is seen.
func Timings(leaseDuration time.Duration) (renewDeadline, retryPeriod time.Duration) {
	return leaseDuration * 2 / 3, leaseDuration * 2 / 15
}

var (
	// ErrFenced means the member went RenewDeadline without a successful
	// renewal and has stopped serving for good. The process should exit non-zero
	// so that its pod restarts with a fresh Member.
	ErrFenced = errors.New("member fenced: lease not renewed within the renew deadline")

	// ErrReleased is returned by PublishServing after Release: a member that has
	// left must not take its Lease back by writing to it.
	ErrReleased = errors.New("member lease released")
)

// errDeadlinePassed tells renewOnce's callers to fence; it never leaves the
// package, where it becomes ErrFenced.
var errDeadlinePassed = errors.New("renew deadline passed")

// Options configure a Member. Ring, Namespace and Name are required; every
// other zero field takes the default documented on it.
type Options struct {
	// Ring is the name of the ShardRing this member belongs to. Required.
	Ring string

	// Namespace is where the member's Lease lives: the ring's namespace. Required.
	Namespace string

	// Name is the member's identity, its pod name. Required. A StatefulSet never
	// runs two pods with one name, which is what lets a restarted member take
	// over its old Lease at once.
	Name string

	// LeaseDuration is how long observers wait after they last saw the Lease
	// change before they call the member dead. It is written to the Lease in
	// whole seconds, rounded up. Default DefaultLeaseDuration (15 s).
	LeaseDuration time.Duration

	// RenewDeadline is how long the member keeps serving without a successful
	// renewal; then it fences itself. Must be less than LeaseDuration.
	// Default DefaultRenewDeadline (10 s).
	RenewDeadline time.Duration

	// RetryPeriod is the time between renewals. Must be less than
	// RenewDeadline, or one failed renewal would fence the member.
	// Default DefaultRetryPeriod (2 s).
	RetryPeriod time.Duration

	// Slots is the ring's number of slots; PublishServing rejects slots outside
	// [0, Slots). Default ring.DefaultSlots (1024).
	Slots int

	// Clock is the source of time for renewals and fencing.
	// Default clock.RealClock{}.
	Clock clock.WithTicker

	// OnFenced, if set, is called once, synchronously, when the member fences
	// itself, before Run (or the PublishServing that noticed) returns ErrFenced.
	// It should stop every slot at once. Optional.
	OnFenced func()

	// Annotations are written on the Lease with every renewal, beside the
	// member's own (such as shardingv1alpha1.AnnotationSnapshotURL). Optional.
	Annotations map[string]string
}

// withDefaults is the one place where zero fields get their defaults.
func (o Options) withDefaults() Options {
	if o.LeaseDuration == 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = DefaultRenewDeadline
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = DefaultRetryPeriod
	}
	if o.Slots == 0 {
		o.Slots = ring.DefaultSlots
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

func (o Options) validate() error {
	if err := validateNames(o.Ring, o.Name); err != nil {
		return err
	}
	if o.Namespace == "" {
		return fmt.Errorf("%w: Namespace is required", ErrInvalidOptions)
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return fmt.Errorf("%w: Namespace %q is not valid: %v", ErrInvalidOptions, o.Namespace, errs)
	}
	if o.RetryPeriod <= 0 {
		return fmt.Errorf("%w: RetryPeriod must be positive, got %v", ErrInvalidOptions, o.RetryPeriod)
	}
	if o.RenewDeadline <= o.RetryPeriod {
		return fmt.Errorf("%w: RenewDeadline (%v) must be greater than RetryPeriod (%v)", ErrInvalidOptions, o.RenewDeadline, o.RetryPeriod)
	}
	if o.LeaseDuration <= o.RenewDeadline {
		return fmt.Errorf("%w: LeaseDuration (%v) must be greater than RenewDeadline (%v)", ErrInvalidOptions, o.LeaseDuration, o.RenewDeadline)
	}
	if o.Slots < 1 {
		return fmt.Errorf("%w: Slots must be at least 1, got %d", ErrInvalidOptions, o.Slots)
	}
	return nil
}

// Member renews one member's Lease and tells the rest of the process whether it
// may still serve. Create it with NewMember and start Run in its own goroutine.
type Member struct {
	client client.Client
	opts   Options
	key    types.NamespacedName

	running atomic.Bool

	// writeMu serialises the read-modify-write of the Lease among Run,
	// PublishServing and Release. Without it a renewal whose Get came after a
	// release would write holderIdentity back and take the Lease again.
	writeMu sync.Mutex

	// mu guards the fields below. It is never held during a request, so Valid
	// stays cheap while a renewal hangs.
	mu          sync.Mutex
	serving     []int
	warm        []int  // AnnotationWarm, written when warms
	warms       bool   // SetWarm was called: the member warms incoming slots
	epoch       int64  // the ring status epoch the serving slots were decided at
	selector    string // AnnotationShardSelector; "" leaves it off
	acquired    bool
	lastRenewal time.Time
	released    bool
	fenced      bool

	fenceOnce sync.Once
	stopOnce  sync.Once
	stopped   chan struct{} // closed by Release, so Run returns without waiting for a tick
}

// NewMember returns a Member that renews the Lease LeaseName(opts.Ring,
// opts.Name) in opts.Namespace. c should read from the API server directly, not
// from a cache: a stale read would only cause conflicts, but a cache of Leases
// is memory the member does not need.
func NewMember(c client.Client, opts Options) (*Member, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: client is required", ErrInvalidOptions)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Member{
		client:  c,
		opts:    opts,
		key:     types.NamespacedName{Namespace: opts.Namespace, Name: LeaseName(opts.Ring, opts.Name)},
		stopped: make(chan struct{}),
	}, nil
}

// Run creates or takes over the member's Lease and renews it every RetryPeriod
// until ctx is cancelled (it returns nil and leaves the Lease to expire or to
// Release), until Release (it returns nil), or until the member fences itself
// (it returns an error wrapping ErrFenced). Run may be called once.
//
// Failures to acquire the Lease in the first place are retried for ever: a
// member that never held its Lease serves nothing, so there is nothing to fence.
func (m *Member) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("membership: Member.Run called more than once")
	}
	log := logf.FromContext(ctx).WithValues("ring", m.opts.Ring, "member", m.opts.Name,
		"lease", klog.KRef(m.key.Namespace, m.key.Name))
	ctx = logf.IntoContext(ctx, log)

	ticker := m.opts.Clock.NewTicker(m.opts.RetryPeriod)
	defer ticker.Stop()
	for {
		if done, err := m.step(ctx); done {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.stopped:
			return nil
		case <-ticker.C():
		}
	}
}

// step is one turn of Run: one renewal attempt, then the fencing check. It
// reports done when Run must return, with Run's error.
func (m *Member) step(ctx context.Context) (done bool, err error) {
	err = m.renewOnce(ctx)
	switch {
	case errors.Is(err, ErrFenced):
		// Checked first, so that a cancellation racing the fence still exits
		// non-zero. If a PublishServing fenced, wait until its OnFenced returned.
		m.fence(ctx)
		return true, err
	case ctx.Err() != nil:
		// A cancelled request is not a renewal failure, and cancellation keeps
		// the Lease: releasing it is the caller's explicit decision.
		return true, nil
	case errors.Is(err, ErrReleased):
		return true, nil
	case apierrors.IsConflict(err):
		// This member's own writes are serialised, so someone else (kubectl, a
		// label controller) wrote the Lease between Get and Update. Renewals are
		// frequent enough that the next tick, with a fresh Get, will do.
		logf.FromContext(ctx).V(1).Info("Lease changed since it was read, renewing at the next tick")
	case err != nil:
		logf.FromContext(ctx).Error(err, "Failed to renew member Lease")
	}
	if m.deadlinePassed() {
		m.fence(ctx)
		return true, fmt.Errorf("renewing lease %s: %w", m.key, ErrFenced)
	}
	return false, nil
}

// renewOnce makes one attempt to create, take over or renew the Lease, writing
// the serving slots as they are now. Conflicts are returned, not retried.
func (m *Member) renewOnce(ctx context.Context) error {
	m.writeMu.Lock()
	err := m.renewLocked(ctx)
	m.writeMu.Unlock()
	if errors.Is(err, errDeadlinePassed) {
		// Fenced outside writeMu: OnFenced may well call Release.
		m.fence(ctx)
		return fmt.Errorf("renewing lease %s: %w", m.key, ErrFenced)
	}
	return err
}

func (m *Member) renewLocked(ctx context.Context) error {
	// Taken before the first request, so that lastRenewal is never later than
	// the moment the API server accepted the renewal.
	now := m.opts.Clock.Now()

	m.mu.Lock()
	released, fenced, acquired, last := m.released, m.fenced, m.acquired, m.lastRenewal
	serving, epoch, selector := m.serving, m.epoch, m.selector
	var warm []int
	if m.warms {
		warm = append([]int{}, m.warm...) // not nil: the annotation is written, empty or not
	}
	m.mu.Unlock()
	switch {
	case released:
		return ErrReleased
	case fenced:
		return fmt.Errorf("renewing lease %s: %w", m.key, ErrFenced)
	}

	// No request may outlive the renew deadline: a hung request would keep Run
	// from fencing on time, and a renewal that reaches the API server later
	// would eat into the margin observers rely on. Before the first acquisition
	// there is no deadline, but a hung request must still not stop the loop.
	budget := m.opts.RenewDeadline
	if acquired {
		budget -= now.Sub(last)
		if budget <= 0 {
			return errDeadlinePassed
		}
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()

	lease := &coordinationv1.Lease{}
	err := m.client.Get(ctx, m.key, lease)
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: m.key.Namespace, Name: m.key.Name}}
		m.fill(lease, now, serving, epoch, selector, warm, true)
		if err := m.client.Create(ctx, lease); err != nil {
			return fmt.Errorf("creating lease %s: %w", m.key, err)
		}
	case err != nil:
		return fmt.Errorf("getting lease %s: %w", m.key, err)
	default:
		// An existing Lease that this Member has not written yet is a previous
		// incarnation's (a restart of the pod): take it over at once.
		m.fill(lease, now, serving, epoch, selector, warm, !acquired)
		if err := m.client.Update(ctx, lease); err != nil {
			return fmt.Errorf("renewing lease %s: %w", m.key, err)
		}
	}

	m.mu.Lock()
	m.acquired = true
	m.lastRenewal = now
	m.mu.Unlock()
	return nil
}

// fill writes everything the member owns on its Lease and keeps the rest
// (labels and annotations of others). acquiring marks the start of a tenure:
// a new acquireTime and, for an existing Lease, one more transition, so that an
// observer can tell a restarted member from one that kept renewing.
func (m *Member) fill(lease *coordinationv1.Lease, now time.Time, serving []int, epoch int64, selector string, warm []int, acquiring bool) {
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[shardingv1alpha1.LabelRing] = m.opts.Ring
	lease.Labels[LabelMember] = m.opts.Name
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	for k, v := range m.opts.Annotations {
		lease.Annotations[k] = v
	}
	// A snapshot URL a previous incarnation published is not this
	// process's: the members gaining its slots would ask it in vain.
	if _, ok := m.opts.Annotations[shardingv1alpha1.AnnotationSnapshotURL]; !ok {
		delete(lease.Annotations, shardingv1alpha1.AnnotationSnapshotURL)
	}
	lease.Annotations[shardingv1alpha1.AnnotationServing] = ring.FormatRanges(serving)
	lease.Annotations[shardingv1alpha1.AnnotationEpoch] = strconv.FormatInt(epoch, 10)
	switch {
	case selector != "":
		lease.Annotations[shardingv1alpha1.AnnotationShardSelector] = selector
	case acquiring:
		// A previous incarnation's finding is not this process's: the
		// API server may have been reconfigured since.
		delete(lease.Annotations, shardingv1alpha1.AnnotationShardSelector)
	}
	if warm != nil {
		lease.Annotations[shardingv1alpha1.AnnotationWarm] = ring.FormatRanges(warm)
	} else {
		delete(lease.Annotations, shardingv1alpha1.AnnotationWarm)
	}

	holder := m.opts.Name
	lease.Spec.HolderIdentity = &holder
	// Rounded up: an observer that waits a little longer is safe, one that
	// waits less than the member's own deadline margin is not.
	seconds := int32(math.Ceil(m.opts.LeaseDuration.Seconds()))
	lease.Spec.LeaseDurationSeconds = &seconds
	renewTime := metav1.NewMicroTime(now)
	lease.Spec.RenewTime = &renewTime
	if acquiring {
		lease.Spec.AcquireTime = &renewTime
		transitions := int32(0)
		if lease.ResourceVersion != "" {
			if lease.Spec.LeaseTransitions != nil {
				transitions = *lease.Spec.LeaseTransitions
			}
			transitions++
		}
		lease.Spec.LeaseTransitions = &transitions
	}
}

// deadlinePassed is the fencing rule: the Lease was held and the last
// successful renewal is RenewDeadline old.
func (m *Member) deadlinePassed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acquired && m.opts.Clock.Since(m.lastRenewal) >= m.opts.RenewDeadline
}

// fence marks the member fenced for good and calls OnFenced once. A second
// caller waits in fenceOnce until OnFenced has returned, so Run never reports
// ErrFenced while slots may still be served.
func (m *Member) fence(ctx context.Context) {
	m.mu.Lock()
	m.fenced = true
	last := m.lastRenewal
	m.mu.Unlock()
	m.fenceOnce.Do(func() {
		logf.FromContext(ctx).Info("Fencing member: lease not renewed within renewDeadline",
			"lastRenewal", last, "renewDeadline", m.opts.RenewDeadline)
		if m.opts.OnFenced != nil {
			m.opts.OnFenced()
		}
	})
}

// Valid reports whether the member may serve right now: it holds its Lease, has
// neither fenced itself nor released the Lease, and renewed it less than
// RenewDeadline ago. The last condition is checked against the clock on every
// call, so Valid turns false at the deadline even before Run notices and fences.
// Call it before every reconcile; it takes one uncontended mutex.
func (m *Member) Valid() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acquired && !m.fenced && !m.released &&
		m.opts.Clock.Since(m.lastRenewal) < m.opts.RenewDeadline
}

// Fenced reports whether the member has fenced itself. It never turns back.
func (m *Member) Fenced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fenced
}

// LastRenewal is the time, by the member's clock, just before the request of
// its last successful renewal; zero before the Lease is first acquired.
func (m *Member) LastRenewal() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastRenewal
}

// SetServing records the slots the member serves now and the newest ring
// status epoch it had seen when it decided them. Every later renewal publishes
// both; call PublishServing when someone waits for them, as a handover does.
// The coordinator completes a move away from this member only once the
// published epoch is at least the move's: an older list may predate a gain the
// member had begun before it saw the move.
func (m *Member) SetServing(slots []int, epoch int64) {
	sorted := slices.Clone(slots)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	m.mu.Lock()
	m.serving = sorted
	m.epoch = max(m.epoch, epoch)
	m.mu.Unlock()
}

// SetShardSelector records what the member found the API server does with its
// shardSelector (shardingv1alpha1.ShardSelectorApplied or ShardSelectorIgnored);
// the next renewal publishes it as AnnotationShardSelector, for the
// coordinator's ServerSideSharding condition.
func (m *Member) SetShardSelector(state string) {
	m.mu.Lock()
	m.selector = state
	m.mu.Unlock()
}

// SetWarm records the slots on their way to the member whose objects its
// cache holds already; the next renewal publishes them as AnnotationWarm
// (call PublishServing to publish at once), empty or not, from the first
// call on. The members giving those slots away read it to know they can let
// go (serving.Options.WarmupTimeout); a member that never calls it
// publishes no annotation, and they let go at once.
func (m *Member) SetWarm(slots []int) {
	sorted := slices.Clone(slots)
	slices.Sort(sorted)
	m.mu.Lock()
	m.warm, m.warms = slices.Compact(sorted), true
	m.mu.Unlock()
}

// Serving returns the slots last given to SetServing, sorted.
func (m *Member) Serving() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.serving)
}

// PublishServing renews the Lease now, writing the current serving slots,
// instead of waiting for the next tick, because the coordinator completes a
// handover only after it has read them. Conflicts are retried. Like any
// renewal it counts for Valid, and it fences the member (calling OnFenced in
// the caller's goroutine) if the renew deadline has already passed.
func (m *Member) PublishServing(ctx context.Context) error {
	for _, s := range m.Serving() {
		if s < 0 || s >= m.opts.Slots {
			// Written anyway, an observer could not parse the list and would have
			// to assume the member serves everything: refuse it here instead.
			return fmt.Errorf("publishing serving slots: slot %d is out of range [0, %d)", s, m.opts.Slots)
		}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return m.renewOnce(ctx) })
	if err != nil {
		return fmt.Errorf("publishing serving slots: %w", err)
	}
	return nil
}

// Release leaves the ring gracefully: one update empties the serving slots and
// holderIdentity, so the coordinator reassigns the slots at once instead of
// waiting for the Lease to expire. The caller must already have stopped serving
// and drained in-flight work.
//
// From the moment Release is called Valid is false and Run stops renewing (it
// returns nil). If the update fails the error is returned and the Lease simply
// expires: a member that is leaving must never keep its Lease alive.
func (m *Member) Release(ctx context.Context) error {
	m.mu.Lock()
	m.released = true
	m.serving, m.warm = nil, nil
	m.mu.Unlock()
	m.stopOnce.Do(func() { close(m.stopped) })

	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease := &coordinationv1.Lease{}
		if err := m.client.Get(ctx, m.key, lease); err != nil {
			return err
		}
		lease.Spec.HolderIdentity = nil
		if lease.Annotations == nil {
			lease.Annotations = map[string]string{}
		}
		lease.Annotations[shardingv1alpha1.AnnotationServing] = ""
		delete(lease.Annotations, shardingv1alpha1.AnnotationWarm)
		return m.client.Update(ctx, lease)
	})
	if apierrors.IsNotFound(err) {
		return nil // never created: there is nothing to hand back
	}
	if err != nil {
		return fmt.Errorf("releasing lease %s: %w", m.key, err)
	}
	return nil
}
