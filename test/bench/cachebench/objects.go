package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// dataset is the LargeData objects the benchmark created.
type dataset struct {
	keys    []types.NamespacedName
	perSlot []int
}

// inSlots returns how many objects have their slot in slots.
func (d *dataset) inSlots(slots []int) int {
	n := 0
	for _, s := range slots {
		n += d.perSlot[s]
	}
	return n
}

func namespaceName(i int) string { return fmt.Sprintf("bench-%d", i) }

// createObjects creates the namespaces and the LargeData objects, labelled
// with their slot as the webhook would, with bounded concurrency.
func createObjects(ctx context.Context, c client.Client, cfg config, progress io.Writer) (*dataset, error) {
	for i := range cfg.namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaceName(i)}}
		if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating namespace %s: %w", ns.Name, err)
		}
	}
	d := &dataset{keys: make([]types.NamespacedName, cfg.objects), perSlot: make([]int, cfg.slots)}
	for i := range d.keys {
		d.keys[i] = types.NamespacedName{Namespace: namespaceName(i % cfg.namespaces), Name: fmt.Sprintf("ld-%07d", i)}
		d.perSlot[ring.Slot(d.keys[i].Namespace, d.keys[i].Name, cfg.slots)]++
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	step := max(1, cfg.objects/10)
	var next, created atomic.Int64
	var wg sync.WaitGroup
	for range cfg.createWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(d.keys) || ctx.Err() != nil {
					return
				}
				key := d.keys[i]
				obj := &datav1alpha1.LargeData{
					ObjectMeta: metav1.ObjectMeta{
						Namespace: key.Namespace, Name: key.Name,
						Labels: map[string]string{shardingv1alpha1.LabelSlot: slotlabel.Value(ring.Slot(key.Namespace, key.Name, cfg.slots))},
					},
					Spec: datav1alpha1.LargeDataSpec{Items: 10},
				}
				if err := createWithRetry(ctx, c, obj); err != nil {
					cancel(fmt.Errorf("creating LargeData %s: %w", key, err))
					return
				}
				if n := created.Add(1); n%int64(step) == 0 || int(n) == cfg.objects {
					el := time.Since(start)
					fmt.Fprintf(progress, "  created %d/%d LargeData (%d%%) in %s, %.0f/s\n",
						n, cfg.objects, 100*n/int64(cfg.objects), el.Round(time.Second), float64(n)/el.Seconds())
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// createWithRetry retries what a busy API server refuses for a moment.
func createWithRetry(ctx context.Context, c client.Client, obj client.Object) error {
	var err error
	for attempt := range 5 {
		err = c.Create(ctx, obj)
		switch {
		case err == nil || apierrors.IsAlreadyExists(err):
			return nil
		case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsInternalError(err):
			select {
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return err
		}
	}
	return err
}

// patchSeeds sets spec.seed of keys to seed, a spec change that every
// controller of LargeData reconciles.
func patchSeeds(ctx context.Context, c client.Client, keys []types.NamespacedName, seed int64, workers int) error {
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"spec":{"seed":%d}}`, seed))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) || ctx.Err() != nil {
					return
				}
				obj := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: keys[i].Namespace, Name: keys[i].Name}}
				if err := c.Patch(ctx, obj, patch); err != nil {
					cancel(fmt.Errorf("patching LargeData %s: %w", keys[i], err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
