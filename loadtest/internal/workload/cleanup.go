package workload

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
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/loadtest/internal/progress"
)

// CleanupOptions configure Cleanup.
type CleanupOptions struct {
	// Run is the prefix whose objects and namespaces are deleted.
	Run string
	// Concurrency is how many deletes are in flight at once. Default 16.
	Concurrency int
	// Timeout bounds the wait for the operator to finalize the objects and
	// for the namespaces to go. Default 10m.
	Timeout time.Duration
	// Progress receives the progress bars; nil draws none.
	Progress io.Writer
}

// Cleanup deletes every LargeData and namespace labelled with the run, page
// by page, then waits until they are gone (the operator removes the
// objects' finalizers, the namespace controller the namespaces).
func Cleanup(ctx context.Context, c client.Client, opts CleanupOptions) (Result, error) {
	if opts.Concurrency == 0 {
		opts.Concurrency = 16
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Run == "" {
		return Result{}, fmt.Errorf("cleanup needs the run's prefix")
	}
	start := time.Now()
	var done, skipped, failed atomic.Int64
	var errs errorCount
	total := 0
	var bar *progress.Bar
	err := ListMetadata(ctx, c, opts.Run, "", func(items []metav1.PartialObjectMetadata) error {
		if bar == nil {
			// The first page says how many remain after it.
			total = max(len(items), remaining(ctx, c, opts.Run))
			bar = progress.New(opts.Progress, total, "deleted")
		}
		todo := make(chan metav1.PartialObjectMetadata)
		var wg sync.WaitGroup
		for range opts.Concurrency {
			wg.Go(func() {
				for o := range todo {
					obj := o
					err := withRetries(ctx, &errs, func() error { return c.Delete(ctx, &obj) })
					switch {
					case err == nil:
						done.Add(1)
					case apierrors.IsNotFound(err):
						skipped.Add(1)
					default:
						failed.Add(1)
					}
					bar.Set(int(done.Load()+skipped.Load()+failed.Load()), errs.Load())
				}
			})
		}
		for _, o := range items {
			if o.DeletionTimestamp != nil {
				skipped.Add(1)
				continue
			}
			todo <- o
		}
		close(todo)
		wg.Wait()
		return ctx.Err()
	})
	bar.Finish()
	res := Result{Done: int(done.Load()), Skipped: int(skipped.Load()), Failed: int(failed.Load()), Errors: errs.Load(), LastError: errs.lastError()}
	if err != nil {
		return res, fmt.Errorf("deleting objects: %w", err)
	}
	if err := waitGone(ctx, c, opts); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.Rate = float64(res.Done) / max(res.Seconds, 1e-9)
	if res.Failed > 0 {
		return res, fmt.Errorf("%d objects could not be deleted", res.Failed)
	}
	return res, nil
}

// remaining counts the run's objects, in pages of metadata (a label
// selector leaves remainingItemCount unset).
func remaining(ctx context.Context, c client.Client, run string) int {
	n := 0
	_ = ListMetadata(ctx, c, run, "", func(items []metav1.PartialObjectMetadata) error {
		n += len(items)
		return nil
	})
	return n
}

// waitGone waits until no object of the run is left, then deletes the
// run's namespaces and waits until they are gone.
func waitGone(ctx context.Context, c client.Client, opts CleanupOptions) error {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	left := remaining(ctx, c, opts.Run)
	bar := progress.New(opts.Progress, left, "finalized by the operator")
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		n := remaining(ctx, c, opts.Run)
		bar.Set(left-n, 0)
		return n == 0, nil
	})
	bar.Finish()
	if err != nil {
		return fmt.Errorf("waiting for the operator to finalize the deleted objects (is it running?): %w", err)
	}
	namespaces := &corev1.NamespaceList{}
	if err := c.List(ctx, namespaces, client.MatchingLabels{LabelRun: opts.Run}); err != nil {
		return fmt.Errorf("listing the run's namespaces: %w", err)
	}
	for i := range namespaces.Items {
		if err := c.Delete(ctx, &namespaces.Items[i]); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting namespace %s: %w", namespaces.Items[i].Name, err)
		}
	}
	err = wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.List(ctx, namespaces, client.MatchingLabels{LabelRun: opts.Run}); err != nil {
			return false, nil
		}
		return len(namespaces.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the run's namespaces to be deleted: %w", err)
	}
	return nil
}
