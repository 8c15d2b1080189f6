package labeler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/source"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// The labeler reads the ring. It also needs get, list, watch and patch on the
// ring's kinds, which only the operator knows: its RBAC markers grant them
// (for example, cmd/largedata-operator/webhook.go has the example operator's).
// +kubebuilder:rbac:groups=sharding.kubeshard.dev,resources=shardrings,verbs=get;list;watch,namespace=system

// Options configure a Labeler.
type Options struct {
	// Ring is the namespaced name of the ShardRing whose kinds are labelled.
	// The labeler reads it when it starts. Required.
	Ring types.NamespacedName

	// SweepInterval is the time between two sweeps over every object of the
	// ring's kinds, which correct wrong labels. The first sweep runs at start.
	// Default: 10 minutes.
	SweepInterval time.Duration

	// PageSize is how many objects one list request of a sweep returns.
	// Default: 500.
	PageSize int64

	// MaxConcurrentReconciles is how many objects are labelled at once.
	// Default: 4.
	MaxConcurrentReconciles int

	// Clock times the sweeps. Default: the real clock.
	Clock clock.WithTicker

	// Registerer receives the labeler's metrics.
	// Default: controller-runtime's metrics.Registry, which the manager serves.
	Registerer prometheus.Registerer
}

func (o *Options) applyDefaults() error {
	if o.Ring.Name == "" || o.Ring.Namespace == "" {
		return fmt.Errorf("options: Ring needs a namespace and a name, got %q", o.Ring.String())
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = 10 * time.Minute
	}
	if o.PageSize == 0 {
		o.PageSize = 500
	}
	if o.MaxConcurrentReconciles == 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Registerer == nil {
		o.Registerer = ctrlmetrics.Registry
	}
	if o.SweepInterval < 0 || o.PageSize < 0 || o.MaxConcurrentReconciles < 0 {
		return errors.New("options: SweepInterval, PageSize and MaxConcurrentReconciles must not be negative")
	}
	return nil
}

// Labeler is a manager.Runnable that labels the objects of one ring's kinds.
// It runs only on the leader (the coordinator): one writer is enough, and
// every other replica stays free of its watches.
type Labeler struct {
	// Config and HTTPClient reach the API server for the labeler's own cache.
	Config     *rest.Config
	HTTPClient *http.Client
	// Scheme and Mapper serve the labeler's cache; Mapper also resolves the
	// ring's resources to kinds.
	Scheme *runtime.Scheme
	Mapper meta.RESTMapper
	// Client writes the labels.
	Client client.Client
	// APIReader reads the ShardRing and lists objects for the sweeps, past
	// every cache.
	APIReader client.Reader
	// Logger is the base of the labeler's logs; a runnable's context carries
	// none.
	Logger logr.Logger

	opts    Options
	metrics *metrics

	mu    sync.Mutex
	cache cache.Cache // set while running
}

var _ manager.LeaderElectionRunnable = (*Labeler)(nil)

// New returns a labeler for the ring opts.Ring that talks to the API server
// as the manager does. Add it to the manager with mgr.Add, or call Add.
func New(mgr manager.Manager, opts Options) (*Labeler, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer, opts.Ring.Name)
	if err != nil {
		return nil, err
	}
	return &Labeler{
		Config:     mgr.GetConfig(),
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		Client:     mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Logger:     mgr.GetLogger(),
		opts:       opts,
		metrics:    m,
	}, nil
}

// Add adds a labeler for the ring opts.Ring to the manager.
func Add(mgr manager.Manager, opts Options) error {
	l, err := New(mgr, opts)
	if err != nil {
		return fmt.Errorf("creating the labeler: %w", err)
	}
	if err := mgr.Add(l); err != nil {
		return fmt.Errorf("adding the labeler to the manager: %w", err)
	}
	return nil
}

// NeedLeaderElection makes the labeler run on the leader only.
func (l *Labeler) NeedLeaderElection() bool { return true }

