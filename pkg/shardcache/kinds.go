package shardcache

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// kind is a sharded kind that somebody asked for; every group has an
// informer for it.
type kind struct {
	key      kindKey
	proto    client.Object
	resource schema.GroupResource // for NotFound errors
	fanIn    *fanIn

	// Guarded by Cache.mu; replayed on every new group.
	handlers []*registration
	indexers toolscache.Indexers
	fields   []fieldIndex
	removed  bool
}

type fieldIndex struct {
	field   string
	extract client.IndexerFunc
}

// GetInformer returns the informer of obj's kind. For a sharded kind it is
// one informer over every present and future slot group, delivering events
// of the served slots only.
func (c *Cache) GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error) {
	kk, err := c.keyFor(obj)
	if err != nil {
		return nil, err
	}
	if !c.sharded[kk.gvk] {
		return c.unsharded.GetInformer(ctx, obj, opts...)
	}
	k, err := c.kindFor(ctx, kk, blockUntilSynced(opts), false)
	if err != nil {
		return nil, err
	}
	return k.fanIn, nil
}

// GetInformerForKind is GetInformer for the typed object of gvk.
func (c *Cache) GetInformerForKind(ctx context.Context, gvk schema.GroupVersionKind, opts ...cache.InformerGetOption) (cache.Informer, error) {
	if !c.sharded[gvk] {
		return c.unsharded.GetInformerForKind(ctx, gvk, opts...)
	}
	k, err := c.kindFor(ctx, kindKey{gvk: gvk, form: typed}, blockUntilSynced(opts), false)
	if err != nil {
		return nil, err
	}
	return k.fanIn, nil
}

// RemoveInformer stops the informers of obj's kind in every group.
func (c *Cache) RemoveInformer(ctx context.Context, obj client.Object) error {
	kk, err := c.keyFor(obj)
	if err != nil {
		return err
	}
	if !c.sharded[kk.gvk] {
		return c.unsharded.RemoveInformer(ctx, obj)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.kinds[kk]
	if k == nil {
		return nil
	}
	delete(c.kinds, kk)
	k.removed = true
	var errs []error
	for _, g := range c.groups {
		delete(g.informers, kk)
		if err := g.cache.RemoveInformer(ctx, k.proto); err != nil {
			errs = append(errs, fmt.Errorf("removing the informer of slot group %d: %w", g.id, err))
		}
	}
	return errors.Join(errs...)
}

// IndexField adds a field index; for a sharded kind, to every present and
// future group.
func (c *Cache) IndexField(ctx context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	kk, err := c.keyFor(obj)
	if err != nil {
		return err
	}
	if !c.sharded[kk.gvk] {
		return c.unsharded.IndexField(ctx, obj, field, extract)
	}
	k, err := c.kindFor(ctx, kk, false, false)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		if err := g.cache.IndexField(ctx, k.proto, field, extract); err != nil {
			return fmt.Errorf("indexing %s in slot group %d: %w", field, g.id, err)
		}
	}
	k.fields = append(k.fields, fieldIndex{field: field, extract: extract})
	return nil
}

func blockUntilSynced(opts []cache.InformerGetOption) bool {
	o := cache.InformerGetOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	return o.BlockUntilSynced == nil || *o.BlockUntilSynced
}

// form tells the three caches controller-runtime keeps per kind apart:
// typed objects, unstructured ones and metadata only.
type form uint8

const (
	typed form = iota
	unstructuredForm
	metadataForm
)

type kindKey struct {
	gvk  schema.GroupVersionKind
	form form
}

func (c *Cache) keyFor(obj runtime.Object) (kindKey, error) {
	gvk, err := apiutil.GVKForObject(obj, c.base.Scheme)
	if err != nil {
		return kindKey{}, err
	}
	switch obj.(type) {
	case runtime.Unstructured:
		return kindKey{gvk: gvk, form: unstructuredForm}, nil
	case *metav1.PartialObjectMetadata:
		return kindKey{gvk: gvk, form: metadataForm}, nil
	}
	return kindKey{gvk: gvk, form: typed}, nil
}

