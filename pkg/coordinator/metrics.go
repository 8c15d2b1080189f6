package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

// Metrics are the ring's figures as the coordinator sees them. Only the
// coordinator exports them, so no series is duplicated across members.
type Metrics struct {
	members    *prometheus.GaugeVec
	slotsOwned *prometheus.GaugeVec
	unowned    *prometheus.GaugeVec
	moving     *prometheus.GaugeVec
	epoch      *prometheus.GaugeVec
	moves      *prometheus.CounterVec
	rebalances *prometheus.CounterVec
}

// NewMetrics creates the coordinator's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_ring_members", Help: "Members of the ring by state, as the coordinator sees them.",
		}, []string{"ring", "state"}),
		slotsOwned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_ring_member_slots", Help: "Slots owned by each member.",
		}, []string{"ring", "member"}),
		unowned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_ring_unowned_slots", Help: "Slots without a live owner.",
		}, []string{"ring"}),
		moving: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_ring_moving_slots", Help: "Slots in a pending handover.",
		}, []string{"ring"}),
		epoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeshard_ring_epoch", Help: "Epoch of the ring's assignment.",
		}, []string{"ring"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeshard_ring_handovers_total", Help: "Slot handovers, by what became of them.",
		}, []string{"ring", "result"}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeshard_ring_rebalances_total", Help: "Changes of the target assignment.",
		}, []string{"ring"}),
	}
	for _, c := range []prometheus.Collector{m.members, m.slotsOwned, m.unowned, m.moving, m.epoch, m.moves, m.rebalances} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(ring string, st *shardingv1alpha1.ShardRingStatus, res planResult) {
	if m == nil {
		return
	}
	for _, state := range []shardingv1alpha1.MemberState{shardingv1alpha1.MemberReady, shardingv1alpha1.MemberJoining, shardingv1alpha1.MemberLeaving, shardingv1alpha1.MemberExpired} {
		n := 0
		for _, ms := range st.Members {
			if ms.State == state {
				n++
			}
		}
		m.members.WithLabelValues(ring, string(state)).Set(float64(n))
	}
	m.slotsOwned.DeletePartialMatch(prometheus.Labels{"ring": ring})
	for _, ms := range st.Members {
		m.slotsOwned.WithLabelValues(ring, ms.Name).Set(float64(ms.SlotCount))
	}
	m.unowned.WithLabelValues(ring).Set(float64(st.UnownedSlots))
	m.moving.WithLabelValues(ring).Set(float64(st.MovingSlots))
	m.epoch.WithLabelValues(ring).Set(float64(st.Epoch))
	m.moves.WithLabelValues(ring, "completed").Add(float64(res.completed))
	m.moves.WithLabelValues(ring, "cancelled").Add(float64(res.cancelled))
	if res.started > 0 {
		m.rebalances.WithLabelValues(ring).Inc()
	}
}
