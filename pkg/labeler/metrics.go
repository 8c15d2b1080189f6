package labeler

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Why an object was labelled, the values of the reason label.
const (
	// reasonMissing: the object had no slot label.
	reasonMissing = "missing"
	// reasonWrong: the object's slot label was not its slot.
	reasonWrong = "wrong"
)

type metrics struct {
	labels        *prometheus.CounterVec
	sweepDuration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, ring string) (*metrics, error) {
	labels, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeshard_labeler_labels_total",
		Help: "Slot labels the labeler wrote, by ring and reason (missing, wrong). " +
			"A steady rate of missing means the webhook is not labelling.",
	}, []string{"ring", "reason"}))
	if err != nil {
		return nil, err
	}
	sweepDuration, err := registerOrReuse(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubeshard_labeler_sweep_duration_seconds",
		Help:    "How long one sweep over every object of the ring's kinds took, by ring.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 13), // 0.1 s to about 7 minutes
	}, []string{"ring"}))
	if err != nil {
		return nil, err
	}
	for _, r := range []string{reasonMissing, reasonWrong} {
		labels.WithLabelValues(ring, r)
	}
	return &metrics{labels: labels, sweepDuration: sweepDuration}, nil
}

// registerOrReuse registers c, or returns the collector registered before
// under the same name: several labelers (one per ring, or one per test) in a
// process share one metric, told apart by the ring label.
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
