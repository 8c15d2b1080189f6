package shardcache

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// fanIn is the informer of a sharded kind: one informer over the kind's
// informer in every present and future slot group.
type fanIn struct {
	c *Cache
	k *kind
}

var _ cache.Informer = (*fanIn)(nil)

// AddEventHandler adds handler to every group's informer.
func (f *fanIn) AddEventHandler(handler toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	return f.AddEventHandlerWithOptions(handler, toolscache.HandlerOptions{})
}

// AddEventHandlerWithResyncPeriod adds handler with a resync period to every
// group's informer.
func (f *fanIn) AddEventHandlerWithResyncPeriod(handler toolscache.ResourceEventHandler, resyncPeriod time.Duration) (toolscache.ResourceEventHandlerRegistration, error) {
	return f.AddEventHandlerWithOptions(handler, toolscache.HandlerOptions{ResyncPeriod: &resyncPeriod})
}

// AddEventHandlerWithOptions adds handler to every present and future
// group's informer. It receives the events of the served slots only.
func (f *fanIn) AddEventHandlerWithOptions(handler toolscache.ResourceEventHandler, opts toolscache.HandlerOptions) (toolscache.ResourceEventHandlerRegistration, error) {
	c := f.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.k.removed {
		return nil, fmt.Errorf("the %s informer was removed", f.k.key.gvk)
	}
	r := &registration{
		kind:    f.k,
		handler: handler,
		opts:    opts,
		regs:    map[*group]toolscache.ResourceEventHandlerRegistration{},
		synced:  make(chan struct{}),
	}
	for _, g := range c.groups {
		if inf := g.informers[f.k.key]; inf != nil {
			if err := r.addToLocked(c, g, inf); err != nil {
				return nil, errors.Join(err, r.removeLocked())
			}
		}
	}
	f.k.handlers = append(f.k.handlers, r)
	r.watchSync()
	return r, nil
}

// RemoveEventHandler removes a handler from every group's informer.
func (f *fanIn) RemoveEventHandler(handle toolscache.ResourceEventHandlerRegistration) error {
	r, ok := handle.(*registration)
	if !ok || r.kind != f.k {
		return errors.New("registration was not returned by this informer")
	}
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	err := r.removeLocked()
	for i, other := range f.k.handlers {
		if other == r {
			f.k.handlers = append(f.k.handlers[:i], f.k.handlers[i+1:]...)
			break
		}
	}
	return err
}

// AddIndexers adds indexers to every present and future group's informer.
func (f *fanIn) AddIndexers(indexers toolscache.Indexers) error {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	for _, g := range f.c.groups {
		if inf := g.informers[f.k.key]; inf != nil {
			if err := inf.AddIndexers(indexers); err != nil {
				return fmt.Errorf("adding indexers to slot group %d: %w", g.id, err)
			}
		}
	}
	if f.k.indexers == nil {
		f.k.indexers = toolscache.Indexers{}
	}
	maps.Copy(f.k.indexers, indexers)
	return nil
}

// HasSynced tells whether every group's informer has synced.
func (f *fanIn) HasSynced() bool {
	f.c.mu.RLock()
	defer f.c.mu.RUnlock()
	for _, g := range f.c.groups {
		if inf := g.informers[f.k.key]; inf != nil && !inf.HasSynced() {
			return false
		}
	}
	return true
}

// HasSyncedChecker completes when the informers of the groups present now
// have synced (or stopped).
func (f *fanIn) HasSyncedChecker() toolscache.DoneChecker {
	type pending struct {
		g   *group
		chk toolscache.DoneChecker
	}
	var wait []pending
	f.c.mu.RLock()
	for _, g := range f.c.groups {
		if inf := g.informers[f.k.key]; inf != nil {
			wait = append(wait, pending{g, inf.HasSyncedChecker()})
		}
	}
	f.c.mu.RUnlock()
	d := &doneChecker{name: fmt.Sprintf("shardcache %s informer", f.k.key.gvk), done: make(chan struct{})}
	go func() {
		for _, p := range wait {
			select {
			case <-p.chk.Done():
			case <-p.g.stopped:
			}
		}
		close(d.done)
	}()
	return d
}

