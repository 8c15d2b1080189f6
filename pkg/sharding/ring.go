package sharding

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/coordinator"
	"github.com/kubeshard/kubeshard/pkg/labeler"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/serving"
	"github.com/kubeshard/kubeshard/pkg/slotwebhook"
)

// SlotCache is a cache whose sharded kinds follow the served slots; the
// cache that NewCache returns is one. With another cache the ring still
// reconciles only its slots, but caches every object.
type SlotCache interface {
	AddSlots(ctx context.Context, slots []int) error
	RemoveSlots(slots []int)
}

// Ring is this replica's membership of a ring.
type Ring struct {
	opts  Options
	key   types.NamespacedName
	sr    *shardingv1alpha1.ShardRing // as read once at start
	setup bool                        // made by Setup, for SetupWithManager
	slots int
	agent *serving.Agent
	uid   *uidSlots // selectorMode ShardSelector; nil in selectorMode Labels
	// relabel repairs wrong slot labels of the sharded kind in selectorMode
	// Labels; nil with several sharded kinds or in selectorMode ShardSelector.
	relabel *memberRelabel
	peers   *peers // Options.PeerAddress; nil without
}

// New makes the manager's replica a member of the ring: it holds the
// member's Lease, follows the assignment, drives the manager's cache when
// that is a SlotCache, and, when elected, coordinates the ring and labels
// objects. It reads the ShardRing once, so the ring must exist; its slot
// count and lease duration are fixed for the life of the process.
//
// New leaves the manager's options to the caller; Setup, which also
// configures them from the ring, is what an operator's main should use.
func New(ctx context.Context, mgr ctrl.Manager, opts Options) (*Ring, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	key := types.NamespacedName{Namespace: opts.Namespace, Name: opts.Ring}
	sr := &shardingv1alpha1.ShardRing{}
	if err := mgr.GetAPIReader().Get(ctx, key, sr); err != nil {
		return nil, fmt.Errorf("reading ShardRing %s (apply it before starting the operator): %w", key, err)
	}
	r := &Ring{opts: opts, key: key, sr: sr}
	if err := r.attach(mgr); err != nil {
		return nil, err
	}
	return r, nil
}

