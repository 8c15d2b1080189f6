package serving

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a member's figures. Every member exports its own; the label
// values are the ring and the member, both bounded.
type Metrics struct {
	member      string
	slotsServed *prometheus.GaugeVec
	releases    *prometheus.CounterVec
	releaseTime *prometheus.HistogramVec
	fences      *prometheus.CounterVec
	refusals    *prometheus.CounterVec
}

// Why Admit refused a request: the values of the reason label.
const (
	reasonNotServed    = "not_served"
	reasonLeaseOverdue = "lease_overdue"
)

// NewMetrics creates a member's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer, member string) (*Metrics, error) {
	m := &Metrics{
		member: member,
		slotsServed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_member_slots_served", Help: "Slots this member serves, counted once the cache of each has synced.",
		}, []string{"ring", "member"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeshard_member_slot_releases_total", Help: "Slots this member handed over.",
		}, []string{"ring", "member"}),
		releaseTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kubeshard_member_release_duration_seconds",
			Help:    "Time from closing released slots to the end of their last reconcile.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"ring", "member"}),
		fences: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeshard_member_fenced_total", Help: "Times this member stopped serving because it could not renew its Lease.",
		}, []string{"ring", "member"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeshard_member_requests_refused_total",
			Help: "Reconcile requests this member refused: not_served (another member's slot; dropped) or lease_overdue (its own slot while a Lease renewal is late; retried).",
		}, []string{"ring", "member", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.slotsServed, m.releases, m.releaseTime, m.fences, m.refusals} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) setServed(ring string, n int) {
	if m != nil {
		m.slotsServed.WithLabelValues(ring, m.member).Set(float64(n))
		// The counters and the histogram start at zero, so that their rates
		// (and the alert on fencing) read 0 rather than "no data" before the
		// first event, and the first event is seen as an increase.
		m.releases.WithLabelValues(ring, m.member)
		m.releaseTime.WithLabelValues(ring, m.member)
		m.fences.WithLabelValues(ring, m.member)
		for _, reason := range []string{reasonNotServed, reasonLeaseOverdue} {
			m.refusals.WithLabelValues(ring, m.member, reason)
		}
	}
}

func (m *Metrics) released(ring string, n int, took time.Duration) {
	if m != nil {
		m.releases.WithLabelValues(ring, m.member).Add(float64(n))
		m.releaseTime.WithLabelValues(ring, m.member).Observe(took.Seconds())
	}
}

func (m *Metrics) fenced(ring string) {
	if m != nil {
		m.fences.WithLabelValues(ring, m.member).Inc()
	}
}

func (m *Metrics) refused(ring, reason string) {
	if m != nil {
		m.refusals.WithLabelValues(ring, m.member, reason).Inc()
	}
}
