package shardcache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Get reads an object. An object of a sharded kind is found only in a served
// slot; elsewhere Get returns NotFound.
func (c *Cache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	kk, err := c.keyFor(obj)
	if err != nil {
		return err
	}
	if !c.sharded[kk.gvk] {
		return c.unsharded.Get(ctx, key, obj, opts...)
	}
	if !c.isStarted() {
		return &cache.ErrCacheNotStarted{}
	}
	k, err := c.kindFor(ctx, kk, true, true)
	if err != nil {
		return err
	}
	for _, g := range c.readers() {
		found := obj.DeepCopyObject().(client.Object)
		if err := g.cache.Get(ctx, key, found, opts...); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("reading %s from slot group %d: %w", key, g.id, err)
		}
		if c.visible(g, kk.gvk, found) {
			// found is a copy of obj's type, so this is the copy
			// controller-runtime's reader makes into obj.
			reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(found).Elem())
			return nil
		}
	}
	return apierrors.NewNotFound(k.resource, key.Name)
}

// List lists objects. For a sharded kind it merges the served slots of
// every group; options apply as in controller-runtime's cache (field
// selectors need an index; continue is not supported). A group still
// syncing after AddSlots makes List wait for it, as an informer that has not
// synced makes controller-runtime's cache wait: a partial list could make a
// reconciler create what exists.
func (c *Cache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	kk, err := c.keyForList(list)
	if err != nil {
		return err
	}
	if !c.sharded[kk.gvk] {
		return c.unsharded.List(ctx, list, opts...)
	}
	if !c.isStarted() {
		return &cache.ErrCacheNotStarted{}
	}
	lo := client.ListOptions{}
	lo.ApplyOptions(opts)
	if lo.Continue != "" {
		return errors.New("continue list option is not supported by the cache")
	}
	// A limit per group would cut a group's list before its unserved
	// objects are filtered out; it applies to the merged list instead.
	limit := lo.Limit
	lo.Limit = 0
	if _, err := c.kindFor(ctx, kk, true, true); err != nil {
		return err
	}
	var items []runtime.Object
	for _, g := range c.readers() {
		part, err := c.newList(kk)
		if err != nil {
			return err
		}
		if err := g.cache.List(ctx, part, &lo); err != nil {
			return fmt.Errorf("listing slot group %d: %w", g.id, err)
		}
		got, err := apimeta.ExtractList(part)
		if err != nil {
			return fmt.Errorf("reading the list of slot group %d: %w", g.id, err)
		}
		items = append(items, c.filterVisible(g, kk.gvk, got)...)
	}
	if limit > 0 && int64(len(items)) > limit {
		items = items[:limit]
	}
	if err := apimeta.SetList(list, items); err != nil {
		return fmt.Errorf("writing the merged list: %w", err)
	}
	list.SetContinue("continue-not-supported")
	return nil
}

// slotOf returns the slot of obj, an object of kind gvk: the slot of its
// uid for a kind selected by shardSelector, else its slot label. ok is false
// without a valid one.
func (c *Cache) slotOf(gvk schema.GroupVersionKind, obj any) (int, bool) {
	if t, isTomb := obj.(toolscache.DeletedFinalStateUnknown); isTomb {
		obj = t.Obj
	}
	m, err := apimeta.Accessor(obj)
	if err != nil {
		return 0, false
	}
	if c.byUID[gvk] {
		s := ring.UIDSlot(string(m.GetUID()), c.opts.Slots)
		return s, s >= 0
	}
	v, ok := m.GetLabels()[shardingv1alpha1.LabelSlot]
	if !ok {
		return 0, false
	}
	s, err := strconv.Atoi(v)
	if err != nil || s < 0 || s >= c.opts.Slots {
		return 0, false
	}
	return s, true
}

// visible tells whether g answers reads for obj: its slot is served and g
// owns it.
func (c *Cache) visible(g *group, gvk schema.GroupVersionKind, obj any) bool {
	s, ok := c.slotOf(gvk, obj)
	if !ok {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.owner[s] == g
}

func (c *Cache) filterVisible(g *group, gvk schema.GroupVersionKind, items []runtime.Object) []runtime.Object {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := items[:0]
	for _, item := range items {
		if s, ok := c.slotOf(gvk, item); ok && c.owner[s] == g {
			out = append(out, item)
		}
	}
	return out
}

// readers are the groups that own a slot, synced ones first: a group still
// syncing blocks a read until it is done, which is right only when the
// object is not found elsewhere.
func (c *Cache) readers() []*group {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var synced, syncing []*group
	for _, g := range c.groups {
		switch {
		case g.owned == 0:
		case isClosed(g.synced):
			synced = append(synced, g)
		default:
			syncing = append(syncing, g)
		}
	}
	return append(synced, syncing...)
}
