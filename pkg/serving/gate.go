package serving

import (
	"context"
	"fmt"
	"sync"
)

// Gate admits work on the slots a member serves and counts the work in flight
// per slot. Closing a slot refuses new work at once; Drain then waits for the
// work already admitted. It is safe for concurrent use.
type Gate struct {
	// valid reports whether the member may work at all (its Lease is fresh).
	valid func() bool

	mu       sync.Mutex
	open     []bool
	inFlight []int
	// drained is closed and replaced whenever in-flight work ends, waking
	// every Drain to look again; cheap because slots rarely drain.
	drained chan struct{}
}

// NewGate returns a gate over the given number of slots with every slot
// closed. valid is checked on every Enter; nil means always valid.
func NewGate(slots int, valid func() bool) *Gate {
	if valid == nil {
		valid = func() bool { return true }
	}
	return &Gate{
		valid:    valid,
		open:     make([]bool, slots),
		inFlight: make([]int, slots),
		drained:  make(chan struct{}),
	}
}

// Enter admits one piece of work on slot if the slot is open and the member
// is valid. The caller must call leave when the work ends.
func (g *Gate) Enter(slot int) (leave func(), ok bool) {
	if !g.valid() {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if slot < 0 || slot >= len(g.open) || !g.open[slot] {
		return nil, false
	}
	g.inFlight[slot]++
	var once sync.Once
	return func() { once.Do(func() { g.leave(slot) }) }, true
}

func (g *Gate) leave(slot int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight[slot]--
	if g.inFlight[slot] == 0 {
		close(g.drained)
		g.drained = make(chan struct{})
	}
}

// Open starts admitting work on slots.
func (g *Gate) Open(slots []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range slots {
		g.open[s] = true
	}
}

// Close stops admitting work on slots. Work already admitted goes on; Drain
// waits for it.
func (g *Gate) Close(slots []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range slots {
		g.open[s] = false
	}
}

// CloseAll stops admitting work on every slot and returns the slots that
// were open.
func (g *Gate) CloseAll() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var was []int
	for s, open := range g.open {
		if open {
			was = append(was, s)
			g.open[s] = false
		}
	}
	return was
}

// Drain waits until no admitted work on slots is in flight, or ctx ends.
func (g *Gate) Drain(ctx context.Context, slots []int) error {
	for {
		g.mu.Lock()
		busy := -1
		for _, s := range slots {
			if g.inFlight[s] > 0 {
				busy = s
				break
			}
		}
		wake := g.drained
		g.mu.Unlock()
		if busy < 0 {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the reconciles of slot %d to end: %w", busy, context.Cause(ctx))
		}
	}
}

// Served returns the open slots in increasing order.
func (g *Gate) Served() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var slots []int
	for s, open := range g.open {
		if open {
			slots = append(slots, s)
		}
	}
	return slots
}

// IsServed reports whether slot is open.
func (g *Gate) IsServed(slot int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slot >= 0 && slot < len(g.open) && g.open[slot]
}

// InFlight returns the number of admitted pieces of work on slot.
func (g *Gate) InFlight(slot int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight[slot]
}
