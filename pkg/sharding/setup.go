package sharding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// shutdownMargin is what the manager's graceful shutdown allows beyond a
// leaving member's drain and its Lease's renew deadline, for the release and
// the other runnables.
const shutdownMargin = 5 * time.Second

// Setup prepares the options of a manager that will be one member of the
// ring, from the ShardRing, which it reads once (it must exist):
//
//   - the manager's cache becomes the sharded cache (pkg/shardcache), which
//     holds only the served slots' objects of the kinds the ring's
//     spec.resources name, selected by slot label or, in selectorMode
//     ShardSelector, by the API server's shardSelector; the settings in
//     mgrOpts.Cache (a label selector for a child kind, a transform) still
//     apply;
//   - the manager's leader election picks the ring's coordinator
//     (ElectCoordinator), unless opts.DisableCoordinator;
//   - controllers run on every member, not only the elected one: their
//     default NeedLeaderElection becomes false (the ring's own coordinator
//     and labeler still run only where elected);
//   - the graceful shutdown lasts long enough for a leaving member to drain
//     its reconciles and release its Lease.
//
// mgrOpts.Scheme must know the ShardRing and the ring's kinds. Call
// SetupWithManager on the result once the manager exists. Setup refuses, with
// a message that says what to change, options that would quietly undo
// sharding: a NewCache of the caller's, controllers that need the leader
// election, a graceful shutdown shorter than a leave.
func Setup(ctx context.Context, cfg *rest.Config, mgrOpts *ctrl.Options, opts Options) (*Ring, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := checkManagerOptions(mgrOpts); err != nil {
		return nil, err
	}
	key := types.NamespacedName{Namespace: opts.Namespace, Name: opts.Ring}
	sr, err := ReadRing(ctx, cfg, mgrOpts.Scheme, key)
	if err != nil {
		return nil, err
	}
	cacheOpts, err := cacheOptions(cfg, mgrOpts, sr)
	if err != nil {
		return nil, err
	}
	cacheOpts.CompactAfter = opts.CacheCompactAfter
	cacheOpts.RelistOnCompaction = opts.CacheRelistOnCompaction
	cacheOpts.HandoverRate = opts.HandoverRate

	peers, err := setupPeers(cfg, mgrOpts, opts, key, cacheOpts.Slots)
	if err != nil {
		return nil, err
	}
	if peers != nil {
		cacheOpts.Snapshots = peers.source
	}
	newCache := shardcache.NewCacheFunc(cacheOpts)
	mgrOpts.NewCache = newCache
	if peers != nil {
		mgrOpts.NewCache = func(cfg *rest.Config, o cache.Options) (cache.Cache, error) {
			c, err := newCache(cfg, o)
			if sc, ok := c.(*shardcache.Cache); ok {
				peers.handler.set(sc)
			}
			return c, err
		}
	}
	// The ShardRing is watched in the ring's namespace only, as every read
	// of the ring is there: the Role a ring needs grants no more.
	if mgrOpts.Cache.ByObject == nil {
		mgrOpts.Cache.ByObject = map[client.Object]cache.ByObject{}
	}
	mgrOpts.Cache.ByObject[&shardingv1alpha1.ShardRing{}] = cache.ByObject{Namespaces: map[string]cache.Config{sr.Namespace: {}}}
	if !opts.DisableCoordinator {
		if err := ElectCoordinator(mgrOpts, cfg, sr); err != nil {
			return nil, err
		}
	}
	mgrOpts.Controller.NeedLeaderElection = ptr.To(false)
	_, renewDeadline := leaseTimings(sr)
	if leave := opts.DrainTimeout + renewDeadline + shutdownMargin; mgrOpts.GracefulShutdownTimeout == nil {
		mgrOpts.GracefulShutdownTimeout = &leave
	} else if *mgrOpts.GracefulShutdownTimeout < leave {
		return nil, fmt.Errorf("sharding: ctrl.Options.GracefulShutdownTimeout is %s, shorter than a member's leave (drain %s + renew deadline %s + %s): leave it unset, or raise it (and the pod's terminationGracePeriodSeconds)",
			*mgrOpts.GracefulShutdownTimeout, opts.DrainTimeout, renewDeadline, shutdownMargin)
	}
	return &Ring{opts: opts, key: key, sr: sr, slots: cacheOpts.Slots, setup: true, peers: peers}, nil
}

