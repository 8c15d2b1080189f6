package sharding

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kubeshard/kubeshard/pkg/serving"
)

// Options configure a member of a ring.
type Options struct {
	// Ring is the name of the ShardRing. Required.
	Ring string

	// Namespace is the namespace of the ShardRing and of the member Leases,
	// usually the operator's own (POD_NAMESPACE). Required.
	Namespace string

	// Member is this replica's identity, its pod name (POD_NAME). Required.
	Member string

	// DisableCoordinator keeps this replica from ever coordinating the ring or
	// running the labeler. Default false: every replica is a candidate, and the
	// manager's leader election picks one (so enable LeaderElection in the
	// manager's options when more than one replica runs).
	DisableCoordinator bool

	// Webhook registers the slot-label webhook on the manager's webhook
	// server. Default false.
	Webhook bool

	// AdmissionFinalizers are finalizers the webhook sets on every CREATE of
	// an object of these kinds (with Webhook; the webhook configuration must
	// route their creates to it, also in selectorMode ShardSelector, where it
	// sets no label), so that a reconciler does not spend a write per object
	// adding its finalizer. The reconciler must still add it when missing,
	// for objects admitted while the webhook was unreachable. Default: none.
	AdmissionFinalizers map[schema.GroupKind]string

	// RebalanceQuiet is how long membership must be quiet before a join or a
	// leave moves slots (see coordinator.Options). Default 3s.
	RebalanceQuiet time.Duration

	// LabelerSweepInterval is how often the labeler corrects wrong slot
	// labels. Default 10m.
	LabelerSweepInterval time.Duration

	// CacheCompactAfter is how long the sharded cache keeps the objects of
	// slots a member gave away, in informers that also serve slots it kept,
	// before it replaces those informers by ones for the kept slots
	// (shardcache.Options.CompactAfter). The replacements take their objects
	// from the informers they replace and only watch the API server, unless
	// CacheRelistOnCompaction is set or the cache is restricted to some
	// namespaces: then each lists the kept slots, which costs the API server a
	// scan of the kind in etcd when its watch cache is off for the kind. Default
	// 30s.
	CacheCompactAfter time.Duration

	// CacheRelistOnCompaction makes compactions list the kept slots from the
	// API server (shardcache.Options.RelistOnCompaction), as they did before
	// they took them from the informers they replace: for comparison, and a
	// way back should that ever misbehave.
	CacheRelistOnCompaction bool

	// HandoverRate bounds how fast a member that takes over slots in a
	// handover (from a member that served them until then, with the cache
	// warmed beforehand) delivers their objects to its controllers, in
	// objects per second (shardcache.Options.HandoverRate); their changes
	// are delivered at once. Each delivered object is reconciled once more,
	// which the old owner had just done: unbounded, a newcomer that takes
	// over 200,000 objects runs as many reconciles within half a minute, on
	// its own CPU and on what the reconciles read. 0: no limit. The metric
	// kubeshard_member_handover_pending_objects shows what waits.
	HandoverRate float64

	// PeerAddress turns peer snapshots on: it is the host:port where the
	// other members reach this member's metrics server, such as
	// $(POD_IP):8443. The member then serves the objects its cache holds at
	// SnapshotPath there and publishes that URL on its Lease; and when it
	// warms slots it gains (WarmupTimeout), it asks the members serving them
	// for their objects and only watches the API server from there, so that
	// a join costs the API server no list of the sharded kinds (without the
	// watch cache, a scan of every object of the kind in etcd). Any failure
	// lists from the API server as before. The metrics server's
	// authentication and authorization guard the path (ctrl.Options.Metrics;
	// give the members' role get on it); over HTTPS PeerCAFile is required,
	// and plain HTTP is accepted on loopback addresses only. Needs the cache
	// Setup gives the manager and a cache of every namespace. Default: off.
	PeerAddress string

	// PeerCAFile is a PEM bundle of the CA certificates that verify the other
	// members' metrics servers. Required with PeerAddress over HTTPS.
	PeerCAFile string

	// PeerTokenFile holds the bearer token the member shows the other
	// members (re-read as it changes). Default: the token of its API
	// credentials, in a pod its ServiceAccount's, which the members' role
	// lets get SnapshotPath.
	PeerTokenFile string

	// PeerSnapshotTimeout bounds a member's wait for the snapshots of the
	// slots it warms. Default DefaultPeerSnapshotTimeout (2m).
	PeerSnapshotTimeout time.Duration

	// GainWindow is how long a member that gains slots in a rebalance waits
	// for the rest of them, while more are on their way to it, before its
	// cache lists what it gained, so that it lists once
	// (serving.Options.GainWindow). The slots are served meanwhile. Default
	// 10s; negative lists every batch at once.
	GainWindow time.Duration

	// WarmupTimeout makes handovers warm (serving.Options.WarmupTimeout):
	// a member that gains slots in a rebalance caches them while their old
	// owners still serve them, and each old owner lets go of them once the
	// receiver has them cached, or after this much time. No slot then waits
	// for a list to be reconciled. Needs the cache NewCache returns. Default
	// 10m; negative: the old owner lets go at once and the receiver lists
	// after it has the slots.
	WarmupTimeout time.Duration

	// DrainTimeout bounds how long a leaving member waits for its reconciles.
	// Default 30s; keep it below terminationGracePeriodSeconds.
	DrainTimeout time.Duration

	// Registerer receives kubeshard's metrics. Default: controller-runtime's
	// registry, which the manager serves.
	Registerer prometheus.Registerer

	// Clock is the member's clock. Default: the real clock.
	Clock clock.WithTicker
}

func (o Options) withDefaults() Options {
	if o.DrainTimeout == 0 {
		o.DrainTimeout = serving.DefaultDrainTimeout
	}
	if o.Registerer == nil {
		o.Registerer = ctrlmetrics.Registry
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.PeerSnapshotTimeout == 0 {
		o.PeerSnapshotTimeout = DefaultPeerSnapshotTimeout
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Ring == "":
		return errors.New("sharding: Options.Ring is required")
	case o.Namespace == "":
		return errors.New("sharding: Options.Namespace is required (set it from POD_NAMESPACE)")
	case o.Member == "":
		return errors.New("sharding: Options.Member is required (set it from POD_NAME)")
	case o.HandoverRate < 0 || math.IsNaN(o.HandoverRate) || math.IsInf(o.HandoverRate, 0):
		return fmt.Errorf("sharding: Options.HandoverRate is %v; want a number of objects per second, or 0 for no limit", o.HandoverRate)
	}
	return nil
}
