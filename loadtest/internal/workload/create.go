package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/loadtest/internal/progress"
)

// Spec is the spec of every object the harness creates. The defaults make
// one reconcile per generation: Items at most BatchSize.
type Spec struct {
	// Items per dataset. Default 100.
	Items int64
	// BatchSize per reconcile. Default 500.
	BatchSize int32
}

func (s Spec) withDefaults() Spec {
	if s.Items == 0 {
		s.Items = 100
	}
	if s.BatchSize == 0 {
		s.BatchSize = datav1alpha1.DefaultBatchSize
	}
	return s
}

// Validate reports a spec the API server would reject.
func (s Spec) Validate() error {
	s = s.withDefaults()
	if s.Items < 0 || s.Items > datav1alpha1.MaxItems {
		return fmt.Errorf("items must be in [0, %d], not %d", datav1alpha1.MaxItems, s.Items)
	}
	if s.BatchSize < 1 || s.BatchSize > datav1alpha1.MaxBatchSize {
		return fmt.Errorf("batch size must be in [1, %d], not %d", datav1alpha1.MaxBatchSize, s.BatchSize)
	}
	return nil
}

// CreateOptions configure Create.
type CreateOptions struct {
	Names Names
	// Objects is how many objects there should be (indexes 0..Objects-1).
	Objects int
	// Concurrency is how many creates are in flight at once. Default 16.
	Concurrency int
	// Rate is the target of creates per second; 0 means as fast as
	// Concurrency and the client's QPS allow.
	Rate float64
	// Spec of the objects.
	Spec Spec
	// SampleFirst: Result.FirstRate is the rate of the first SampleFirst
	// creates of this run, to compare with a baseline of that many. Default:
	// none.
	SampleFirst int
	// Progress receives the progress bar; nil draws none.
	Progress io.Writer
	// OnCreate is called after every successful create. Default: none.
	OnCreate func()
}

// Result is what a create, churn or cleanup run did.
type Result struct {
	// Done counts the successful writes (creates, updates or deletes).
	Done int `json:"done"`
	// Skipped counts objects that already were as wanted (existing on
	// create, gone on delete).
	Skipped int `json:"skipped"`
	// Failed counts objects given up on after retries.
	Failed int `json:"failed"`
	// Errors counts every failed request, retried ones included.
	Errors int64 `json:"errors"`
	// Seconds is how long the run took.
	Seconds float64 `json:"seconds"`
	// Rate is Done per second.
	Rate float64 `json:"ratePerSecond"`
	// FirstRate is the rate of the first CreateOptions.SampleFirst creates
	// (for `run`: of the creates alternating with the baseline's).
	FirstRate float64 `json:"firstRatePerSecond,omitempty"`
	// LastError is the last failed request's error, if any.
	LastError string `json:"lastError,omitempty"`
}

func (o CreateOptions) withDefaults() CreateOptions {
	if o.Concurrency == 0 {
		o.Concurrency = 16
	}
	o.Spec = o.Spec.withDefaults()
	return o
}

