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
	incoming    *prometheus.GaugeVec
	warm        *prometheus.GaugeVec
	kept        *prometheus.GaugeVec
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
		incoming: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_member_slots_incoming", Help: "Slots on their way to this member (a pending move names it) that it warms: caches before it serves them.",
		}, []string{"ring", "member"}),
		warm: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_member_slots_warm", Help: "Incoming slots this member has cached and published as warm on its Lease; their old owners let go of them now.",
		}, []string{"ring", "member"}),
		kept: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_member_slots_kept", Help: "Slots moving away from this member that it still serves until their receiver has them warm (or the warm-up timeout passes).",
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
	for _, c := range []prometheus.Collector{m.slotsServed, m.incoming, m.warm, m.kept, m.releases, m.releaseTime, m.fences, m.refusals} {
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

// setWarmup records the slots of handovers waiting for a warm receiver:
// incoming and warm on the receiving side, kept on the giving side.
func (m *Metrics) setWarmup(ring string, incoming, warm, kept int) {
	if m != nil {
		m.incoming.WithLabelValues(ring, m.member).Set(float64(incoming))
		m.warm.WithLabelValues(ring, m.member).Set(float64(warm))
		m.kept.WithLabelValues(ring, m.member).Set(float64(kept))
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
