package store

import (
	"cmp"
	"context"
	"iter"
	"slices"
	"sync"
)

// Result is the outcome of one record's transformation.
type Result struct {
	Index int64
	// Value is the result; empty when Failed.
	Value  string
	Failed bool
}

// Transformed is the outcome of a batch.
type Transformed struct {
	// Results are in index order.
	Results []Result
	// Failed counts the failed results.
	Failed int
	// Fold is the XOR of RecordHash over the results that did not fail: the
	// batch's contribution to Progress.Checksum.
	Fold uint64
}

// TransformRecords runs fn over the records that records yields, on at most
// workers goroutines (below 1 means 1), and returns the results. It is the
// worker pool of every Store's ProcessBatch: records is read as fn keeps up,
// so an implementation can stream the batch from its database rather than
// load it first. It stops at the first error records yields, or when ctx
// ends, and returns that error.
func TransformRecords(ctx context.Context, workers int, fn Transform, records iter.Seq2[Record, error]) (Transformed, error) {
	workers = max(workers, 1)
	in := make(chan Record, workers)
	out := make(chan Result, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for rec := range in {
				v, err := fn(rec.Payload)
				if err != nil {
					out <- Result{Index: rec.Index, Failed: true}
					continue
				}
				out <- Result{Index: rec.Index, Value: v}
			}
		})
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	var t Transformed
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for r := range out {
			t.Results = append(t.Results, r)
			if r.Failed {
				t.Failed++
			} else {
				t.Fold ^= RecordHash(r.Index, r.Value)
			}
		}
	}()

	err := feed(ctx, in, records)
	close(in)
	<-collected
	if err != nil {
		return Transformed{}, err
	}
	slices.SortFunc(t.Results, func(a, b Result) int { return cmp.Compare(a.Index, b.Index) })
	return t, nil
}

func feed(ctx context.Context, in chan<- Record, records iter.Seq2[Record, error]) error {
	for rec, err := range records {
		if err != nil {
			return err
		}
		select {
		case in <- rec:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}