// IsStopped tells whether the informer was removed or the cache stopped.
func (f *fanIn) IsStopped() bool {
	f.c.mu.RLock()
	defer f.c.mu.RUnlock()
	return f.k.removed || (f.c.runCtx != nil && f.c.runCtx.Err() != nil)
}

type doneChecker struct {
	name string
	done chan struct{}
}

func (d *doneChecker) Name() string          { return d.name }
func (d *doneChecker) Done() <-chan struct{} { return d.done }

// registration is a handler added to a fanIn, with its registration in each
// group's informer.
type registration struct {
	kind    *kind
	handler toolscache.ResourceEventHandler
	opts    toolscache.HandlerOptions
	regs    map[*group]toolscache.ResourceEventHandlerRegistration // guarded by Cache.mu
	synced  chan struct{}
}

var _ toolscache.ResourceEventHandlerRegistration = (*registration)(nil)

func (r *registration) addToLocked(c *Cache, g *group, inf cache.Informer) error {
	hr, err := inf.AddEventHandlerWithOptions(&groupHandler{c: c, g: g, key: r.kind.key, handler: r.handler}, r.opts)
	if err != nil {
		return fmt.Errorf("adding a %s event handler to slot group %d: %w", r.kind.key.gvk, g.id, err)
	}
	r.regs[g] = hr
	return nil
}

func (r *registration) removeLocked() error {
	var errs []error
	for g, hr := range r.regs {
		if inf := g.informers[r.kind.key]; inf != nil {
			if err := inf.RemoveEventHandler(hr); err != nil {
				errs = append(errs, fmt.Errorf("removing an event handler from slot group %d: %w", g.id, err))
			}
		}
	}
	clear(r.regs)
	return errors.Join(errs...)
}

// watchSync closes synced once the handler has had the initial list of
// every group present when it was added. The caller holds Cache.mu.
func (r *registration) watchSync() {
	type pending struct {
		g   *group
		chk toolscache.DoneChecker
	}
	wait := make([]pending, 0, len(r.regs))
	for g, hr := range r.regs {
		wait = append(wait, pending{g, hr.HasSyncedChecker()})
	}
	if len(wait) == 0 {
		close(r.synced)
		return
	}
	go func() {
		for _, p := range wait {
			select {
			case <-p.chk.Done():
			case <-p.g.stopped:
			}
		}
		close(r.synced)
	}()
}

// HasSynced tells whether the handler has had the initial list of every
// group present when it was added.
func (r *registration) HasSynced() bool { return isClosed(r.synced) }

// HasSyncedChecker completes when HasSynced becomes true.
func (r *registration) HasSyncedChecker() toolscache.DoneChecker { return r }

// Name names the registration for logs about waiting.
func (r *registration) Name() string {
	return fmt.Sprintf("shardcache %s event handler", r.kind.key.gvk)
}

// Done is closed when HasSynced becomes true.
func (r *registration) Done() <-chan struct{} { return r.synced }

// groupHandler passes one group's events of the slots it answers for to a
// handler of the fanIn.
type groupHandler struct {
	c       *Cache
	g       *group
	key     kindKey
	handler toolscache.ResourceEventHandler
}

func (h *groupHandler) OnAdd(obj any, isInInitialList bool) {
	r := h.c.route(h.g, h.key, obj)
	if !r.deliver || r.superseded(obj) {
		return
	}
	if r.predecessor != nil {
		if known, ok := stored(r.predecessor, obj); ok {
			// Delivered already, or an older state than the one
			// delivered: a replacement's first list from the old store
			// can be behind it.
			if newer(obj, known) {
				h.handler.OnUpdate(known, obj)
			}
			return
		}
	}
	h.handler.OnAdd(obj, isInInitialList)
}

