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
