package testenv

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalMessage runs f with a fatalRecorder and returns what it failed with,
// or "" when it did not fail.
func fatalMessage(t *testing.T, f func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestMetricValueSumsTheMatchingSeriesAndFailsWhenNoneMatches(t *testing.T) {
	reg := prometheus.NewRegistry()
	labels := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "labels_total", Help: "h"}, []string{"ring", "reason"})
	moving := prometheus.NewGauge(prometheus.GaugeOpts{Name: "moving", Help: "h"})
	sweep := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sweep_seconds", Help: "h"}, []string{"ring"})
	reg.MustRegister(labels, moving, sweep)
	labels.WithLabelValues("a", "missing").Add(2)
	labels.WithLabelValues("a", "wrong").Add(3)
	labels.WithLabelValues("b", "missing").Add(5)
	moving.Set(4)
	sweep.WithLabelValues("a").Observe(1.5)
	sweep.WithLabelValues("a").Observe(2)
	sweep.WithLabelValues("b").Observe(7)

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"labels_total", nil, 10},
		{"labels_total", map[string]string{"ring": "a"}, 5},
		{"labels_total", map[string]string{"reason": "missing"}, 7},
		{"labels_total", map[string]string{"ring": "b", "reason": "missing"}, 5},
		{"moving", nil, 4},
	} {
		if got := MetricValue(t, reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("MetricValue(%s) = %v, want %v", selector(tc.name, tc.labels), got, tc.want)
		}
	}
	if count, sum := Histogram(t, reg, "sweep_seconds", map[string]string{"ring": "a"}); count != 2 || sum != 3.5 {
		t.Errorf("Histogram(sweep_seconds{ring=a}) = %v samples summing to %v, want 2 summing to 3.5", count, sum)
	}

	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{"label_total", nil},
		{"labels_total", map[string]string{"ring": "c"}},
		{"labels_total", map[string]string{"ring": "b", "reason": "wrong"}},
	} {
		want := "no series " + selector(tc.name, tc.labels)
		if got := fatalMessage(t, func(tb testing.TB) { MetricValue(tb, reg, tc.name, tc.labels) }); got != want {
			t.Errorf("MetricValue(%s) failed with %q, want %q", selector(tc.name, tc.labels), got, want)
		}
	}
}

func TestEventuallyReturnsOnceTheConditionHoldsAndFailsWithTheLastReason(t *testing.T) {
	checks := 0
	msg := fatalMessage(t, func(tb testing.TB) {
		Eventually(tb, 5*time.Second, "the third check", func() (bool, string) {
			checks++
			return checks == 3, ""
		})
	})
	if msg != "" || checks != 3 {
		t.Errorf("Eventually failed with %q after %d checks, want to return after 3", msg, checks)
	}

	checks = 0
	msg = fatalMessage(t, func(tb testing.TB) {
		Eventually(tb, 20*time.Millisecond, "never", func() (bool, string) {
			checks++
			return false, fmt.Sprintf("check %d", checks)
		})
	})
	if want := fmt.Sprintf("never: not within 20ms (check %d)", checks); msg != want {
		t.Errorf("Eventually failed with %q, want %q", msg, want)
	}
	if checks < 2 {
		t.Errorf("Eventually checked %d times in 20ms, want several", checks)
	}
}
