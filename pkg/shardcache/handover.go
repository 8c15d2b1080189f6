package shardcache

import (
	"context"
	"sync"
	"time"
)

// A member that adopts warm slots (AddSlots of slots that Warm cached while
// their old owner served them) delivers their objects to the handlers as
// Adds, and a controller reconciles each of them once more. Its priority
// queue puts those reconciles behind the changes that users wait for, but
// it still runs them as fast as its workers go: in a 4 -> 5 rebalance at
// 300,000 LargeData the newcomer verified the 60,000 objects it took over
// within 10 s, at 0.9 cores with the PostgreSQL store each reconcile reads;
// at 1,000,000, ~200,000 such reconciles overlapped a stall of every
// member's changes.
//
// With Options.HandoverRate set, the adopted objects go to the handlers at
// that rate instead: the re-verification of a handover, which the old owner
// had just done, becomes bounded background work. Changes are not paced:
// an Update of an adopted object is delivered as soon as it happens, and
// objects of slots gained cold (first start, an owner that died, no warmup)
// arrive at once, since nobody may have reconciled them for a while.

// handoverTick is how often a pacer delivers; each delivery is the rate's
// share of the time since the last one.
const handoverTick = 100 * time.Millisecond

// pacer delivers adopted objects at Options.HandoverRate.
type pacer struct {
	c    *Cache
	rate float64 // objects per second

	mu    sync.Mutex
	queue []handover
	wake  chan struct{}
}

// handover is one adopted object on its way to one handler.
type handover struct {
	g   *group
	r   *registration
	obj any
}

func newPacer(c *Cache, rate float64) *pacer {
	return &pacer{c: c, rate: rate, wake: make(chan struct{}, 1)}
}

// add queues objects of g for r's handler.
func (p *pacer) add(g *group, r *registration, objects []any) {
	p.mu.Lock()
	for _, obj := range objects {
		p.queue = append(p.queue, handover{g: g, r: r, obj: obj})
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Len returns how many adopted objects wait for delivery.
func (p *pacer) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// take removes up to n objects from the front of the queue.
func (p *pacer) take(n int) []handover {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = min(n, len(p.queue))
	out := make([]handover, n)
	copy(out, p.queue)
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil // let the backing array go
	}
	return out
}

// run delivers until ctx ends. Tokens accrue at the rate, at most one
// second's worth, so an idle pacer does not release a burst.
func (p *pacer) run(ctx context.Context) {
	clk := p.c.opts.Clock
	var tokens float64
	last := clk.Now()
	for {
		if p.Len() == 0 {
			select {
			case <-p.wake:
			case <-ctx.Done():
				return
			}
			tokens, last = 0, clk.Now()
		}
		t := clk.NewTimer(handoverTick)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return
		}
		now := clk.Now()
		tokens = min(tokens+p.rate*now.Sub(last).Seconds(), max(p.rate, 1))
		last = now
		n := int(tokens)
		if n == 0 {
			continue
		}
		tokens -= float64(n)
		for _, h := range p.take(n) {
			if p.c.stillAdopted(h) {
				h.r.handler.OnAdd(h.obj, true)
			}
		}
	}
}

// stillAdopted tells whether h is still to be delivered: its handler is
// registered with its group, and the group still serves the object's slot
// (a slot lost meanwhile is its new owner's to reconcile).
func (c *Cache) stillAdopted(h handover) bool {
	c.mu.RLock()
	_, registered := h.r.regs[h.g]
	c.mu.RUnlock()
	return registered && c.route(h.g, h.r.kind.key, h.obj).deliver
}

// HandoverPending returns how many objects of adopted slots wait to be
// delivered to the handlers (Options.HandoverRate); 0 without a rate.
func (c *Cache) HandoverPending() int {
	if c.pacer == nil {
		return 0
	}
	return c.pacer.Len()
}

// deliverAdopted hands the objects of adopted slots to their handlers: to
// the pacer with a HandoverRate, else at once.
func (c *Cache) deliverAdopted(g *group, deliveries []delivery) {
	for _, d := range deliveries {
		if c.pacer != nil {
			c.pacer.add(g, d.r, d.objects)
			continue
		}
		for _, obj := range d.objects {
			// The slots' initial list, as a cold group's would be: a
			// controller's priority queue puts these behind the changes
			// that arrive meanwhile, which are what users wait for.
			d.r.handler.OnAdd(obj, true)
		}
	}
}
