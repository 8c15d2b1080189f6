package serving

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestGateAdmitsOnlyOpenSlotsOfAValidMember(t *testing.T) {
	var valid atomic.Bool
	valid.Store(true)
	g := NewGate(8, valid.Load)

	if _, ok := g.Enter(3); ok {
		t.Fatal("a closed slot admitted work")
	}
	g.Open([]int{3, 4})
	leave, ok := g.Enter(3)
	if !ok {
		t.Fatal("an open slot refused work")
	}
	leave()
	leave() // a second call must not count twice
	if n := g.InFlight(3); n != 0 {
		t.Fatalf("in flight after leave: %d, want 0", n)
	}

	valid.Store(false)
	if _, ok := g.Enter(4); ok {
		t.Fatal("a member that is no longer valid (fenced) was admitted")
	}
	if _, ok := g.Enter(-1); ok {
		t.Fatal("a slot out of range was admitted")
	}
}

func TestDrainWaitsForWorkInFlightAndNoNewWorkStarts(t *testing.T) {
	g := NewGate(4, nil)
	g.Open([]int{1, 2})
	leave, _ := g.Enter(1)
	other, _ := g.Enter(2)
	defer other()

	g.Close([]int{1})
	if _, ok := g.Enter(1); ok {
		t.Fatal("a closed slot admitted new work while draining")
	}
	done := make(chan error, 1)
	go func() { done <- g.Drain(t.Context(), []int{1}) }()
	select {
	case err := <-done:
		t.Fatalf("Drain returned (%v) while a reconcile of the slot was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	leave()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the last reconcile of the slot ended")
	}
	if got := g.Served(); len(got) != 1 || got[0] != 2 {
		t.Errorf("served after closing slot 1: %v, want [2]", got)
	}
}

func TestDrainGivesUpWhenItsContextEnds(t *testing.T) {
	g := NewGate(2, nil)
	g.Open([]int{0})
	leave, _ := g.Enter(0)
	defer leave()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := g.Drain(ctx, []int{0}); err == nil {
		t.Fatal("Drain returned nil although a reconcile was still in flight")
	}
}