func (h *groupHandler) OnUpdate(oldObj, newObj any) {
	// Slot labels do not change, but if one did the object would enter or
	// leave the served slots, and handlers should see it come or go.
	wasServed := h.c.route(h.g, h.key, oldObj).deliver
	r := h.c.route(h.g, h.key, newObj)
	isServed := r.deliver
	if isServed && wasServed && r.superseded(newObj) {
		return
	}
	switch {
	case wasServed && isServed:
		h.handler.OnUpdate(oldObj, newObj)
	case isServed:
		h.handler.OnAdd(newObj, false)
	case wasServed:
		h.handler.OnDelete(oldObj)
	}
}

func (h *groupHandler) OnDelete(obj any) {
	if h.c.route(h.g, h.key, obj).deliver {
		h.handler.OnDelete(obj)
	}
}

// routing is what route found for an event of one group.
type routing struct {
	deliver bool
	// predecessor is, while the group replaces another, that group's
	// informer of the kind, to check Adds against.
	predecessor cache.Informer
	// successor is, while the group is being replaced, its replacement's
	// informer of the kind.
	successor cache.Informer
}

// superseded tells whether the replacement of the group holds obj at a
// newer resourceVersion: it has delivered, or will deliver, that newer
// state, and a late event of the old group would follow it with an older
// one.
func (r routing) superseded(obj any) bool {
	if r.successor == nil {
		return false
	}
	known, ok := stored(r.successor, obj)
	if !ok {
		return false
	}
	later, ok := laterVersion(known, obj)
	return ok && later
}

// route tells whether g delivers an event of obj: when g owns its slot, or
// while g and the slot's owner replace one another. During such a
// replacement it also returns the informer of the other group.
func (c *Cache) route(g *group, key kindKey, obj any) routing {
	s, ok := c.slotOf(key.gvk, obj)
	if !ok {
		return routing{}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	o := c.owner[s]
	switch {
	case o == nil:
		return routing{}
	case o == g, o == g.successor, o.successor == g:
	default:
		return routing{}
	}
	r := routing{deliver: true}
	if p := g.predecessor; p != nil {
		r.predecessor = p.informers[key]
	}
	if n := g.successor; n != nil {
		r.successor = n.informers[key]
	}
	return r
}

// stored returns the object with obj's key from inf's store.
func stored(inf cache.Informer, obj any) (any, bool) {
	s, ok := inf.(interface{ GetStore() toolscache.Store })
	if !ok {
		return nil, false
	}
	key, err := toolscache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		return nil, false
	}
	item, exists, err := s.GetStore().GetByKey(key)
	if err != nil || !exists {
		return nil, false
	}
	return item, true
}

// newer tells whether a is a later state of its object than b: a greater
// resourceVersion, compared as numbers (etcd's and kine's are); where they
// are not numbers, any other resourceVersion than b's.
func newer(a, b any) bool {
	if later, ok := laterVersion(a, b); ok {
		return later
	}
	ma, errA := apimeta.Accessor(a)
	mb, errB := apimeta.Accessor(b)
	return errA == nil && errB == nil && ma.GetResourceVersion() != mb.GetResourceVersion()
}

// laterVersion tells whether a's resourceVersion is greater than b's; ok is
// false unless both are numbers.
func laterVersion(a, b any) (later, ok bool) {
	ma, errA := apimeta.Accessor(a)
	mb, errB := apimeta.Accessor(b)
	if errA != nil || errB != nil {
		return false, false
	}
	va, errA := strconv.ParseUint(ma.GetResourceVersion(), 10, 64)
	vb, errB := strconv.ParseUint(mb.GetResourceVersion(), 10, 64)
	if errA != nil || errB != nil {
		return false, false
	}
	return va > vb, true
}
