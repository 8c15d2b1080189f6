package largedata

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// Options configure the LargeData reconciler. The zero value is valid.
type Options struct {
	// ControllerName names the controller in logs and metrics; it must be
	// unique in the process. Default: "largedata".
	ControllerName string

	// MaxConcurrentReconciles is how many LargeData objects are reconciled at
	// once. Default: 4.
	MaxConcurrentReconciles int

	// Workers is how many goroutines transform the records of one batch at
	// once. Default: 4.
	Workers int

	// InitBatchSize is how many records one reconcile creates, rewrites or
	// deletes while it initializes a dataset, and how many the finalizer
	// deletes per reconcile. Processing batches are spec.batchSize.
	// Default: 10000.
	InitBatchSize int

	// ItemQuota is the most records one dataset may have in the store: a
	// quota of this deployment's database, which the API server's bound
	// (datav1alpha1.MaxItems) cannot know. A spec above it fails for good
	// (phase Failed, condition Ready False with reason QuotaExceeded) until
	// spec.items is lowered. Default: 10,000,000.
	ItemQuota int64

	// LabelChild gives the summary ConfigMap its owner's slot label before
	// it is created, so that the member that serves the owner sees it in its
	// cache: a sharded operator passes sharding.Ring.LabelChild. Default: the
	// label of a ring of ring.DefaultSlots slots in selectorMode Labels.
	LabelChild func(owner, child client.Object) bool

	// BatchInterval is the pause between two batches of one dataset. The
	// next batch is a new reconcile that queues behind other objects', so a
	// large dataset does not starve small ones. Default: 1 millisecond.
	BatchInterval time.Duration

	// StoreTimeout bounds each call to the store, so that a database that
	// hangs cannot hold a reconcile. Default: 10 seconds.
	StoreTimeout time.Duration

	// RetryBaseDelay and RetryMaxDelay bound the exponential backoff after a
	// transient failure (the store is down, a write conflicts): the
	// reconciler returns the error, and the controller's rate limiter
	// requeues the object after RetryBaseDelay, doubling up to
	// RetryMaxDelay. Defaults: 100 milliseconds and 1 minute.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration

	// Wrap, if set, wraps the reconciler before it is added to the manager:
	// a sharded operator passes sharding.Ring.Reconciler, so that a replica
	// reconciles only the objects of its slots. Default: none.
	Wrap func(reconcile.Reconciler) reconcile.Reconciler

	// NeedLeaderElection says whether the controller runs only on the
	// replica that holds the manager's leader election. nil keeps the
	// manager's default (true when leader election is on). A sharded operator
	// sets false: every replica reconciles the objects of its own slots.
	NeedLeaderElection *bool

	// Source reads the streams of datasets with a spec.source. nil: such
	// datasets are Degraded (reason StreamUnavailable) until the operator
	// is started with one.
	Source source.Source

	// Consumer names this replica in the streams' consumer groups; a
	// sharded operator passes its member name. Default: the host name.
	Consumer string

	// StreamPollInterval is how long a dataset whose stream had nothing
	// more to read waits before its next read. A read never blocks a
	// reconcile. Default: 1 second.
	StreamPollInterval time.Duration

	// StreamStatusInterval is the least time between two writes of a
	// dataset's status.stream while entries arrive. Default: 10 seconds.
	StreamStatusInterval time.Duration

	// Recorder records events on LargeData objects (malformed stream
	// entries). Default: none.
	Recorder events.EventRecorder

	// Clock stamps conditions and status.lastProcessed and times batches.
	// Default: the real clock.
	Clock clock.PassiveClock

	// Registerer receives the reconciler's metrics. Default:
	// controller-runtime's metrics.Registry, which the manager serves.
	Registerer prometheus.Registerer
}

// applyDefaults fills in the defaults: the one place they are.
func (o *Options) applyDefaults() error {
	if o.ControllerName == "" {
		o.ControllerName = "largedata"
	}
	if o.MaxConcurrentReconciles == 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.InitBatchSize == 0 {
		o.InitBatchSize = 10_000
	}
	if o.ItemQuota == 0 {
		o.ItemQuota = 10_000_000
	}
	if o.LabelChild == nil {
		o.LabelChild = func(owner, child client.Object) bool {
			return slotlabel.LabelChild(owner, child, ring.DefaultSlots)
		}
	}
	if o.BatchInterval == 0 {
		o.BatchInterval = time.Millisecond
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = 10 * time.Second
	}
	if o.RetryBaseDelay == 0 {
		o.RetryBaseDelay = 100 * time.Millisecond
	}
	if o.RetryMaxDelay == 0 {
		o.RetryMaxDelay = time.Minute
	}
	if o.Consumer == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("largedata options: no Consumer, and the host name is unknown: %w", err)
		}
		o.Consumer = host
	}
	if o.StreamPollInterval == 0 {
		o.StreamPollInterval = time.Second
	}
	if o.StreamStatusInterval == 0 {
		o.StreamStatusInterval = 10 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Registerer == nil {
		o.Registerer = ctrlmetrics.Registry
	}
	if o.MaxConcurrentReconciles < 0 || o.Workers < 0 || o.InitBatchSize < 0 || o.ItemQuota < 0 ||
		o.BatchInterval < 0 || o.StoreTimeout < 0 || o.StreamPollInterval < 0 || o.StreamStatusInterval < 0 || o.RetryBaseDelay < 0 || o.RetryMaxDelay < o.RetryBaseDelay {
		return errors.New("largedata options: counts and durations must not be negative, nor RetryMaxDelay below RetryBaseDelay")
	}
	return nil
}
