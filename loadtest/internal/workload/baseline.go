package workload

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
)

// BaselineOptions configure Baseline.
type BaselineOptions struct {
	Names Names
	// Objects is how many objects the loop creates. Required.
	Objects int
	// Concurrency is how many goroutines create in a loop. Default 16.
	Concurrency int
	// Rate is the target of creates per second, 0 for none.
	Rate float64
	// Spec of the objects, the same as the harness's.
	Spec Spec
}

// Baseline creates Objects LargeData objects in Names.BaselineNamespace()
// with nothing but client-go's dynamic client, goroutines and a rate
// limiter: what the harness's create rate is compared with. The objects
// carry the run's label, so Cleanup deletes them. It returns the rate.
func Baseline(ctx context.Context, cfg *rest.Config, c client.Client, opts BaselineOptions) (Result, error) {
	if opts.Concurrency == 0 {
		opts.Concurrency = 16
	}
	opts.Spec = opts.Spec.withDefaults()
	if opts.Objects < 1 {
		return Result{}, fmt.Errorf("the baseline needs at least 1 object, not %d", opts.Objects)
	}
	namespace := opts.Names.BaselineNamespace()
	if err := ensureNamespace(ctx, c, namespace, opts.Names.Prefix); err != nil {
		return Result{}, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Result{}, fmt.Errorf("creating a dynamic client: %w", err)
	}
	resource := dyn.Resource(datav1alpha1.GroupVersion.WithResource("largedata")).Namespace(namespace)
	// A second run of the baseline creates new names after the old ones.
	offset := time.Now().UnixNano() % 1e9
	limiter := newLimiter(opts.Rate, opts.Concurrency)
	var next, done atomic.Int64
	var errs errorCount
	start := time.Now()
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(opts.Objects) || limiter.Wait(ctx) != nil {
					return
				}
				if _, err := resource.Create(ctx, baselineObject(opts, namespace, offset+i), metav1.CreateOptions{}); err != nil {
					errs.add(err)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	res := Result{Done: int(done.Load()), Errors: errs.Load(), LastError: errs.lastError(), Seconds: time.Since(start).Seconds()}
	res.Failed = opts.Objects - res.Done
	res.Rate = float64(res.Done) / max(res.Seconds, 1e-9)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("the baseline loop failed to create %d of %d objects", res.Failed, opts.Objects)
	}
	return res, nil
}

// baselineObject builds the object as a plain map, the way a bare
// client-go program would, with the same fields as the harness's objects.
func baselineObject(opts BaselineOptions, namespace string, i int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": datav1alpha1.GroupVersion.String(),
		"kind":       "LargeData",
		"metadata": map[string]any{
			"namespace":   namespace,
			"name":        fmt.Sprintf("baseline-%09d", i),
			"labels":      map[string]any{LabelRun: opts.Names.Prefix},
			"annotations": map[string]any{AnnotationSentAt: stamp(time.Now())},
		},
		"spec": map[string]any{"items": opts.Spec.Items, "batchSize": int64(opts.Spec.BatchSize), "seed": i},
	}}
}
