package largedata

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
)

// Store operations, the values of the operation label.
const (
	opInitialize = "initialize"
	opProcess    = "process"
	opDelete     = "delete"
)

type metrics struct {
	itemsProcessed *prometheus.CounterVec
	batchDuration  *prometheus.HistogramVec
	storeErrors    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	itemsProcessed, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeshard_largedata_items_processed_total",
		Help: "Records processed, by processing and result (succeeded, failed). " +
			"Each record counts once per generation of its dataset.",
	}, []string{"processing", "result"}))
	if err != nil {
		return nil, err
	}
	batchDuration, err := registerOrReuse(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubeshard_largedata_batch_duration_seconds",
		Help:    "How long one batch took in the store, by operation (initialize, process, delete).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms to about 16 s
	}, []string{"operation"}))
	if err != nil {
		return nil, err
	}
	storeErrors, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeshard_largedata_store_errors_total",
		Help: "Failed calls to the store, by operation (initialize, process, delete).",
	}, []string{"operation"}))
	if err != nil {
		return nil, err
	}
	for _, op := range []string{opInitialize, opProcess, opDelete} {
		storeErrors.WithLabelValues(op)
	}
	for _, p := range []datav1alpha1.Processing{datav1alpha1.ProcessingChecksum, datav1alpha1.ProcessingUppercase, datav1alpha1.ProcessingReverse} {
		itemsProcessed.WithLabelValues(string(p), resultSucceeded)
	}
	return &metrics{itemsProcessed: itemsProcessed, batchDuration: batchDuration, storeErrors: storeErrors}, nil
}

// Values of the result label.
const (
	resultSucceeded = "succeeded"
	resultFailed    = "failed"
)

// registerOrReuse registers c, or returns the collector registered before
// under the same name: several reconcilers in a process (tests run one per
// store) share one metric.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("registering metrics: %w", err)
	}
	return c, nil
}