func (c *Cache) keyForList(list client.ObjectList) (kindKey, error) {
	gvk, err := apiutil.GVKForObject(list, c.base.Scheme)
	if err != nil {
		return kindKey{}, err
	}
	gvk.Kind = strings.TrimSuffix(gvk.Kind, "List")
	switch list.(type) {
	case runtime.Unstructured:
		return kindKey{gvk: gvk, form: unstructuredForm}, nil
	case *metav1.PartialObjectMetadataList:
		return kindKey{gvk: gvk, form: metadataForm}, nil
	}
	return kindKey{gvk: gvk, form: typed}, nil
}

// prototype is the object each group's GetInformer is called with.
func (c *Cache) prototype(kk kindKey) (client.Object, error) {
	switch kk.form {
	case unstructuredForm:
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(kk.gvk)
		return u, nil
	case metadataForm:
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(kk.gvk)
		return m, nil
	}
	obj, err := c.base.Scheme.New(kk.gvk)
	if err != nil {
		return nil, err
	}
	co, ok := obj.(client.Object)
	if !ok {
		return nil, fmt.Errorf("%s is not a client.Object", kk.gvk)
	}
	return co, nil
}

// newList is an empty list of the kind, for one group's share of a List.
func (c *Cache) newList(kk kindKey) (client.ObjectList, error) {
	gvk := kk.gvk
	gvk.Kind += "List"
	switch kk.form {
	case unstructuredForm:
		u := &unstructured.UnstructuredList{}
		u.SetGroupVersionKind(gvk)
		return u, nil
	case metadataForm:
		m := &metav1.PartialObjectMetadataList{}
		m.SetGroupVersionKind(gvk)
		return m, nil
	}
	obj, err := c.base.Scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	list, ok := obj.(client.ObjectList)
	if !ok {
		return nil, fmt.Errorf("%s is not a client.ObjectList", gvk)
	}
	return list, nil
}

// kindFor returns the sharded kind kk, creating its informer in every group
// the first time it is asked for. block waits for those informers to sync,
// as controller-runtime does; reader honours ReaderFailOnMissingInformer.
func (c *Cache) kindFor(ctx context.Context, kk kindKey, block, reader bool) (*kind, error) {
	c.mu.RLock()
	k := c.kinds[kk]
	c.mu.RUnlock()
	if k == nil {
		if reader && c.base.ReaderFailOnMissingInformer {
			return nil, &cache.ErrResourceNotCached{GVK: kk.gvk}
		}
		var err error
		if k, err = c.addKind(ctx, kk); err != nil {
			return nil, err
		}
	}
	if !block || !c.isStarted() {
		return k, nil
	}
	type pending struct {
		g   *group
		inf cache.Informer
	}
	var wait []pending
	c.mu.RLock()
	for _, g := range c.groups {
		if inf := g.informers[kk]; inf != nil {
			wait = append(wait, pending{g, inf})
		}
	}
	c.mu.RUnlock()
	for _, p := range wait {
		select {
		case <-p.inf.HasSyncedChecker().Done():
		case <-p.g.stopped:
		case <-ctx.Done():
			return nil, apierrors.NewTimeoutError(fmt.Sprintf("failed waiting for %s informer of slot group %d to sync", kk.gvk, p.g.id), 0)
		}
	}
	return k, nil
}

func (c *Cache) addKind(ctx context.Context, kk kindKey) (*kind, error) {
	proto, err := c.prototype(kk)
	if err != nil {
		return nil, err
	}
	// The first mapping of a kind may ask the API server; do it before
	// taking the lock that every event handler reads.
	mapping, err := c.base.Mapper.RESTMapping(kk.gvk.GroupKind(), kk.gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("mapping %s to a resource: %w", kk.gvk, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.kinds[kk]; k != nil {
		return k, nil
	}
	k := &kind{key: kk, proto: proto, resource: mapping.Resource.GroupResource()}
	k.fanIn = &fanIn{c: c, k: k}
	for i, g := range c.groups {
		if err := c.addKindToGroupLocked(ctx, k, g); err != nil {
			for _, done := range c.groups[:i+1] {
				delete(done.informers, kk)
				_ = done.cache.RemoveInformer(ctx, proto) // best effort: the error below is what matters
			}
			return nil, err
		}
	}
	c.kinds[kk] = k
	return k, nil
}