// Create creates the objects that do not exist yet, and their namespaces.
// Objects that exist already (from an earlier, interrupted run) are skipped,
// and a create that finds its object existing is not an error.
func Create(ctx context.Context, c client.Client, opts CreateOptions) (Result, error) {
	opts = opts.withDefaults()
	if err := opts.Names.Validate(); err != nil {
		return Result{}, err
	}
	if err := opts.Spec.Validate(); err != nil {
		return Result{}, err
	}
	if opts.Objects < 0 || opts.Concurrency < 1 || opts.Rate < 0 {
		return Result{}, fmt.Errorf("objects (%d), concurrency (%d) and rate (%g) must not be negative, concurrency at least 1", opts.Objects, opts.Concurrency, opts.Rate)
	}
	namespaces := min(opts.Names.Namespaces, opts.Objects)
	for i := range namespaces {
		if err := ensureNamespace(ctx, c, opts.Names.Namespace(i), opts.Names.Prefix); err != nil {
			return Result{}, err
		}
	}
	existing, err := existingObjects(ctx, c, opts.Names, opts.Objects)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, ok := range existing {
		if ok {
			res.Skipped++
		}
	}
	bar := progress.New(opts.Progress, opts.Objects, "created")
	defer bar.Finish()

	var done, skipped, failed atomic.Int64
	var errs errorCount
	skipped.Store(int64(res.Skipped))
	var firstAt atomic.Int64
	start := time.Now()
	todo := make(chan int)
	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Go(func() {
			for i := range todo {
				err := withRetries(ctx, &errs, func() error {
					return c.Create(ctx, newObject(opts.Names, i, opts.Spec, time.Now()))
				})
				switch {
				case err == nil:
					n := done.Add(1)
					if int(n) == opts.SampleFirst {
						firstAt.Store(int64(time.Since(start)))
					}
					if opts.OnCreate != nil {
						opts.OnCreate()
					}
				case apierrors.IsAlreadyExists(err):
					skipped.Add(1)
				default:
					failed.Add(1)
				}
				bar.Set(int(done.Load()+skipped.Load()+failed.Load()), errs.Load())
			}
		})
	}
	limiter := newLimiter(opts.Rate, opts.Concurrency)
	err = func() error {
		defer close(todo)
		for i := range opts.Objects {
			if existing[i] {
				continue
			}
			if err := limiter.Wait(ctx); err != nil {
				return err
			}
			select {
			case todo <- i:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}()
	wg.Wait()
	res = Result{Done: int(done.Load()), Skipped: int(skipped.Load()), Failed: int(failed.Load()), Errors: errs.Load(), LastError: errs.lastError()}
	res.Seconds = time.Since(start).Seconds()
	res.Rate = float64(res.Done) / max(res.Seconds, 1e-9)
	if d := time.Duration(firstAt.Load()); d > 0 {
		res.FirstRate = float64(opts.SampleFirst) / d.Seconds()
	}
	if err != nil {
		return res, fmt.Errorf("creating objects: %w (run again to continue)", err)
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("%d objects could not be created (run again to retry them)", res.Failed)
	}
	return res, nil
}

// newObject returns object i, stamped with the time its create is sent.
func newObject(names Names, i int, spec Spec, now time.Time) *datav1alpha1.LargeData {
	return &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   names.Namespace(i),
			Name:        names.Name(i),
			Labels:      map[string]string{LabelRun: names.Prefix},
			Annotations: map[string]string{AnnotationSentAt: stamp(now)},
		},
		Spec: datav1alpha1.LargeDataSpec{Items: spec.Items, BatchSize: spec.BatchSize, Seed: int64(i)},
	}
}

func ensureNamespace(ctx context.Context, c client.Client, name, run string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelRun: run}}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// existingObjects lists, in pages of metadata only, which of the first n
// objects exist.
func existingObjects(ctx context.Context, c client.Client, names Names, n int) ([]bool, error) {
	existing := make([]bool, n)
	err := ListMetadata(ctx, c, names.Prefix, "", func(items []metav1.PartialObjectMetadata) error {
		for _, o := range items {
			if i, ok := names.Index(o.Namespace, o.Name); ok && i < n {
				existing[i] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the objects that exist already: %w", err)
	}
	return existing, nil
}

var largeDataList = datav1alpha1.GroupVersion.WithKind("LargeDataList")

// pageSize is the limit of every list the harness makes.
const pageSize = 2000

// ListMetadata lists the run's LargeData metadata (in namespace, or all
// namespaces when it is empty) page by page.
func ListMetadata(ctx context.Context, c client.Client, run, namespace string, page func([]metav1.PartialObjectMetadata) error) error {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(largeDataList)
	opts := []client.ListOption{client.MatchingLabels{LabelRun: run}, client.Limit(pageSize)}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	for {
		if err := c.List(ctx, list, opts...); err != nil {
			return err
		}
		if err := page(list.Items); err != nil {
			return err
		}
		if list.Continue == "" {
			return nil
		}
		opts = append(opts[:len(opts):len(opts)], client.Continue(list.Continue))
	}
}

// newLimiter returns a limiter of perSecond events, or one that never waits
// for perSecond 0.
func newLimiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond == 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(1, burst))
}

// withRetries runs write until it succeeds, fails for good or has failed
// maxAttempts times with errors worth retrying (overload, timeouts, a
// restarting API server). Every failure is counted in errs; AlreadyExists,
// NotFound and Conflict are answers, not failures.
func withRetries(ctx context.Context, errs *errorCount, write func() error) error {
	const maxAttempts = 6
	var err error
	for attempt := range maxAttempts {
		err = write()
		if err == nil || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return err
		}
		errs.add(err)
		if !retriable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
	}
	return err
}

// errorCount counts failed requests and keeps the last error.
type errorCount struct {
	n    atomic.Int64
	last atomic.Value // string
}

func (e *errorCount) add(err error) {
	e.n.Add(1)
	e.last.Store(err.Error())
}

func (e *errorCount) Load() int64 { return e.n.Load() }

func (e *errorCount) lastError() string {
	s, _ := e.last.Load().(string)
	return s
}

func retriable(err error) bool {
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err) ||
		!isStatusError(err)
}

func isStatusError(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status)
}
