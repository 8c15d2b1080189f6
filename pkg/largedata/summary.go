package largedata

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// ManagedByLabel and ManagedByValue mark the summary ConfigMaps, so that a
// manager can restrict its ConfigMap cache to them
// (cache.Options.ByObject with a label selector).
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "kubeshard-largedata"
)

// Keys of a summary ConfigMap's data.
const (
	SummaryItems      = "items"
	SummaryProcessed  = "processed"
	SummaryFailed     = "failed"
	SummaryProcessing = "processing"
	SummarySeed       = "seed"
	SummaryGeneration = "generation"
	// SummaryChecksum is store.Progress.Checksum in 16 hexadecimal digits:
	// the XOR of store.RecordHash over every processed record, computed by
	// the store as the records are processed.
	SummaryChecksum = "checksum"
)

var errSummaryConflict = errors.New("a ConfigMap of the summary's name exists and is not controlled by the LargeData")

// reconcileSummary publishes the summary once the generation is done, and
// deletes it when the spec no longer asks for one. While a new generation is
// processed, the previous summary stays, telling its generation.
func (r *Reconciler) reconcileSummary(ctx context.Context, ld *datav1alpha1.LargeData, p store.Progress) error {
	switch {
	case !ld.Spec.PublishSummary:
		return r.deleteSummary(ctx, ld)
	case p.Done():
		return r.publishSummary(ctx, ld, p)
	}
	return nil
}

func (r *Reconciler) publishSummary(ctx context.Context, ld *datav1alpha1.LargeData, p store.Progress) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ld.Namespace, Name: ld.Name}}
	_, err := controllerutil.CreateOrPatch(ctx, r.Client, cm, func() error {
		if cm.ResourceVersion != "" && !metav1.IsControlledBy(cm, ld) { // exists, not ours
			return fmt.Errorf("ConfigMap %s: %w", klog.KObj(cm), errSummaryConflict)
		}
		// The child lives on its owner's slot: without the label, the member
		// that serves the owner would not see it in its cache.
		r.opts.LabelChild(ld, cm)
		if cm.Labels == nil {
			cm.Labels = map[string]string{}
		}
		cm.Labels[ManagedByLabel] = ManagedByValue
		cm.Data = map[string]string{
			SummaryItems:      strconv.FormatInt(p.Items, 10),
			SummaryProcessed:  strconv.FormatInt(p.Processed, 10),
			SummaryFailed:     strconv.FormatInt(p.Failed, 10),
			SummaryProcessing: string(processing(ld)),
			SummarySeed:       strconv.FormatInt(p.Seed, 10),
			SummaryGeneration: strconv.FormatInt(p.Generation, 10),
			SummaryChecksum:   fmt.Sprintf("%016x", p.Checksum),
		}
		return controllerutil.SetControllerReference(ld, cm, r.Scheme)
	})
	if err != nil {
		return fmt.Errorf("publishing the summary of LargeData %s: %w", klog.KObj(ld), err)
	}
	return nil
}

func (r *Reconciler) deleteSummary(ctx context.Context, ld *datav1alpha1.LargeData) error {
	cm := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(ld), cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading the summary of LargeData %s: %w", klog.KObj(ld), err)
	}
	if !metav1.IsControlledBy(cm, ld) {
		return nil // someone else's
	}
	if err := r.Client.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the summary of LargeData %s: %w", klog.KObj(ld), err)
	}
	return nil
}
