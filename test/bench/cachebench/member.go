package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

const (
	systemNamespace = "kubeshard-system"
	ringName        = "largedata"
)

// member is one replica of an operator whose LargeData reconciler only
// reads: a controller-runtime manager, sharded (shardcache, sharding.New,
// ring.Reconciler) or not.
type member struct {
	name  string
	mgr   ctrl.Manager
	ring  *sharding.Ring    // nil when not sharded
	cache *shardcache.Cache // nil when not sharded
	wire  *wire
	rec   *counter

	cancel context.CancelFunc
	exited chan struct{} // closed when the manager returned, with err
	err    error
}

type memberOptions struct {
	name    string
	sharded bool
	slots   int
	// leaderLease is the manager's leader election ID: the sharded members
	// elect their coordinator, the unsharded operator runs as usual HA
	// operators do, with one active replica.
	leaderLease string
	watch       *watchlist
	// abort is called when the manager stops without being asked to, for
	// instance when the member fenced itself.
	abort func(error)
}

// Lease timings of the benchmark, twice the defaults (the ShardRing's 15 s
// and controller-runtime's leader election 15/10/2 s): every member, the
// API server and etcd share 2 cores here, with other work, and at the
// default a member that starves for 10 s fences itself and stops.
const (
	leaseSeconds        = 30
	leaderLeaseDuration = 30 * time.Second
	leaderRenewDeadline = 20 * time.Second
	leaderRetryPeriod   = 4 * time.Second
)

// startMember creates and starts a member; it returns once the manager runs.
func startMember(ctx context.Context, env *testenv.Environment, o memberOptions) (*member, error) {
	w := newWire(o.leaderLease)
	cfg := ownConnection(env.Config)
	cfg.Wrap(w.wrap)
	opts := ctrl.Options{
		Scheme:                        env.Scheme,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                true,
		LeaderElectionID:              o.leaderLease,
		LeaderElectionNamespace:       systemNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 ptr.To(leaderLeaseDuration),
		RenewDeadline:                 ptr.To(leaderRenewDeadline),
		RetryPeriod:                   ptr.To(leaderRetryPeriod),
		// Several managers run in this one process.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	}
	if o.sharded {
		opts.NewCache = shardcache.NewCacheFunc(shardcache.Options{
			ShardedObjects: []client.Object{&datav1alpha1.LargeData{}, &corev1.ConfigMap{}},
			Slots:          o.slots,
		})
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("creating the manager of %s: %w", o.name, err)
	}
	// The member's context outlives ctx's cancellation only through stop,
	// so that members leave in order, not all at once with the caller.
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &member{name: o.name, mgr: mgr, wire: w, rec: &counter{watch: o.watch}, cancel: cancel, exited: make(chan struct{})}

	rec := m.rec.inner(mgr.GetClient())
	needLeader := ptr.To(true)
	if o.sharded {
		r, err := sharding.New(mctx, mgr, sharding.Options{
			Ring: ringName, Namespace: systemNamespace, Member: o.name,
			RebalanceQuiet: time.Second,
			// Each member in this process needs its own registry.
			Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("joining %s to the ring: %w", o.name, err)
		}
		m.ring = r
		m.cache = mgr.GetCache().(*shardcache.Cache)
		rec = m.rec.outer(r.Reconciler(rec))
		needLeader = ptr.To(false) // every member reconciles its own slots
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("largedata").
		For(&datav1alpha1.LargeData{}).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: 4, NeedLeaderElection: needLeader,
			// The default of 2 minutes is too short for 100,000 objects on
			// a busy 2-core machine; the manager would give up and stop.
			CacheSyncTimeout: 10 * time.Minute,
		}).
		Complete(rec)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("adding the LargeData controller of %s: %w", o.name, err)
	}
	go func() {
		m.err = mgr.Start(mctx)
		close(m.exited)
		if mctx.Err() == nil && o.abort != nil {
			o.abort(fmt.Errorf("member %s stopped on its own, returning %s", o.name, fmt.Sprint(m.err)))
		}
	}()
	return m, nil
}

