package serving

import (
	"context"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// DefaultDrainTimeout is Options.DrainTimeout's default.
const DefaultDrainTimeout = 30 * time.Second

// DefaultGainWindow is Options.GainWindow's default.
const DefaultGainWindow = 10 * time.Second

// DefaultWarmupTimeout is Options.WarmupTimeout's default: longer than a
// list of a fifth of a million objects without the API server's watch
// cache takes. Letting go of a slot before a live receiver has cached it
// never gets it reconciled sooner (the receiver needs its list either way);
// the timeout only keeps a receiver that never gets warm from holding a
// rebalance up for good, and meanwhile the slot is served.
const DefaultWarmupTimeout = 10 * time.Minute

// Warmer fills a member's cache with slots on their way to it before it
// serves them; the sharded cache (shardcache.Cache) is one.
type Warmer interface {
	// Warm starts caching slots without serving them. It returns at once.
	Warm(ctx context.Context, slots []int) error
	// Warmed returns those of slots whose objects are cached: OnGain of them
	// then needs no list.
	Warmed(slots []int) []int
	// Cool gives up warming slots that will not come.
	Cool(slots []int)
}

// Options configure a member's Agent.
type Options struct {
	// Ring is the ShardRing the member belongs to. Required.
	Ring types.NamespacedName

	// Member is the member's identity, its pod name. Required.
	Member string

	// Slots is the ring's spec.slots. Default ring.DefaultSlots (1024).
	Slots int

	// LeaseDuration, RenewDeadline and RetryPeriod tune the member's Lease
	// (see membership.Options). Defaults 15s, 10s and 2s; when only
	// LeaseDuration is set, the other two keep its proportions (2/3, 2/15).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// DrainTimeout bounds how long a graceful leave waits for reconciles in
	// flight before it releases the Lease anyway. Default 30s; keep it below the
	// pod's terminationGracePeriodSeconds.
	DrainTimeout time.Duration

	// OnGain is called after the member starts serving slots, for instance to
	// start watching them. An error is retried. Optional.
	OnGain func(ctx context.Context, slots []int) error

	// GainWindow is how long the member holds back OnGain while more slots
	// are on their way to it (a rebalance hands a member its slots in a few
	// epochs, one per member that gives some), so that OnGain sets up the
	// slots of one rebalance in one call: a cache then lists them once. That
	// matters where every list reads every object of the kind, as it does
	// without the API server's watch cache. The slots are served meanwhile;
	// their objects simply arrive later. Default 10s; negative calls OnGain
	// at once for every batch.
	GainWindow time.Duration

	// Warmer, with WarmupTimeout not negative, makes handovers to this
	// member warm: while a pending move brings it a slot, the member caches
	// the slot's objects and publishes the slot as warm on its Lease
	// (AnnotationWarm); OnGain then finds them cached. Optional.
	Warmer Warmer

	// WarmupTimeout is how long a member giving slots away keeps serving
	// them while the receiver warms them: it lets go once the receiver's
	// Lease lists them as warm, or when this much time has passed since it
	// saw the move, or at once if the receiver does not warm slots. The
	// slots are served by the old owner meanwhile, so a handover costs the
	// time the receiver's list takes in rebalance time, not in time during
	// which nobody reconciles them. Default 10m; negative: let go at once, and
	// warm nothing.
	WarmupTimeout time.Duration

	// LeaseAnnotations are written on the member's Lease beside its own
	// (membership.Options.Annotations). Optional.
	LeaseAnnotations map[string]string

	// OnLose is called after the member stopped serving slots and no
	// reconcile of them runs any more, for instance to drop them from a cache.
	// Optional.
	OnLose func(slots []int)

	// Clock is the member's clock. Default: the real clock.
	Clock clock.WithTicker
}

func (o Options) withDefaults() Options {
	if o.Slots == 0 {
		o.Slots = ring.DefaultSlots
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = membership.DefaultLeaseDuration
	}
	renewDeadline, retryPeriod := membership.Timings(o.LeaseDuration)
	if o.RenewDeadline == 0 {
		o.RenewDeadline = renewDeadline
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = retryPeriod
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.GainWindow == 0 {
		o.GainWindow = DefaultGainWindow
	}
	if o.WarmupTimeout == 0 {
		o.WarmupTimeout = DefaultWarmupTimeout
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Ring.Name == "" || o.Ring.Namespace == "":
		return errors.New("serving: Options.Ring needs a namespace and a name")
	case o.Member == "":
		return errors.New("serving: Options.Member is required (the pod name)")
	case o.Slots < 1:
		return errors.New("serving: Options.Slots must be at least 1")
	}
	return nil
}
