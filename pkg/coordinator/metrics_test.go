package coordinator

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/assignment"
)

// TestHandoverAndRebalanceDurationsAreObserved joins a third member to a
// settled ring of two and checks what the coordinator's histograms say
// about the rebalance: one sample per slot handed over, each no longer than
// the time since the join, and one rebalance that lasted at least as long
// as its slowest handover.
func TestHandoverAndRebalanceDurationsAreObserved(t *testing.T) {
	s := newSim(t, 1)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s.metrics = m
	for _, name := range []string{"op-1", "op-2"} {
		s.start(name)
	}
	s.settle()
	// A fresh ring is assigned without handovers: nothing to time yet.
	ring := map[string]string{"ring": simRingName}
	completedSlots := map[string]string{"ring": simRingName, "result": "completed"}
	handovers0, handoverSum0 := testenv.Histogram(t, reg, "kubeshard_ring_handover_duration_seconds", ring)
	rebalances0, rebalanceSum0 := testenv.Histogram(t, reg, "kubeshard_ring_rebalance_duration_seconds", ring)
	completed0 := testenv.MetricValue(t, reg, "kubeshard_ring_handovers_total", completedSlots)

	joined := s.clock.Now()
	s.start("op-3")
	s.settle()
	elapsed := s.clock.Now().Sub(joined)

	completed := testenv.MetricValue(t, reg, "kubeshard_ring_handovers_total", completedSlots) - completed0
	handovers, handoverSum := testenv.Histogram(t, reg, "kubeshard_ring_handover_duration_seconds", ring)
	rebalances, rebalanceSum := testenv.Histogram(t, reg, "kubeshard_ring_rebalance_duration_seconds", ring)
	handovers, handoverSum = handovers-handovers0, handoverSum-handoverSum0
	rebalances, rebalanceSum = rebalances-rebalances0, rebalanceSum-rebalanceSum0
	if completed < simSlots/3 {
		t.Fatalf("%v handovers completed after the join, want at least %d (a third of the slots)", completed, simSlots/3)
	}
	if handovers != completed {
		t.Errorf("the handover histogram has %v samples, want one per completed handover (%v)", handovers, completed)
	}
	if rebalances != 1 {
		t.Fatalf("the rebalance histogram has %v samples after one join, want 1", rebalances)
	}
	mean := time.Duration(handoverSum / handovers * float64(time.Second))
	took := time.Duration(rebalanceSum * float64(time.Second))
	if mean <= 0 || mean > elapsed {
		t.Errorf("mean handover %s, want more than 0 and at most the %s since the join", mean, elapsed)
	}
	if took < mean || took > elapsed {
		t.Errorf("the rebalance took %s, want at least the mean handover (%s) and at most the %s since the join", took, mean, elapsed)
	}
	if moving := testenv.MetricValue(t, reg, "kubeshard_ring_moving_slots", ring); moving != 0 {
		t.Errorf("kubeshard_ring_moving_slots = %v after settling, want 0", moving)
	}
	t.Logf("%v handovers, mean %s; rebalance %s; %s since the join", completed, mean, took, elapsed)
}

// TestTimingsObserveOnlyWhatThisCoordinatorStarted steps the timings through
// moves that complete, are cancelled and are found in progress by a new
// coordinator: only completed moves it recorded itself are timed.
func TestTimingsObserveOnlyWhatThisCoordinatorStarted(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	with := func(tb *assignment.Table, moves map[int]string) *assignment.Table {
		next := tb.Clone()
		for s, to := range moves {
			next.MoveTo[s] = to
		}
		return next
	}
	settled := table(1, "a", "a", "a", "a", "b", "b", "b", "b")
	moving := with(settled, map[int]string{0: "c", 1: "c", 4: "c"})

	var tm timings
	if d := tm.step(settled, moving, t0); len(d.handovers) != 0 || d.rebalanced {
		t.Fatalf("starting moves finished %+v", d)
	}
	// Slot 0 completes, slot 1 is cancelled (c died), slot 4 still moves.
	step2 := with(moving, map[int]string{0: "", 1: ""})
	step2.Owner[0] = "c"
	d := tm.step(moving, step2, t0.Add(2*time.Second))
	if len(d.handovers) != 1 || d.handovers[0] != 2*time.Second || d.rebalanced {
		t.Fatalf("after one completed and one cancelled move: %+v, want one handover of 2s and no end of rebalance", d)
	}
	done := with(step2, map[int]string{4: ""})
	done.Owner[4] = "c"
	d = tm.step(step2, done, t0.Add(5*time.Second))
	if len(d.handovers) != 1 || d.handovers[0] != 5*time.Second || !d.rebalanced || d.rebalance != 5*time.Second {
		t.Fatalf("at the last move's completion: %+v, want a handover of 5s and a rebalance of 5s", d)
	}

	// A successor finds a move in progress: it cannot time it, nor the
	// rebalance it belongs to.
	var successor timings
	_ = successor.step(moving, moving, t0)
	finished := moving.Clone()
	for s := range finished.MoveTo {
		if to := finished.MoveTo[s]; to != "" {
			finished.Owner[s], finished.MoveTo[s] = to, ""
		}
	}
	if d := successor.step(moving, finished, t0.Add(time.Second)); len(d.handovers) != 0 || d.rebalanced {
		t.Fatalf("a successor timed moves it did not start: %+v", d)
	}
}