// ownConnection returns a copy of cfg whose clients do not share their
// connection with other configs. client-go shares one transport, so one
// HTTP/2 connection, between configs that look alike; one with a proxy
// function gets its own, as a member in its own pod has.
func ownConnection(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	return cfg
}

// stop shuts the member down as SIGTERM would: a sharded member leaves the
// ring gracefully.
func (m *member) stop() error {
	m.cancel()
	select {
	case <-m.exited:
		if m.err != nil {
			return fmt.Errorf("member %s stopped with: %w", m.name, m.err)
		}
		return nil
	case <-time.After(90 * time.Second):
		return fmt.Errorf("member %s did not stop within 90s", m.name)
	}
}

// stopAll stops members concurrently.
func stopAll(ms []*member) error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// counter counts one member's reconciles of LargeData.
type counter struct {
	admitted atomic.Int64 // reconciles that ran the inner reconciler
	requests atomic.Int64 // requests the controller handed to the reconciler
	watch    *watchlist
}

// inner is the operator's reconciler: it reads the object through the
// manager's client, which reads the cache, and writes nothing.
func (c *counter) inner(cl client.Client) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		c.admitted.Add(1)
		ld := &datav1alpha1.LargeData{}
		if err := cl.Get(ctx, req.NamespacedName, ld); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		c.watch.seen(req.NamespacedName, ld.Spec.Seed)
		return reconcile.Result{}, nil
	})
}

// outer counts requests before ring.Reconciler decides whether this member
// serves them.
func (c *counter) outer(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		c.requests.Add(1)
		return r.Reconcile(ctx, req)
	})
}

// watchlist tracks objects until a reconcile has read them with the
// expected spec.seed: then the change was reconciled.
type watchlist struct {
	mu      sync.Mutex
	want    map[types.NamespacedName]int64
	dupes   int // reconciles of objects already done
	done    map[types.NamespacedName]bool
	allDone chan struct{}
}

func newWatchlist() *watchlist { return &watchlist{} }

// expect starts tracking keys, to be reconciled with seed.
func (w *watchlist) expect(keys []types.NamespacedName, seed int64) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = make(map[types.NamespacedName]int64, len(keys))
	w.done = make(map[types.NamespacedName]bool, len(keys))
	for _, k := range keys {
		w.want[k] = seed
	}
	w.dupes = 0
	w.allDone = make(chan struct{})
	return w.allDone
}

func (w *watchlist) seen(key types.NamespacedName, seed int64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done[key] {
		w.dupes++
		return
	}
	if want, ok := w.want[key]; ok && want == seed {
		delete(w.want, key)
		w.done[key] = true
		if len(w.want) == 0 {
			close(w.allDone)
		}
	}
}

func (w *watchlist) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.want)
}

func (w *watchlist) duplicates() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dupes
}

// activity sums what members do that is not time-driven: reconciles and
// requests other than named Lease requests. It stops changing when they are
// idle.
func activity(ms []*member) int64 {
	var n int64
	for _, m := range ms {
		n += m.rec.admitted.Load() + m.rec.requests.Load()
		n += int64(m.wire.snapshot().requests(func(c call) bool { return !isLease(c.Resource) }))
	}
	return n
}

// waitQuiet waits until activity has not changed for quiet and ready holds.
func waitQuiet(ctx context.Context, ms []*member, quiet, timeout time.Duration, ready func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	last, since := activity(ms), time.Now()
	for {
		ok, why := ready()
		if ok && time.Since(since) >= quiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("members %v not quiet within %s (%s)", names(ms), timeout, why)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
		if a := activity(ms); a != last {
			last, since = a, time.Now()
		}
	}
}

func names(ms []*member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.name)
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond every 20 ms and returns how long it took.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) (time.Duration, error) {
	start := time.Now()
	var why string
	for {
		var ok bool
		if ok, why = cond(); ok {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("%s: not within %s (%s)", what, timeout, why)
		}
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
