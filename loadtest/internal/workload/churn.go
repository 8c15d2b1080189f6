package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/loadtest/internal/progress"
)

// ChurnOptions configure Churn.
type ChurnOptions struct {
	Names Names
	// Objects is how many objects there are; Churn picks among 0..Objects-1.
	Objects int
	// Share is the fraction of the objects whose spec changes per second,
	// such as 0.01 for 1%. Required.
	Share float64
	// Duration of the churn. Required.
	Duration time.Duration
	// Concurrency is how many updates are in flight at once. Default 16.
	Concurrency int
	// Progress receives the progress bar; nil draws none.
	Progress io.Writer
	// OnUpdate is called after every successful update. Default: none.
	OnUpdate func()
}

// Churn changes the spec (the seed) of randomly chosen objects at
// Share*Objects per second for Duration. Every update is a merge patch that
// also stamps AnnotationSentAt.
func Churn(ctx context.Context, c client.Client, opts ChurnOptions) (Result, error) {
	if opts.Concurrency == 0 {
		opts.Concurrency = 16
	}
	if err := opts.Names.Validate(); err != nil {
		return Result{}, err
	}
	perSecond := opts.Share * float64(opts.Objects)
	if opts.Objects < 1 || opts.Share <= 0 || opts.Share > 1 || opts.Duration <= 0 || opts.Concurrency < 1 {
		return Result{}, fmt.Errorf("churn needs objects >= 1 (%d), a share in (0, 1] (%g), a positive duration (%s) and concurrency >= 1 (%d)",
			opts.Objects, opts.Share, opts.Duration, opts.Concurrency)
	}
	total := int(perSecond * opts.Duration.Seconds())
	bar := progress.New(opts.Progress, total, "updated")
	defer bar.Finish()
	ctx, cancel := context.WithTimeout(ctx, opts.Duration)
	defer cancel()

	var done, failed atomic.Int64
	var errs errorCount
	start := time.Now()
	todo := make(chan int)
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Go(func() {
			for i := range todo {
				err := withRetries(ctx, &errs, func() error { return changeSpec(ctx, c, opts.Names, i) })
				if err == nil {
					done.Add(1)
					if opts.OnUpdate != nil {
						opts.OnUpdate()
					}
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
				bar.Set(int(done.Load()+failed.Load()), errs.Load())
			}
		})
	}
	limiter := newLimiter(perSecond, opts.Concurrency)
	for ctx.Err() == nil {
		if limiter.Wait(ctx) != nil {
			break
		}
		select {
		case todo <- rand.IntN(opts.Objects):
		case <-ctx.Done():
		}
	}
	close(todo)
	wg.Wait()
	res := Result{Done: int(done.Load()), Failed: int(failed.Load()), Errors: errs.Load(), LastError: errs.lastError(), Seconds: time.Since(start).Seconds()}
	res.Rate = float64(res.Done) / max(res.Seconds, 1e-9)
	if res.Failed > 0 {
		return res, fmt.Errorf("%d updates failed", res.Failed)
	}
	return res, nil
}

// changeSpec gives object i a new random seed, a new generation.
func changeSpec(ctx context.Context, c client.Client, names Names, i int) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{AnnotationSentAt: stamp(time.Now())}},
		"spec":     map[string]any{"seed": rand.Int64()},
	})
	if err != nil {
		return err
	}
	ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: names.Namespace(i), Name: names.Name(i)}}
	return c.Patch(ctx, ld, client.RawPatch(types.MergePatchType, patch))
}
