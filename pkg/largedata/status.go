package largedata

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// Reasons of the LargeData conditions. Ready's reason says where a generation
// is on its way; each object carries the few hundred bytes of its conditions
// in etcd, in the API server's watch cache and in every member's cache, so
// there is no condition per step that would repeat Ready's.
const (
	// ReasonInitializing: records of the generation are being created,
	// rewritten or deleted (Ready False).
	ReasonInitializing = "Initializing"
	// ReasonProcessing: every record exists and some remain to be processed
	// (Ready False).
	ReasonProcessing = "Processing"
	// ReasonProcessed: every record is processed (Ready True).
	ReasonProcessed = "Processed"
	// ReasonQuotaExceeded: spec.items is above the store's quota; the spec
	// can never succeed (Ready False, phase Failed).
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonUnknownProcessing: spec.processing is unknown to this version of
	// the operator (Ready False, phase Failed).
	ReasonUnknownProcessing = "UnknownProcessing"
	// ReasonDeleting: the object is deleted; its records are being deleted
	// from the store (Ready False, phase Deleting).
	ReasonDeleting = "Deleting"
	// ReasonStoreUnavailable: the last call to the store failed; it is
	// retried with backoff, and a deletion waits for it (Degraded True).
	ReasonStoreUnavailable = "StoreUnavailable"
	// ReasonRecordsFailed: records of the generation failed to process
	// (Degraded True).
	ReasonRecordsFailed = "RecordsFailed"
	// ReasonSummaryConflict: a ConfigMap of the summary's name exists and
	// belongs to someone else (Degraded True).
	ReasonSummaryConflict = "SummaryConflict"
	// ReasonStreamUnavailable: the dataset's stream cannot be read or
	// acknowledged, or the operator has no stream source; retried with
	// backoff (Degraded True).
	ReasonStreamUnavailable = "StreamUnavailable"
	// ReasonHealthy: the store answers and no record failed, after a time
	// when one of the above held (Degraded False). An object that was never
	// degraded has no Degraded condition.
	ReasonHealthy = "Healthy"
)

// setProgress writes the store's progress into ld's status.
func (r *Reconciler) setProgress(ld *datav1alpha1.LargeData, p store.Progress, processedNow bool) {
	st := &ld.Status
	st.ObservedGeneration = ld.Generation
	st.TotalItems = p.Items
	st.ProcessedCount = p.Processed
	st.FailedItems = p.Failed
	st.CompletionRatio = completionRatio(p.Processed, p.Items)
	if processedNow {
		now := metav1.NewTime(r.Clock.Now())
		st.LastProcessed = &now
	}

	done := fmt.Sprintf("%d of %d records processed", p.Processed+p.Failed, p.Items)
	switch {
	case !p.Initialized:
		msg := fmt.Sprintf("%d of %d records created", p.Created, p.Items)
		if p.Created == p.Items {
			msg = fmt.Sprintf("Deleting the records beyond the first %d", p.Items)
		}
		st.Phase = datav1alpha1.PhaseInitializing
		r.setCondition(ld, datav1alpha1.ConditionReady, false, ReasonInitializing, msg)
	case p.Pending() > 0:
		st.Phase = datav1alpha1.PhaseProcessing
		r.setCondition(ld, datav1alpha1.ConditionReady, false, ReasonProcessing, done)
	default:
		st.Phase = datav1alpha1.PhaseReady
		r.setCondition(ld, datav1alpha1.ConditionReady, true, ReasonProcessed, done)
	}
	switch {
	case p.Failed > 0:
		r.setCondition(ld, datav1alpha1.ConditionDegraded, true, ReasonRecordsFailed,
			fmt.Sprintf("%d records failed to process; the next generation retries them", p.Failed))
	case meta.FindStatusCondition(st.Conditions, datav1alpha1.ConditionDegraded) != nil:
		// Recovered: the condition stays, False, with the time it recovered.
		msg := "The store answers and no record failed"
		if ld.Spec.Source != nil {
			msg = "The store and the stream answer, and no record failed"
		}
		r.setCondition(ld, datav1alpha1.ConditionDegraded, false, ReasonHealthy, msg)
	}
	dropRetiredConditions(ld)
}

// setFailed reports a spec that can never succeed.
func (r *Reconciler) setFailed(ld *datav1alpha1.LargeData, reason, msg string) {
	st := &ld.Status
	st.Phase = datav1alpha1.PhaseFailed
	st.ObservedGeneration = ld.Generation
	st.TotalItems = ld.Spec.Items
	st.ProcessedCount, st.FailedItems = 0, 0
	st.CompletionRatio = completionRatio(0, ld.Spec.Items)
	r.setCondition(ld, datav1alpha1.ConditionReady, false, reason, msg)
	dropRetiredConditions(ld)
}

// retiredConditions are condition types that earlier versions of the operator
// set and that repeated Ready's reason. Objects reconciled by this version
// lose them, so that they do not stay behind with an old generation.
var retiredConditions = []string{"Initialized", "Processing"}

func dropRetiredConditions(ld *datav1alpha1.LargeData) {
	for _, typ := range retiredConditions {
		meta.RemoveStatusCondition(&ld.Status.Conditions, typ)
	}
}

func (r *Reconciler) setCondition(ld *datav1alpha1.LargeData, typ string, status bool, reason, msg string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&ld.Status.Conditions, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: msg,
		ObservedGeneration: ld.Generation,
		// The time of a change of status; SetStatusCondition keeps the old
		// one when the status stays.
		LastTransitionTime: metav1.NewTime(r.Clock.Now()),
	})
}

// patchStatus sends the change of ld's status since before as a merge patch
// of the status subresource, if there is one.
func (r *Reconciler) patchStatus(ctx context.Context, ld, before *datav1alpha1.LargeData) error {
	if equality.Semantic.DeepEqual(before.Status, ld.Status) {
		return nil
	}
	// With the resourceVersion of the copy the status was computed from: a
	// merge patch sends only what changed against that copy, so from a stale
	// cached copy it would mix new fields into a status that moved on (a
	// phase Ready next to a Ready condition False). The API server refuses
	// it instead, and Reconcile tries again.
	if err := r.Client.Status().Patch(ctx, ld, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patching the status of LargeData %s: %w", klog.KObj(ld), err)
	}
	return nil
}

// completionRatio is done/total with three decimals, rounded down so that
// it reads 1.000 only when everything is done ("0.425"). An empty dataset
// is complete.
func completionRatio(done, total int64) string {
	if total <= 0 {
		return "1.000"
	}
	permille := done * 1000 / total
	return fmt.Sprintf("%d.%03d", permille/1000, permille%1000)
}
