package testenv

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// MetricValue returns the value of the counter or gauge name that g exports,
// summed over the series whose labels include labels (nil: every series).
// Tests read a component's metrics by their exported names, from the
// registry they gave it: prometheus/testutil's ToFloat64 needs the collector,
// which every component keeps unexported, and GatherAndCompare needs each
// family's help text.
//
// It fails t when no series matches, so that a misspelt name or label does
// not read as 0. Where no series is a fine answer (a counter vector before
// its first increment), ask testutil.GatherAndCount first.
func MetricValue(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	var v float64
	for _, m := range series(t, g, name, labels) {
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return v
}

// Histogram returns the sample count and the sum of the samples of the
// histogram name that g exports, over the series whose labels include
// labels. It fails t as MetricValue does.
func Histogram(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) (count, sum float64) {
	t.Helper()
	for _, m := range series(t, g, name, labels) {
		count += float64(m.GetHistogram().GetSampleCount())
		sum += m.GetHistogram().GetSampleSum()
	}
	return count, sum
}

// series returns the series of the metric name whose labels include labels,
// and fails t when there is none.
func series(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) []*dto.Metric {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	var out []*dto.Metric
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				out = append(out, m)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no series %s", selector(name, labels))
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// selector writes name and labels as PromQL does: name{a="1",b="2"}.
func selector(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+strconv.Quote(labels[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}
