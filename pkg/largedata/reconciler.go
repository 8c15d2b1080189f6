package largedata

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// Finalizer keeps a deleted LargeData until the operator has deleted its
// records from the store.
const Finalizer = "data.kubeshard.dev/cleanup"

// Reconciler makes a LargeData's dataset in the store what the spec says,
// at most one batch of creation and one of processing per reconcile, and
// reports progress in the status.
//
// Errors: a spec that can never succeed (above the store quota, or a
// processing this version does not know) is a reconcile.TerminalError and
// the condition Ready says why; the object is not retried until its spec
// changes. Transient failures (the store is down, a conflicting write) set
// the condition Degraded where the user should know, and are returned, so
// the controller's rate limiter retries them with capped exponential
// backoff (Options.RetryBaseDelay to Options.RetryMaxDelay).
type Reconciler struct {
	// Client reads LargeData and ConfigMaps (the manager's cached client)
	// and writes them.
	Client client.Client
	// Scheme resolves the LargeData kind for the summary's controller
	// reference.
	Scheme *runtime.Scheme
	// Store holds the datasets' records.
	Store store.Store
	// Clock stamps conditions and status.lastProcessed and times batches.
	Clock clock.PassiveClock

	opts    Options
	metrics *metrics
	lags    lagTracker
}

// NewReconciler returns a reconciler with opts' defaults applied and its
// metrics registered on opts.Registerer.
func NewReconciler(c client.Client, scheme *runtime.Scheme, st store.Store, opts Options) (*Reconciler, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	if c == nil || scheme == nil || st == nil {
		return nil, errors.New("largedata: NewReconciler needs a client, a scheme and a store")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Reconciler{Client: c, Scheme: scheme, Store: st, Clock: opts.Clock, opts: opts, metrics: m}, nil
}

// Reconcile does one step for the LargeData req names: delete a batch of a
// deleted object's records, initialize a batch, or process a batch; then it
// patches the status and requeues until the dataset is done.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcile(ctx, req)
	if apierrors.IsConflict(err) {
		// The status was computed from a cached copy older than the object:
		// writing it would overwrite newer fields. The cache catches up in
		// milliseconds; the store's progress is kept, so the next reconcile
		// writes the right status.
		logf.FromContext(ctx).V(1).Info("Status computed from a stale copy; reconciling again", "reason", err.Error())
		return reconcile.Result{RequeueAfter: r.opts.BatchInterval}, nil
	}
	return res, err
}

func (r *Reconciler) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ld := &datav1alpha1.LargeData{}
	if err := r.Client.Get(ctx, req.NamespacedName, ld); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading LargeData %s: %w", req.NamespacedName, err)
	}
	if !ld.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, ld)
	}
	if !controllerutil.ContainsFinalizer(ld, Finalizer) {
		// Before the first record exists, so that none can outlive the object.
		base := ld.DeepCopy()
		controllerutil.AddFinalizer(ld, Finalizer)
		if err := r.Client.Patch(ctx, ld, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return reconcile.Result{}, fmt.Errorf("adding the finalizer to LargeData %s: %w", klog.KObj(ld), client.IgnoreNotFound(err))
		}
	}
	return r.reconcileDataset(ctx, ld)
}

