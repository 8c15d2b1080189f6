package sharding

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	ctrl "sigs.k8s.io/controller-runtime"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// client-go's leader election records its events through the core Events API.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=system

// ElectCoordinator turns on the manager's leader election, which picks the
// ring's coordinator, and ties it to the ring: the election Lease
// "<ring>-coordinator" in the ring's namespace, released at once when the
// manager stops (but never on behalf of a successor, see ownRelease),
// renewed on a connection of its own (cfg's, not shared with the manager's
// lists and watches), and timed like the member Leases from the ring's
// leaseDurationSeconds. A coordinator lost with its process is then replaced
// about as fast as any member's loss is noticed, instead of after
// controller-runtime's default 15 s lease whatever the ring says.
//
// The election's renew deadline is a retry period short of the lease, longer
// than a member's two thirds: each renewal request gets half the renew
// deadline, and at a short lease a busy API server answers slower than that.
// A coordinator that misses its deadline exits, and its replica with it; one
// that keeps trying longer delays no successor (the others wait for the lease
// to run out either way) and endangers no slot (every decision is written
// with optimistic concurrency and judged from the coordinator's own
// observations).
func ElectCoordinator(opts *ctrl.Options, cfg *rest.Config, sr *shardingv1alpha1.ShardRing) error {
	lease, _ := leaseTimings(sr)
	_, retryPeriod := membership.Timings(lease)
	renewDeadline := lease - retryPeriod
	lock, err := newElectionLock(cfg, sr, renewDeadline)
	if err != nil {
		return err
	}
	opts.LeaderElection = true
	opts.LeaderElectionID = sr.Name + "-coordinator"
	opts.LeaderElectionNamespace = sr.Namespace
	opts.LeaderElectionReleaseOnCancel = true
	opts.LeaderElectionResourceLockInterface = lock
	opts.LeaseDuration = &lease
	opts.RenewDeadline = &renewDeadline
	opts.RetryPeriod = &retryPeriod
	return nil
}

// newElectionLock returns the Lease lock of the ring's election, as
// controller-runtime would make it (identity "<hostname>_<uuid>", requests
// bounded by half the renew deadline), on a connection of its own, and
// wrapped in ownRelease.
func newElectionLock(cfg *rest.Config, sr *shardingv1alpha1.ShardRing, renewDeadline time.Duration) (*ownRelease, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("naming this replica in the coordinator's election: %w", err)
	}
	cfg = rest.AddUserAgent(ownConnection(cfg), "leader-election")
	cfg.Timeout = max(renewDeadline/2, time.Second)
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the election's client: %w", err)
	}
	coordination, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the election's client: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, sr.Namespace, sr.Name+"-coordinator", core, coordination,
		resourcelock.ResourceLockConfig{Identity: host + "_" + string(uuid.NewUUID())})
	if err != nil {
		return nil, fmt.Errorf("creating the election's lock: %w", err)
	}
	return &ownRelease{Interface: lock}, nil
}

// ownRelease is the election's lock, but for one thing: it releases the
// Lease only while this replica holds it. client-go releases the Lease when
// the election stops (ReleaseOnCancel) if its own last observation says it
// leads, after reading the Lease but without looking at what it read. A
// coordinator paused longer than its lease (a long GC pause, SIGSTOP) wakes
// up believing it leads while a successor holds the Lease, and on its way out
// would release the successor's Lease: the successor then loses its election
// to a third replica and exits. Measured in the end-to-end SIGSTOP scenario
// of the coordinator at a 6 s lease, in 2 runs of 5 before this.
type ownRelease struct {
	resourcelock.Interface

	mu     sync.Mutex
	holder string // in the Lease as last read
}

// Get reads the Lease and remembers who holds it.
func (l *ownRelease) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec, raw, err := l.Interface.Get(ctx)
	if err == nil {
		l.mu.Lock()
		l.holder = rec.HolderIdentity
		l.mu.Unlock()
	}
	return rec, raw, err
}

// Update writes the record, unless it is a release (no holder) of a Lease
// that another replica holds by the last read: then it writes nothing, and
// the release is done as far as this replica is concerned.
func (l *ownRelease) Update(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	l.mu.Lock()
	someoneElses := rec.HolderIdentity == "" && l.holder != "" && l.holder != l.Identity()
	l.mu.Unlock()
	if someoneElses {
		return nil
	}
	err := l.Interface.Update(ctx, rec)
	if err == nil {
		l.mu.Lock()
		l.holder = rec.HolderIdentity
		l.mu.Unlock()
	}
	return err
}