// Start reads the ring, watches the objects of its kinds whose slot label is
// missing or names no slot and labels them, and sweeps all objects of its
// kinds every SweepInterval, until ctx is done. It fails when the ring cannot be read or
// names a resource the API server does not serve. The kinds are read once:
// a change of the ring's resources takes effect at the next start.
func (l *Labeler) Start(ctx context.Context) error {
	log := l.Logger.WithName("labeler").WithValues("ring", l.opts.Ring.Name)
	ctx = logf.IntoContext(ctx, log)

	sr := &shardingv1alpha1.ShardRing{}
	if err := l.APIReader.Get(ctx, l.opts.Ring, sr); err != nil {
		return fmt.Errorf("labeler: reading ShardRing %s: %w", l.opts.Ring, err)
	}
	kinds, err := slotlabel.NewKinds(sr.Spec, l.Mapper)
	if err != nil {
		return fmt.Errorf("labeler: resolving the kinds of ShardRing %s: %w", l.opts.Ring, err)
	}
	// In selectorMode ShardSelector the sharded kinds carry no label: the
	// API server selects them by uid. Only their children are labelled.
	gvks := kinds.Labelled()

	c, err := l.newCache(gvks, kinds.Slots())
	if err != nil {
		return fmt.Errorf("labeler: creating its cache: %w", err)
	}
	r := &Reconciler{Reader: c, Client: l.Client, Kinds: kinds, Ring: l.opts.Ring.Name, metrics: l.metrics}
	ctl, err := controller.NewTypedUnmanaged("slot-labeler", controller.TypedOptions[Request]{
		Reconciler:              r,
		MaxConcurrentReconciles: l.opts.MaxConcurrentReconciles,
		// The controller is built anew on every start and a process may run
		// more than one labeler over its life (tests do): the name labels
		// logs and metrics, it is not a registration to protect.
		SkipNameValidation: ptr.To(true),
		LogConstructor: func(req *Request) logr.Logger {
			if req == nil {
				return log
			}
			return log.WithValues("kind", req.GVK.Kind, "object", klog.KRef(req.Namespace, req.Name))
		},
	})
	if err != nil {
		return fmt.Errorf("labeler: creating its controller: %w", err)
	}
	for _, gvk := range gvks {
		obj := partial(gvk)
		// Creating the informers before the cache starts lets the first sweep
		// wait for all of them to sync, and so leave what they hold to the
		// watch.
		if _, err := c.GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("labeler: watching %s: %w", gvk.Kind, err)
		}
		if err := ctl.Watch(source.TypedKind(c, obj, eventHandler(kinds, gvk))); err != nil {
			return fmt.Errorf("labeler: watching %s: %w", gvk.Kind, err)
		}
	}
	sweeper := &Sweeper{
		Reader: l.APIReader, Pending: c, Reconciler: r, Kinds: kinds,
		PageSize: l.opts.PageSize, Interval: l.opts.SweepInterval, Clock: l.opts.Clock,
	}

	l.mu.Lock()
	l.cache = c
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.cache = nil
		l.mu.Unlock()
	}()

	log.Info("Starting labeler", "kinds", groupKinds(gvks), "byUID", kinds.ByUID())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 3)
	go func() {
		if err := c.Start(ctx); err != nil {
			done <- fmt.Errorf("labeler: running its cache: %w", err)
			return
		}
		done <- nil
	}()
	go func() {
		if err := ctl.Start(ctx); err != nil {
			done <- fmt.Errorf("labeler: running its controller: %w", err)
			return
		}
		done <- nil
	}()
	go func() {
		if c.WaitForCacheSync(ctx) {
			sweeper.Run(ctx)
		}
		done <- nil
	}()
	// Whichever part stops first stops the others: a labeler without its
	// watch or its sweeps would quietly do half its job.
	err = <-done
	cancel()
	for range 2 {
		err = errors.Join(err, <-done)
	}
	return err
}

// newCache returns a cache that holds only the objects of gvks whose slot
// label is missing or names no slot of the ring's (such as abc or 99999),
// each reduced to the metadata a slot depends on. Normally that is nothing
// for sharded kinds; for child kinds it is also every object that is no
// child (most ConfigMaps), at about a hundred bytes each. The selector
// "slot notin (0, ..., slots-1)" matches both: a missing label and a value
// outside the set. So the watch repairs such labels at once; a label naming
// the wrong slot of the ring is the sweep's to find.
func (l *Labeler) newCache(gvks []schema.GroupVersionKind, slots int) (cache.Cache, error) {
	valid := make([]string, slots)
	for s := range slots {
		valid[s] = slotlabel.Value(s)
	}
	unlabelled, err := labels.NewRequirement(shardingv1alpha1.LabelSlot, selection.NotIn, valid)
	if err != nil {
		return nil, err
	}
	selector := labels.NewSelector().Add(*unlabelled)
	byObject := make(map[client.Object]cache.ByObject, len(gvks))
	for _, gvk := range gvks {
		byObject[partial(gvk)] = cache.ByObject{Label: selector, Transform: slimMetadata}
	}
	return cache.New(l.Config, cache.Options{
		HTTPClient: l.HTTPClient,
		Scheme:     l.Scheme,
		Mapper:     l.Mapper,
		ByObject:   byObject,
		// Any other informer would watch without the selector, that is every
		// object of its kind: fail loudly instead.
		ReaderFailOnMissingInformer: true,
	})
}

// slimMetadata keeps only what the labeler reads: the key, the uid and
// resourceVersion, the slot label and the controller reference. Annotations
// (kubectl's last-applied-configuration holds a copy of the whole object) and
// managedFields can be most of an object's metadata.
func slimMetadata(in any) (any, error) {
	obj, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	slim := &metav1.PartialObjectMetadata{
		TypeMeta: obj.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       obj.Namespace,
			Name:            obj.Name,
			UID:             obj.UID,
			ResourceVersion: obj.ResourceVersion,
		},
	}
	if v, ok := obj.Labels[shardingv1alpha1.LabelSlot]; ok {
		slim.Labels = map[string]string{shardingv1alpha1.LabelSlot: v}
	}
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		slim.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return slim, nil
}

// Unlabelled returns how many objects of kind gvk the running labeler holds
// in memory: those without a slot label, optionally narrowed by opts. For a
// sharded kind it is the backlog of objects to label, normally 0.
func (l *Labeler) Unlabelled(ctx context.Context, gvk schema.GroupVersionKind, opts ...client.ListOption) (int, error) {
	l.mu.Lock()
	c := l.cache
	l.mu.Unlock()
	if c == nil {
		return 0, errors.New("the labeler is not running")
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := c.List(ctx, list, opts...); err != nil {
		return 0, fmt.Errorf("listing %s from the labeler's cache: %w", gvk.Kind, err)
	}
	return len(list.Items), nil
}

func groupKinds(gvks []schema.GroupVersionKind) []string {
	out := make([]string, len(gvks))
	for i, gvk := range gvks {
		out[i] = gvk.GroupKind().String()
	}
	return out
}

func partial(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(gvk)
	return obj
}
