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
	opIngest     = "ingest"
)

// Stream operations, the values of the stream errors' operation label.
const (
	streamRead   = "read"
	streamAck    = "ack"
	streamForget = "forget"
)

// Values of the stream entries' result label.
const (
	entryIngested  = "ingested"
	entryMalformed = "malformed"
	entryDuplicate = "duplicate"
)

type metrics struct {
	itemsProcessed *prometheus.CounterVec
	batchDuration  *prometheus.HistogramVec
	storeErrors    *prometheus.CounterVec

	streamEntries    *prometheus.CounterVec
	streamErrors     *prometheus.CounterVec
	streamLag        prometheus.Gauge
	streamAckLatency prometheus.Histogram
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
	for _, op := range []string{opInitialize, opProcess, opDelete, opIngest} {
		storeErrors.WithLabelValues(op)
	}
	streamEntries, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeshard_largedata_stream_entries_total",
		Help: "Stream entries this member acknowledged, by result: ingested (stored as a record), " +
			"malformed (counted and skipped), duplicate (the dataset held it already: read again after a crash or a handover).",
	}, []string{"result"}))
	if err != nil {
		return nil, err
	}
	streamErrors, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeshard_largedata_stream_errors_total",
		Help: "Failed calls to the stream source, by operation (read, ack, forget).",
	}, []string{"operation"}))
	if err != nil {
		return nil, err
	}
	streamLag, err := registerOrReuse(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kubeshard_largedata_stream_lag",
		Help: "Entries not yet read from the streams of the datasets this member consumes, summed, as of each dataset's last read.",
	}))
	if err != nil {
		return nil, err
	}
	streamAckLatency, err := registerOrReuse(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "kubeshard_largedata_stream_ack_latency_seconds",
		Help: "From an entry's production (the time in its stream ID) to its acknowledgement, after its record was committed.",
		// 5 ms to about 5 minutes.
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 17),
	}))
	if err != nil {
		return nil, err
	}
	for _, res := range []string{entryIngested, entryMalformed, entryDuplicate} {
		streamEntries.WithLabelValues(res)
	}
	for _, op := range []string{streamRead, streamAck, streamForget} {
		streamErrors.WithLabelValues(op)
	}
	for _, p := range []datav1alpha1.Processing{datav1alpha1.ProcessingChecksum, datav1alpha1.ProcessingUppercase, datav1alpha1.ProcessingReverse} {
		itemsProcessed.WithLabelValues(string(p), resultSucceeded)
	}
	return &metrics{
		itemsProcessed: itemsProcessed, batchDuration: batchDuration, storeErrors: storeErrors,
		streamEntries: streamEntries, streamErrors: streamErrors, streamLag: streamLag, streamAckLatency: streamAckLatency,
	}, nil
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
