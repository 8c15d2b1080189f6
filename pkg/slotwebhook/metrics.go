package slotwebhook

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of an admission request, the values of the result label.
const (
	// resultLabelled: the response sets or corrects the slot label.
	resultLabelled = "labelled"
	// resultUnchanged: the object already had the right label.
	resultUnchanged = "unchanged"
	// resultSkipped: the object has no slot (not a kind of the ring, a child
	// without a sharded controller, no name yet) or the ring does not exist.
	resultSkipped = "skipped"
	// resultError: the webhook failed and allowed the object unchanged.
	resultError = "error"
)

type metrics struct {
	assignments *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, ring string) (*metrics, error) {
	assignments, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeshard_webhook_assignments_total",
		Help: "Admission requests the slot-label webhook answered, by ring and result " +
			"(labelled, unchanged, skipped, error). Errors allow the object unlabelled; the labeler catches up.",
	}, []string{"ring", "result"}))
	if err != nil {
		return nil, err
	}
	// Start every series at zero so that a rate over an error-free period
	// reads 0, not "no data".
	for _, r := range []string{resultLabelled, resultUnchanged, resultSkipped, resultError} {
		assignments.WithLabelValues(ring, r)
	}
	return &metrics{assignments: assignments}, nil
}

// registerOrReuse registers c, or returns the collector registered before
// under the same name: several handlers (one per ring, or one per test) in a
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
