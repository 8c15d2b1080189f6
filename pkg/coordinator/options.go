package coordinator

import (
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// DefaultRebalanceQuiet is Options.RebalanceQuiet's default.
const DefaultRebalanceQuiet = 3 * time.Second

// Options configure the coordinator of one ring.
type Options struct {
	// Ring is the ShardRing to coordinate. Required.
	Ring types.NamespacedName

	// RebalanceQuiet is how long the set of live members must stay unchanged
	// before a join or a leave changes the target assignment. Default 3s:
	// longer than the gap between the pods of one StatefulSet scale-up.
	RebalanceQuiet time.Duration

	// RebalanceMaxDelay bounds how long a needed rebalance waits for quiet.
	// Default 15s.
	RebalanceMaxDelay time.Duration

	// Resync is how often the coordinator looks again when nothing happens.
	// Default 30s.
	Resync time.Duration

	// Clock is the coordinator's clock. Default: the real clock.
	Clock clock.PassiveClock
}

func (o Options) withDefaults() Options {
	if o.RebalanceQuiet == 0 {
		o.RebalanceQuiet = DefaultRebalanceQuiet
	}
	if o.RebalanceMaxDelay == 0 {
		o.RebalanceMaxDelay = 15 * time.Second
	}
	if o.Resync == 0 {
		o.Resync = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

func (o Options) validate() error {
	if o.Ring.Name == "" || o.Ring.Namespace == "" {
		return errors.New("coordinator: Options.Ring needs a namespace and a name")
	}
	if o.RebalanceQuiet < 0 || o.RebalanceMaxDelay < 0 || o.Resync <= 0 {
		return errors.New("coordinator: durations must not be negative")
	}
	return nil
}