// attach makes the manager's replica a member of the ring r.sr describes.
func (r *Ring) attach(mgr ctrl.Manager) error {
	opts, key, sr := r.opts, r.key, r.sr
	slots := int(sr.Spec.Slots)
	if slots == 0 {
		slots = ring.DefaultSlots
	}
	var uid *uidSlots
	var relabel *memberRelabel
	if sr.Spec.SelectorMode == shardingv1alpha1.SelectorModeShardSelector {
		var err error
		if uid, err = newUIDSlots(mgr, sr, slots); err != nil {
			return err
		}
	} else {
		var err error
		if relabel, err = newMemberRelabel(mgr, sr, opts.Registerer); err != nil {
			return err
		}
	}

	// The member's Lease is read and written directly: a cached read would
	// only cause conflicts, and a cache of every Lease costs memory.
	direct, err := leaseClient(mgr)
	if err != nil {
		return fmt.Errorf("creating the member's client: %w", err)
	}
	agentOpts := serving.Options{
		Ring:          key,
		Member:        opts.Member,
		Slots:         slots,
		LeaseDuration: time.Duration(sr.Spec.LeaseDurationSeconds) * time.Second,
		DrainTimeout:  opts.DrainTimeout,
		GainWindow:    opts.GainWindow,
		WarmupTimeout: opts.WarmupTimeout,
		Clock:         opts.Clock,
	}
	if r.peers != nil {
		agentOpts.LeaseAnnotations = map[string]string{shardingv1alpha1.AnnotationSnapshotURL: r.peers.url}
		var reader client.Reader = direct
		r.peers.source.reader.Store(&reader)
	}
	if sc, ok := mgr.GetCache().(SlotCache); ok {
		agentOpts.OnGain = sc.AddSlots
		agentOpts.OnLose = sc.RemoveSlots
	}
	if w, ok := mgr.GetCache().(serving.Warmer); ok {
		agentOpts.Warmer = w
	}
	if cc, ok := mgr.GetCache().(counter); ok {
		if err := opts.Registerer.Register(newCachedObjects(opts.Ring, opts.Member, cc)); err != nil {
			return fmt.Errorf("registering the cached objects metric: %w", err)
		}
	}
	memberMetrics, err := serving.NewMetrics(opts.Registerer, opts.Member)
	if err != nil {
		return fmt.Errorf("registering member metrics: %w", err)
	}
	agent, err := serving.NewAgent(direct, mgr.GetClient(), agentOpts, memberMetrics)
	if err != nil {
		return err
	}
	if err := mgr.Add(agent); err != nil {
		return fmt.Errorf("adding the member agent: %w", err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("kubeshard-member").
		For(&shardingv1alpha1.ShardRing{}).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(reconcile.Func(agent.Reconcile))
	if err != nil {
		return fmt.Errorf("creating the member controller: %w", err)
	}
	if err := mgr.AddReadyzCheck("kubeshard-member", func(*http.Request) error {
		if !agent.Member().Valid() {
			return fmt.Errorf("member %s holds no fresh Lease", opts.Member)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("adding the member readiness check: %w", err)
	}

	if !opts.DisableCoordinator {
		coordMetrics, err := coordinator.NewMetrics(opts.Registerer)
		if err != nil {
			return fmt.Errorf("registering coordinator metrics: %w", err)
		}
		if err := coordinator.Add(mgr, coordinator.Options{Ring: key, RebalanceQuiet: opts.RebalanceQuiet}, coordMetrics); err != nil {
			return err
		}
		if err := labeler.Add(mgr, labeler.Options{Ring: key, SweepInterval: opts.LabelerSweepInterval, Registerer: opts.Registerer}); err != nil {
			return fmt.Errorf("adding the labeler: %w", err)
		}
	}
	if opts.Webhook {
		if err := slotwebhook.Add(mgr, slotwebhook.Options{
			Ring: key, Finalizers: opts.AdmissionFinalizers, Registerer: opts.Registerer,
		}); err != nil {
			return fmt.Errorf("adding the slot-label webhook: %w", err)
		}
	}
	if uid != nil {
		if err := uid.report(mgr.GetCache(), agent.Member(), mgr.GetLogger().WithName("kubeshard"), opts); err != nil {
			return err
		}
	}
	r.slots, r.agent, r.uid, r.relabel = slots, agent, uid, relabel
	return nil
}

// leaseClient returns a client for the member's Lease with a connection of
// its own (see ownConnection).
func leaseClient(mgr ctrl.Manager) (client.Client, error) {
	cfg := ownConnection(mgr.GetConfig())
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{HTTPClient: httpClient, Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
}

// ownConnection returns a copy of cfg whose clients get an HTTP connection
// of their own. The manager's clients multiplex every request on one HTTP/2
// connection; while a member lists the objects of the slots it gains (tens
// of thousands of them), a renewal queued behind those responses can miss
// the renew deadline, and the member would fence itself, or the coordinator
// lose its election, for being busy. A transport that client-go cannot share
// (its Proxy is a function, which the transport cache does not compare) gets
// a connection of its own; the function is client-go's default, so proxies
// behave as before.
func ownConnection(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Proxy = utilnet.NewProxierWithNoProxyCIDR(http.ProxyFromEnvironment)
	return cfg
}

// ByUID reports whether the ring is in selectorMode ShardSelector: objects of
// the sharded kind have the slot of their uid (ring.UIDSlot) and no slot
// label; their children carry the label (slotlabel.LabelChildByUID).
func (r *Ring) ByUID() bool {
	return r.sr.Spec.SelectorMode == shardingv1alpha1.SelectorModeShardSelector
}

// Slots returns the ring's number of slots.
func (r *Ring) Slots() int { return r.slots }

// Agent returns the member's agent, for tests and diagnostics.
func (r *Ring) Agent() *serving.Agent { return r.agent }

// ReadRing reads a ShardRing directly from the API server, before any
// manager or cache exists: Setup reads the ring with it, and so can a main
// that configures its manager without Setup.
func ReadRing(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, key types.NamespacedName) (*shardingv1alpha1.ShardRing, error) {
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating a client: %w", err)
	}
	sr := &shardingv1alpha1.ShardRing{}
	if err := c.Get(ctx, key, sr); err != nil {
		return nil, fmt.Errorf("reading ShardRing %s (apply it before starting the operator): %w", key, err)
	}
	return sr, nil
}
