package coordinator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/assignment"
)

// Metrics are the ring's figures as the coordinator sees them. Only the
// coordinator exports them, so no series is duplicated across members.
type Metrics struct {
	members       *prometheus.GaugeVec
	slotsOwned    *prometheus.GaugeVec
	unowned       *prometheus.GaugeVec
	moving        *prometheus.GaugeVec
	epoch         *prometheus.GaugeVec
	moves         *prometheus.CounterVec
	rebalances    *prometheus.CounterVec
	handoverTime  *prometheus.HistogramVec
	rebalanceTime *prometheus.HistogramVec
}

// durationBuckets suit both histograms: a handover takes from well under a
// second (nothing in flight, the receiver warm at once) to the receiver's
// warm-up timeout plus the member's drain timeout (10 min and 30 s by
// default), a rebalance a little longer; the last buckets catch stuck ones.
var durationBuckets = prometheus.ExponentialBuckets(0.05, 2, 15) // 50 ms to about 14 minutes

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
		handoverTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kubeshard_ring_handover_duration_seconds",
			Help: "Time from recording a slot's move to recording its new owner, per completed slot handover " +
				"(only handovers this coordinator started).",
			Buckets: durationBuckets,
		}, []string{"ring"}),
		rebalanceTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kubeshard_ring_rebalance_duration_seconds",
			Help: "Time from recording a rebalance's first move to the status with no slot moving " +
				"(only rebalances this coordinator started).",
			Buckets: durationBuckets,
		}, []string{"ring"}),
	}
	for _, c := range []prometheus.Collector{m.members, m.slotsOwned, m.unowned, m.moving, m.epoch, m.moves, m.rebalances, m.handoverTime, m.rebalanceTime} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(ring string, st *shardingv1alpha1.ShardRingStatus, res planResult, took durations) {
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
	// Every series is touched each time, so that it exists (and its rate
	// reads 0, not "no data") before the first rebalance.
	if rebalances := m.rebalances.WithLabelValues(ring); res.started > 0 {
		rebalances.Inc()
	}
	handovers := m.handoverTime.WithLabelValues(ring)
	for _, d := range took.handovers {
		handovers.Observe(d.Seconds())
	}
	if rebalanceTime := m.rebalanceTime.WithLabelValues(ring); took.rebalanced {
		rebalanceTime.Observe(took.rebalance.Seconds())
	}
}

// durations are the handovers and the rebalance that one step finished.
type durations struct {
	handovers []time.Duration
	// rebalanced says whether the step ended a rebalance, which took rebalance.
	rebalanced bool
	rebalance  time.Duration
}

// timings remembers when this coordinator recorded each pending move and the
// first move of the rebalance in progress. It lives in memory only: a
// successor cannot know when its predecessor started the moves it finds, so
// it observes only the handovers and rebalances it started itself.
type timings struct {
	moveStarted      map[int]time.Time // by slot
	rebalanceStarted time.Time         // zero if none is in progress or it was not started here
}

// step compares the assignment before and after a step that was recorded at
// now, and returns what the step finished.
func (t *timings) step(prev, next *assignment.Table, now time.Time) durations {
	if t.moveStarted == nil {
		t.moveStarted = map[int]time.Time{}
	}
	var d durations
	started := false
	for s := range next.Owner {
		from, to := prev.MoveTo[s], next.MoveTo[s]
		if from == to {
			continue
		}
		if from != "" {
			// The move ended: completed if its target owns the slot now,
			// otherwise cancelled or redirected.
			if at, ok := t.moveStarted[s]; ok && next.Owner[s] == from {
				d.handovers = append(d.handovers, now.Sub(at))
			}
			delete(t.moveStarted, s)
		}
		if to != "" {
			t.moveStarted[s] = now
			started = true
		}
	}
	moving := next.Moving() > 0
	switch {
	case started && t.rebalanceStarted.IsZero() && prev.Moving() == 0:
		t.rebalanceStarted = now
	case !moving && !t.rebalanceStarted.IsZero():
		d.rebalanced, d.rebalance = true, now.Sub(t.rebalanceStarted)
		t.rebalanceStarted = time.Time{}
	}
	return d
}