func (r *Reconciler) reconcileDataset(ctx context.Context, ld *datav1alpha1.LargeData) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	before := ld.DeepCopy()

	transform, reason, err := r.validate(ld)
	if err != nil {
		r.setFailed(ld, reason, err.Error())
		if perr := r.patchStatus(ctx, ld, before); perr != nil {
			return reconcile.Result{}, perr
		}
		return reconcile.Result{}, reconcile.TerminalError(err)
	}

	sctx, cancel := context.WithTimeout(ctx, r.opts.StoreTimeout)
	defer cancel()
	key := keyOf(ld)
	wasInitialized := ld.Status.ObservedGeneration == ld.Generation &&
		(ld.Status.Phase == datav1alpha1.PhaseProcessing || ld.Status.Phase == datav1alpha1.PhaseReady)
	start := r.Clock.Now()
	p, err := r.Store.Initialize(sctx, key, store.Target{Generation: ld.Generation, Seed: ld.Spec.Seed, Items: ld.Spec.Items}, r.opts.InitBatchSize)
	if err != nil {
		return r.storeFailed(ctx, ld, before, opInitialize, err)
	}
	if !wasInitialized {
		r.metrics.batchDuration.WithLabelValues(opInitialize).Observe(r.since(start))
	}

	processedNow := false
	// At most one batch of each kind per reconcile: once the generation is
	// initialized, by an earlier reconcile or by this one's batch, one batch
	// of processing. A dataset within both batch sizes is done in one
	// reconcile and one status write.
	if p.Initialized && p.Pending() > 0 {
		start := r.Clock.Now()
		res, err := r.Store.ProcessBatch(sctx, key, store.Batch{
			Generation: ld.Generation, Limit: batchSize(ld), Workers: r.opts.Workers, Transform: transform,
		})
		if err != nil {
			return r.storeFailed(ctx, ld, before, opProcess, err)
		}
		r.metrics.batchDuration.WithLabelValues(opProcess).Observe(r.since(start))
		r.metrics.itemsProcessed.WithLabelValues(string(processing(ld)), resultSucceeded).Add(float64(res.Processed))
		if res.Failed > 0 {
			r.metrics.itemsProcessed.WithLabelValues(string(processing(ld)), resultFailed).Add(float64(res.Failed))
		}
		p = res.Progress
		processedNow = res.Processed+res.Failed > 0
		log.V(1).Info("Processed batch", "processed", res.Processed, "failed", res.Failed, "pending", p.Pending())
	}
	var in *ingested
	if ld.Spec.Source != nil {
		if r.opts.Source == nil {
			return r.noSource(ctx, ld, before)
		}
		got, err := r.ingest(sctx, ld)
		var se *errStream
		switch {
		case errors.As(err, &se):
			return r.streamFailed(ctx, ld, before, err)
		case err != nil:
			return r.storeFailed(ctx, ld, before, opIngest, err)
		}
		in = &got
	}
	// The next reconcile: the next batch of records or of the stream at
	// once, the stream's next read after StreamPollInterval.
	next := reconcile.Result{}
	switch {
	case !p.Done() || (in != nil && in.more):
		next.RequeueAfter = r.opts.BatchInterval
	case in != nil:
		next.RequeueAfter = r.opts.StreamPollInterval
	}

	if readyBefore(before) && !p.Done() {
		// The status shows this generation Ready, yet the store is short of
		// it: a new owner rebuilding a dataset that the in-memory store kept
		// in the old owner's process. Nothing a user reads has changed, so
		// the rebuild writes no status.
		return next, nil
	}
	r.setProgress(ld, p, processedNow)
	if in != nil {
		r.setStream(ld, *in)
	}
	if readyBefore(before) && processedNow {
		// Rebuilt to what the status already says: it keeps the time it was
		// processed, and the status is not written at all.
		rebuilt := ld.Status.DeepCopy()
		rebuilt.LastProcessed = before.Status.LastProcessed
		if equality.Semantic.DeepEqual(*rebuilt, before.Status) {
			ld.Status = *rebuilt
		}
	}

	summaryErr := r.reconcileSummary(ctx, ld, p)
	if errors.Is(summaryErr, errSummaryConflict) {
		r.setCondition(ld, datav1alpha1.ConditionDegraded, true, ReasonSummaryConflict, summaryErr.Error())
	}
	if err := r.patchStatus(ctx, ld, before); err != nil {
		return reconcile.Result{}, errors.Join(summaryErr, err)
	}
	if summaryErr != nil {
		return reconcile.Result{}, summaryErr
	}
	return next, nil
}

// readyBefore reports whether ld's status, as read, shows its current
// generation Ready.
func readyBefore(ld *datav1alpha1.LargeData) bool {
	return ld.Status.ObservedGeneration == ld.Generation &&
		meta.IsStatusConditionTrue(ld.Status.Conditions, datav1alpha1.ConditionReady)
}

// validate returns the transformation of ld's processing, or the reason and
// error of a spec that can never succeed: one the API server accepts, but
// this operator and its store cannot serve.
func (r *Reconciler) validate(ld *datav1alpha1.LargeData) (store.Transform, string, error) {
	if ld.Spec.Items > r.opts.ItemQuota {
		return nil, ReasonQuotaExceeded, fmt.Errorf("spec.items %d exceeds the store's quota of %d records per dataset; lower spec.items",
			ld.Spec.Items, r.opts.ItemQuota)
	}
	transform, ok := Transform(processing(ld))
	if !ok {
		return nil, ReasonUnknownProcessing, fmt.Errorf("spec.processing %q is unknown to this version of the operator, which knows %s, %s and %s",
			ld.Spec.Processing, datav1alpha1.ProcessingChecksum, datav1alpha1.ProcessingUppercase, datav1alpha1.ProcessingReverse)
	}
	return transform, "", nil
}