// checkManagerOptions refuses manager options that Setup cannot honour.
func checkManagerOptions(mgrOpts *ctrl.Options) error {
	var errs []error
	if mgrOpts.Scheme == nil {
		errs = append(errs, errors.New("ctrl.Options.Scheme is nil: set it to a scheme that knows the ShardRing (api/sharding/v1alpha1) and the ring's kinds before calling Setup"))
	} else if !mgrOpts.Scheme.Recognizes(shardingv1alpha1.GroupVersion.WithKind("ShardRing")) {
		errs = append(errs, errors.New("ctrl.Options.Scheme does not know the ShardRing: add shardingv1alpha1.AddToScheme to it"))
	}
	if mgrOpts.NewCache != nil {
		errs = append(errs, errors.New("ctrl.Options.NewCache is set: Setup gives the manager the sharded cache, which follows the served slots; put cache settings in ctrl.Options.Cache instead"))
	}
	if nle := mgrOpts.Controller.NeedLeaderElection; nle != nil && *nle {
		errs = append(errs, errors.New("ctrl.Options.Controller.NeedLeaderElection is true: controllers would then run only on the coordinator, which drops every request of a slot it does not serve; leave it unset"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("sharding: %w", errors.Join(errs...))
	}
	return nil
}

// cacheOptions resolves the ring's resources to the kinds the sharded cache
// selects by slot label or by shardSelector.
func cacheOptions(cfg *rest.Config, mgrOpts *ctrl.Options, sr *shardingv1alpha1.ShardRing) (shardcache.Options, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return shardcache.Options{}, fmt.Errorf("creating an HTTP client: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return shardcache.Options{}, fmt.Errorf("creating a REST mapper: %w", err)
	}
	kinds, err := slotlabel.NewKinds(sr.Spec, mapper)
	if err != nil {
		return shardcache.Options{}, fmt.Errorf("resolving spec.resources of ShardRing %s/%s: %w", sr.Namespace, sr.Name, err)
	}
	objects := func(what string, gvks []schema.GroupVersionKind) ([]client.Object, error) {
		var out []client.Object
		for _, gvk := range gvks {
			o, err := mgrOpts.Scheme.New(gvk)
			if err != nil {
				return nil, fmt.Errorf("the %s kind %s of ShardRing %s/%s is not in ctrl.Options.Scheme: add its API to the scheme", what, gvk, sr.Namespace, sr.Name)
			}
			obj, ok := o.(client.Object)
			if !ok {
				return nil, fmt.Errorf("the %s kind %s of ShardRing %s/%s is not an object", what, gvk, sr.Namespace, sr.Name)
			}
			out = append(out, obj)
		}
		return out, nil
	}
	opts := shardcache.Options{Slots: kinds.Slots()}
	if opts.ShardedObjects, err = objects("labelled", kinds.Labelled()); err != nil {
		return shardcache.Options{}, err
	}
	if kinds.ByUID() {
		if opts.ShardSelectorObjects, err = objects("sharded", kinds.Sharded()); err != nil {
			return shardcache.Options{}, err
		}
	}
	return opts, nil
}

// leaseTimings returns the ring's lease duration and the renew deadline
// that goes with it.
func leaseTimings(sr *shardingv1alpha1.ShardRing) (lease, renewDeadline time.Duration) {
	lease = membership.DefaultLeaseDuration
	if sr.Spec.LeaseDurationSeconds > 0 {
		lease = time.Duration(sr.Spec.LeaseDurationSeconds) * time.Second
	}
	renewDeadline, _ = membership.Timings(lease)
	return lease, renewDeadline
}

// SetupWithManager makes the manager's replica a member of the ring that
// Setup read: it holds the member's Lease, follows the assignment, drives the
// sharded cache and, when elected, coordinates the ring and labels objects.
// It fails when the manager was not created with the options Setup filled
// in.
func (r *Ring) SetupWithManager(mgr ctrl.Manager) error {
	if !r.setup {
		return errors.New("sharding: SetupWithManager is for a Ring that Setup returned; New already set this one up")
	}
	if r.agent != nil {
		return errors.New("sharding: SetupWithManager was called twice")
	}
	if _, ok := mgr.GetCache().(SlotCache); !ok {
		return fmt.Errorf("sharding: the manager's cache (%T) does not follow the served slots, so every member would cache every object: create the manager with the ctrl.Options that sharding.Setup filled in", mgr.GetCache())
	}
	if nle := mgr.GetControllerOptions().NeedLeaderElection; nle == nil || *nle {
		return errors.New("sharding: the manager's controllers need the leader election, so they would run only on the coordinator: create the manager with the ctrl.Options that sharding.Setup filled in")
	}
	return r.attach(mgr)
}

// LabelChild gives child, an object the reconciler is about to create for
// owner, the slot label of its owner's slot, so that the member serving the
// owner sees the child in its cache. It reports false when owner has no slot
// yet (no uid in selectorMode ShardSelector, no name otherwise), which an
// owner read from the API server always has.
func (r *Ring) LabelChild(owner, child client.Object) bool {
	if r.ByUID() {
		return slotlabel.LabelChildByUID(owner, child, r.slots)
	}
	return slotlabel.LabelChild(owner, child, r.slots)
}
