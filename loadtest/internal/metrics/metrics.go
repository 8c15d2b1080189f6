// Package metrics holds the Prometheus metrics the harness exposes while it
// runs, for dashboards that follow a load test live.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the harness's own metrics.
type Metrics struct {
	// Creates counts LargeData objects created.
	Creates prometheus.Counter
	// Updates counts spec changes made by churn.
	Updates prometheus.Counter
	// TimeToReconciled is the time from a create or spec change (the
	// client's clock when it sent the write) to the status showing that
	// generation reconciled.
	TimeToReconciled prometheus.Histogram
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Creates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeshard_loadtest_creates_total",
			Help: "LargeData objects the load test created.",
		}),
		Updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeshard_loadtest_updates_total",
			Help: "LargeData spec changes the load test made.",
		}),
		TimeToReconciled: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kubeshard_loadtest_time_to_reconciled_seconds",
			Help:    "Time from a LargeData create or spec change to its status showing that generation Ready.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 17), // 10 ms to about 11 minutes
		}),
	}
	for _, c := range []prometheus.Collector{m.Creates, m.Updates, m.TimeToReconciled} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
