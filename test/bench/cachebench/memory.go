package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
)

var largeDataGVK = datav1alpha1.GroupVersion.WithKind("LargeData")

// memoryRow is one cache configuration's cost.
type memoryRow struct {
	Name    string  `json:"name"`
	Slots   int     `json:"slots,omitempty"` // 0: not sharded
	Objects int     `json:"objects"`
	InUse   float64 `json:"heapInUseMiB"` // HeapInuse after GC, minus before
	Live    float64 `json:"heapLiveMiB"`  // HeapAlloc after GC, minus before
	Sync    float64 `json:"syncSeconds"`  // creation to synced
	// Ratios of InUse; 0 when the reference is this row.
	ToSingle    float64 `json:"ratioToSingleMember"`
	ToUnsharded float64 `json:"ratioToUnsharded"`
	Kubeshard   bool    `json:"kubeshard"`
	Member      bool    `json:"member"` // one of the 4 members
}

// measureMemory measures, one configuration at a time in this process, the
// heap that a cache holding LargeData takes once synced.
func measureMemory(ctx context.Context, cfg *rest.Config, base cache.Options, c config, progress io.Writer) ([]memoryRow, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating an HTTP client: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("creating a REST mapper: %w", err)
	}
	// The HTTP client and the mapper are shared and warmed before the
	// first measurement, so that no configuration is charged for them.
	for _, gvk := range []schema.GroupVersionKind{largeDataGVK, corev1.SchemeGroupVersion.WithKind("ConfigMap")} {
		if _, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, fmt.Errorf("mapping %s: %w", gvk.Kind, err)
		}
	}
	base.HTTPClient, base.Mapper = hc, mapper

	members := memberNames(4)
	assign, err := ring.Assign(nil, members, ring.Options{Slots: c.slots})
	if err != nil {
		return nil, fmt.Errorf("assigning %d slots to 4 members: %w", c.slots, err)
	}
	all := make([]int, c.slots)
	for s := range all {
		all[s] = s
	}

	// A small cache first, not reported: the first informer of the process
	// pays for decoders, type caches and connection buffers that stay.
	if _, err := measureShardCache(ctx, cfg, base, c.slots, []int{0}); err != nil {
		return nil, fmt.Errorf("warming up: %w", err)
	}

	var rows []memoryRow
	measure := func(name string, slots []int, plain, strip bool) error {
		fmt.Fprintf(progress, "  memory: %s\n", name)
		var row memoryRow
		var err error
		if plain {
			row, err = measurePlainCache(ctx, cfg, base, strip)
		} else {
			row, err = measureShardCache(ctx, cfg, base, c.slots, slots)
			row.Slots, row.Kubeshard = len(slots), true
		}
		if err != nil {
			return fmt.Errorf("measuring %s: %w", name, err)
		}
		row.Name = name
		rows = append(rows, row)
		return nil
	}
	if err := measure("controller-runtime cache, all objects (operator without kubeshard)", nil, true, false); err != nil {
		return nil, err
	}
	if err := measure("controller-runtime cache, all objects, managedFields stripped", nil, true, true); err != nil {
		return nil, err
	}
	if err := measure(fmt.Sprintf("kubeshard, 1 member (all %d slots)", c.slots), all, false, false); err != nil {
		return nil, err
	}
	single := rows[len(rows)-1].InUse
	for _, m := range members {
		if err := measure(fmt.Sprintf("kubeshard, %s of 4 members", m), assign.SlotsOf(m), false, false); err != nil {
			return nil, err
		}
		rows[len(rows)-1].Member = true
	}
	for i := range rows {
		rows[i].ToUnsharded = rows[i].InUse / rows[0].InUse
		rows[i].ToSingle = rows[i].InUse / single
	}
	return rows, nil
}

type heap struct{ inUse, alloc uint64 }

// heapAfterGC collects twice (the first pass may leave finalizers and
// sweeping to a second) and reads the heap.
func heapAfterGC() heap {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heap{inUse: m.HeapInuse, alloc: m.HeapAlloc}
}

func mib(after, before uint64) float64 { return (float64(after) - float64(before)) / (1 << 20) }

// measurePlainCache is the baseline: controller-runtime's cache with a
// LargeData informer over every namespace.
func measurePlainCache(ctx context.Context, cfg *rest.Config, base cache.Options, strip bool) (memoryRow, error) {
	before := heapAfterGC()
	start := time.Now()
	opts := base
	if strip {
		opts.DefaultTransform = cache.TransformStripManagedFields()
	}
	c, err := cache.New(cfg, opts)
	if err != nil {
		return memoryRow{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	stop := func() error { cancel(); return <-done }
	// GetInformer waits for the informer's sync only once the cache runs;
	// WaitForCacheSync returns when it does.
	if !c.WaitForCacheSync(ctx) {
		return memoryRow{}, errors.Join(errors.New("the cache did not start"), stop())
	}
	inf, err := c.GetInformer(ctx, &datav1alpha1.LargeData{})
	if err != nil {
		return memoryRow{}, errors.Join(err, stop())
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return memoryRow{}, errors.Join(errors.New("the LargeData informer did not sync"), stop())
	}
	synced := time.Since(start)
	after := heapAfterGC()
	objects := -1
	if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok {
		objects = len(s.GetStore().ListKeys())
	}
	if err := stop(); err != nil {
		return memoryRow{}, err
	}
	return memoryRow{Objects: objects, InUse: mib(after.inUse, before.inUse), Live: mib(after.alloc, before.alloc), Sync: synced.Seconds()}, nil
}

// measureShardCache measures a member's cache serving slots, created, started
// and filled the way a member's manager and agent do it.
func measureShardCache(ctx context.Context, cfg *rest.Config, base cache.Options, total int, slots []int) (memoryRow, error) {
	before := heapAfterGC()
	start := time.Now()
	c, err := shardcache.New(cfg, base, shardcache.Options{
		ShardedObjects: []client.Object{&datav1alpha1.LargeData{}, &corev1.ConfigMap{}},
		Slots:          total,
	})
	if err != nil {
		return memoryRow{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	stop := func() error { cancel(); return <-done }
	// WaitForCacheSync returns once Start has begun, so that AddSlots
	// starts its group now and waits for its sync.
	if !c.WaitForCacheSync(ctx) {
		return memoryRow{}, errors.Join(errors.New("the cache did not start"), stop())
	}
	if _, err := c.GetInformer(ctx, &datav1alpha1.LargeData{}); err != nil {
		return memoryRow{}, errors.Join(err, stop())
	}
	if err := c.AddSlots(ctx, slots); err != nil {
		return memoryRow{}, errors.Join(err, stop())
	}
	synced := time.Since(start)
	after := heapAfterGC()
	for _, g := range c.Groups() {
		if !g.Synced {
			return memoryRow{}, errors.Join(fmt.Errorf("slot group %d is not synced after AddSlots", g.ID), stop())
		}
	}
	objects := c.Counts()[largeDataGVK]
	if err := stop(); err != nil {
		return memoryRow{}, err
	}
	return memoryRow{Objects: objects, InUse: mib(after.inUse, before.inUse), Live: mib(after.alloc, before.alloc), Sync: synced.Seconds()}, nil
}

func memberNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("op-%d", i)
	}
	return names
}