// finalize deletes a batch of a deleted object's records, and removes the
// finalizer once none is left.
func (r *Reconciler) finalize(ctx context.Context, ld *datav1alpha1.LargeData) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(ld, Finalizer) {
		return reconcile.Result{}, nil
	}
	before := ld.DeepCopy()
	ld.Status.Phase = datav1alpha1.PhaseDeleting
	r.setCondition(ld, datav1alpha1.ConditionReady, false, ReasonDeleting, "The dataset is being deleted from the store")

	sctx, cancel := context.WithTimeout(ctx, r.opts.StoreTimeout)
	defer cancel()
	start := r.Clock.Now()
	done, err := r.Store.Delete(sctx, keyOf(ld), r.opts.InitBatchSize)
	if err != nil {
		return r.storeFailed(ctx, ld, before, opDelete, err)
	}
	r.metrics.batchDuration.WithLabelValues(opDelete).Observe(r.since(start))
	if !done {
		return reconcile.Result{RequeueAfter: r.opts.BatchInterval}, r.patchStatus(ctx, ld, before)
	}

	if ld.Spec.Source != nil && r.opts.Source != nil {
		if err := r.opts.Source.Forget(sctx, StreamOf(ld)); err != nil {
			return r.streamFailed(ctx, ld, before, &errStream{op: streamForget, err: err})
		}
		r.lags.forget(r.metrics.streamLag, ld.UID, r.Clock.Now(), r.lagKeep())
	}

	// The summary ConfigMap goes with its owner, by garbage collection.
	obj := before.DeepCopy()
	controllerutil.RemoveFinalizer(obj, Finalizer)
	if err := r.Client.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return reconcile.Result{}, fmt.Errorf("removing the finalizer of LargeData %s: %w", klog.KObj(ld), client.IgnoreNotFound(err))
	}
	logf.FromContext(ctx).V(1).Info("Deleted dataset from the store")
	return reconcile.Result{}, nil
}

// storeFailed reports a failed store call: in the condition Degraded, unless
// the call was refused because the object read is older than the store's
// generation, which the next event corrects. It returns the error, so that
// the controller retries with backoff.
func (r *Reconciler) storeFailed(ctx context.Context, ld, before *datav1alpha1.LargeData, op string, err error) (reconcile.Result, error) {
	cause := err
	err = fmt.Errorf("%s: dataset of LargeData %s: %w", op, klog.KObj(ld), err)
	if errors.Is(err, store.ErrStaleGeneration) {
		return reconcile.Result{}, err
	}
	r.metrics.storeErrors.WithLabelValues(op).Inc()
	msg := fmt.Sprintf("The store failed to %s the dataset, retrying: %v", op, cause)
	if op == opDelete {
		msg = fmt.Sprintf("Deletion waits for the store, retrying: %v", cause)
	}
	r.setCondition(ld, datav1alpha1.ConditionDegraded, true, ReasonStoreUnavailable, msg)
	if ld.Status.Phase == "" {
		ld.Status.Phase = datav1alpha1.PhasePending
	}
	return reconcile.Result{}, errors.Join(err, r.patchStatus(ctx, ld, before))
}

func (r *Reconciler) since(start time.Time) float64 { return r.Clock.Since(start).Seconds() }

func keyOf(ld *datav1alpha1.LargeData) store.Key {
	return store.Key{UID: string(ld.UID), Namespace: ld.Namespace, Name: ld.Name}
}

// batchSize and processing read the spec with the API server's defaults, for
// objects that did not pass through it (unit tests' fake clients).
func batchSize(ld *datav1alpha1.LargeData) int {
	if ld.Spec.BatchSize < 1 {
		return datav1alpha1.DefaultBatchSize
	}
	return int(ld.Spec.BatchSize)
}

func processing(ld *datav1alpha1.LargeData) datav1alpha1.Processing {
	if ld.Spec.Processing == "" {
		return datav1alpha1.ProcessingChecksum
	}
	return ld.Spec.Processing
}
