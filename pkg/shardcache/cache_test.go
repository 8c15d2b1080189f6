package shardcache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

var widgetKind = testkind.GroupVersion.WithKind("Widget")

func TestOptionsDefaultsAndValidation(t *testing.T) {
	o := Options{ShardedObjects: []client.Object{&testkind.Widget{}}}.withDefaults()
	if o.Slots != ring.DefaultSlots || o.CompactAfter != DefaultCompactAfter || o.Clock == nil {
		t.Errorf("defaults = %d slots, %v, clock %v", o.Slots, o.CompactAfter, o.Clock)
	}
	if err := (Options{}).withDefaults().validate(); err == nil {
		t.Error("Options without ShardedObjects passed validation")
	}
	for _, rate := range []float64{-1, math.NaN(), math.Inf(1)} {
		bad := Options{ShardedObjects: []client.Object{&testkind.Widget{}}, HandoverRate: rate}
		if err := bad.withDefaults().validate(); err == nil {
			t.Errorf("HandoverRate %v passed validation", rate)
		}
	}
	byUID := Options{ShardSelectorObjects: []client.Object{&testkind.Widget{}}}
	if err := byUID.withDefaults().validate(); err != nil {
		t.Errorf("Options with only ShardSelectorObjects: %v", err)
	}
}

func TestACacheServingNothingFindsNothing(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.widgets(0, 2)
	tc.start(t)

	err := tc.Get(t.Context(), types.NamespacedName{Namespace: "a", Name: "w-0-0"}, &testkind.Widget{})
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) ||
		status.Status().Details.Group != "example.kubeshard.dev" || status.Status().Details.Kind != "widgets" {
		t.Errorf("Get = %v, want NotFound of widgets.example.kubeshard.dev", err)
	}
	list := &testkind.WidgetList{}
	if err := tc.List(t.Context(), list); err != nil || len(list.Items) != 0 {
		t.Errorf("List = %d items, %v; want none", len(list.Items), err)
	}
	if got := tc.Served(); len(got) != 0 {
		t.Errorf("Served = %v", got)
	}
}

func TestAddSlotsListsOnlyTheGainedSlotsAndListMergesGroups(t *testing.T) {
	tc := newTestCache(t, Options{})
	for s := range 8 {
		tc.widgets(s, 3)
	}
	tc.start(t)
	ctx := t.Context()
	if err := tc.IndexField(ctx, &testkind.Widget{}, "spec.size", func(o client.Object) []string {
		return []string{strconv.FormatInt(o.(*testkind.Widget).Spec.Size, 10)}
	}); err != nil {
		t.Fatal(err)
	}

	if err := tc.AddSlots(ctx, []int{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	// Slot 2 is served already: the new group selects slot 3 alone.
	if err := tc.AddSlots(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	if got := tc.api.listedFor("sharding.kubeshard.dev/slot in (3)"); got != 6 {
		t.Errorf("the group of slot 3 listed %d objects, want its 6", got)
	}
	groups := tc.Groups()
	if len(groups) != 2 || !slices.Equal(groups[0].Slots, []int{0, 1, 2}) || !slices.Equal(groups[1].Slots, []int{3}) {
		t.Fatalf("groups = %+v", groups)
	}
	if got := tc.Served(); !slices.Equal(got, seq(0, 3)) {
		t.Errorf("Served = %v", got)
	}

	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 4*6 {
		t.Errorf("List = %d items, want 24", len(list.Items))
	}
	for _, w := range list.Items {
		if w.ManagedFields != nil {
			t.Errorf("%s kept its managedFields", w.Name)
		}
	}
	if err := tc.List(ctx, list, client.InNamespace("b"), client.MatchingLabels{"sharding.kubeshard.dev/slot": "3"}); err != nil || len(list.Items) != 3 {
		t.Errorf("List in b of slot 3 = %d items, %v; want 3", len(list.Items), err)
	}
	if err := tc.List(ctx, list, client.MatchingFields{"spec.size": "1"}); err != nil || len(list.Items) != 4*2 {
		t.Errorf("List by the size index = %d items, %v; want 8 (one per served slot and namespace)", len(list.Items), err)
	}
	if err := tc.List(ctx, list, client.Limit(5)); err != nil || len(list.Items) != 5 {
		t.Errorf("List with limit 5 = %d items, %v", len(list.Items), err)
	}

	got := &testkind.Widget{}
	if err := tc.Get(ctx, types.NamespacedName{Namespace: "a", Name: "w-3-1"}, got); err != nil || got.Spec.Size != 1 {
		t.Errorf("Get of a served object = %v, size %d", err, got.Spec.Size)
	}
	if err := tc.Get(ctx, types.NamespacedName{Namespace: "a", Name: "w-4-1"}, got); !apierrors.IsNotFound(err) {
		t.Errorf("Get of an object in an unserved slot = %v, want NotFound", err)
	}
}

func TestRemoveSlotsHidesTheirObjectsAndEventsAtOnce(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	tc := newTestCache(t, Options{Clock: clk})
	var objs [][]*testkind.Widget
	for s := range 4 {
		objs = append(objs, tc.widgets(s, 2))
	}
	tc.start(t)
	ctx := t.Context()
	rec := tc.record(t)
	if err := tc.AddSlots(ctx, seq(0, 3)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the initial list arrives", func() (bool, string) { a, _, _ := rec.counts(); return a == 16, rec.String() })

	tc.RemoveSlots([]int{1})
	if err := tc.Get(ctx, client.ObjectKeyFromObject(objs[1][0]), &testkind.Widget{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get of a removed slot's object = %v, want NotFound", err)
	}
	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 12 {
		t.Errorf("List = %d items, %v; want the 12 of slots 0, 2, 3", len(list.Items), err)
	}
	if got := tc.Counts()[widgetKind]; got != 12 {
		t.Errorf("Counts = %d, want 12", got)
	}
	// Not compacted yet: the group still holds slot 1.
	if g := tc.Groups(); len(g) != 1 || g[0].Objects[widgetKind] != 16 || !slices.Equal(g[0].Served, []int{0, 2, 3}) {
		t.Errorf("groups = %+v", g)
	}

	tc.modify(objs[1][0])
	tc.modify(objs[2][0])
	testenv.Eventually(t, wait, "the served slot's update arrives", func() (bool, string) { _, u, _ := rec.counts(); return u == 1, rec.String() })
	never(t, "an update of a removed slot arrived", func() bool { _, u, _ := rec.counts(); return u > 1 })
}

func TestAGroupLeftWithoutSlotsStopsAtOnce(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.widgets(0, 1)
	tc.widgets(2, 1)
	tc.start(t)
	ctx := t.Context()
	if _, err := tc.GetInformer(ctx, &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := tc.AddSlots(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := tc.AddSlots(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	tc.RemoveSlots([]int{3, 2})
	if g := tc.Groups(); len(g) != 1 || !slices.Equal(g[0].Slots, []int{0, 1}) {
		t.Errorf("groups = %+v, want the group of 0 and 1 alone", g)
	}
	inf := tc.api.informer("Widget", "sharding.kubeshard.dev/slot in (2,3)")
	testenv.Eventually(t, wait, "the informer of slots 2 and 3 stops", func() (bool, string) { return inf.IsStopped(), "still running" })
}

func TestCompactionFreesRemovedSlotsWithoutRepeatingAdds(t *testing.T) {
	// The replacement takes its objects from the old group's store, or,
	// with RelistOnCompaction, lists them from the API server.
	t.Run("from the store", func(t *testing.T) { testCompaction(t, false) })
	t.Run("relisted", func(t *testing.T) { testCompaction(t, true) })
}

func testCompaction(t *testing.T, relist bool) {
	clk := testingclock.NewFakeClock(time.Now())
	tc := newTestCache(t, Options{Clock: clk, CompactAfter: time.Minute, RelistOnCompaction: relist})
	var objs [][]*testkind.Widget
	for s := range 4 {
		objs = append(objs, tc.widgets(s, 5))
	}
	tc.start(t)
	ctx := t.Context()
	rec := tc.record(t)
	if err := tc.AddSlots(ctx, seq(0, 3)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the initial list arrives", func() (bool, string) { a, _, _ := rec.counts(); return a == 40, rec.String() })

	tc.RemoveSlots([]int{0, 1})
	tc.modify(objs[2][0]) // known to the old group at its new version before compaction starts
	testenv.Eventually(t, wait, "the update arrives", func() (bool, string) { _, u, _ := rec.counts(); return u == 1, rec.String() })

	old := tc.api.informer("Widget", "sharding.kubeshard.dev/slot in (0,1,2,3)")
	testenv.Eventually(t, wait, "the group is compacted", func() (bool, string) {
		clk.Step(time.Minute) // CompactAfter, then handoverGrace
		g := tc.Groups()
		return len(g) == 1 && slices.Equal(g[0].Slots, []int{2, 3}), fmt.Sprintf("groups %+v", g)
	})
	if g := tc.Groups()[0]; g.Objects[widgetKind] != 20 || !slices.Equal(g.Served, []int{2, 3}) {
		t.Errorf("replacement = %+v, want the 20 objects of slots 2 and 3", g)
	}
	wantLists := 0
	if relist {
		wantLists = 1
	}
	if got := tc.api.listsFor("sharding.kubeshard.dev/slot in (2,3)"); got != wantLists {
		t.Errorf("the replacement listed %d times from the API server, want %d", got, wantLists)
	}
	testenv.Eventually(t, wait, "the old informer stops", func() (bool, string) { return old.IsStopped(), "still running" })
	if a, u, d := rec.counts(); a != 40 || u != 1 || d != 0 {
		t.Errorf("after compaction: %d adds, %d updates, %d deletes; want the 40 adds and 1 update from before", a, u, d)
	}

	// The replacement alone delivers now, once per change.
	tc.modify(objs[3][0])
	testenv.Eventually(t, wait, "the update arrives", func() (bool, string) { _, u, _ := rec.counts(); return u == 2, rec.String() })
	never(t, "an update arrived twice", func() bool { _, u, _ := rec.counts(); return u > 2 })
	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 20 {
		t.Errorf("List = %d items, %v; want 20", len(list.Items), err)
	}
}

func TestAnAddOfTheReplacementIsAnUpdateWhenTheObjectChanged(t *testing.T) {
	tc := newTestCache(t, Options{})
	objs := tc.widgets(0, 1)
	tc.start(t)
	ctx := t.Context()
	if _, err := tc.GetInformer(ctx, &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := tc.AddSlots(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	tc.mu.Lock()
	o := tc.groups[0]
	n, err := tc.newGroupLocked(ctx, []int{0}, nil, "")
	if err != nil {
		tc.mu.Unlock()
		t.Fatal(err)
	}
	o.successor, n.predecessor = n, o
	tc.mu.Unlock()

	rec := newRecorder()
	h := &groupHandler{c: tc.Cache, g: n, key: kindKey{gvk: widgetKind}, handler: rec}
	same := objs[0].DeepCopy()
	same.ResourceVersion = "1" // as the source numbered it, and the old group holds it
	h.OnAdd(same, true)
	changed := same.DeepCopy()
	changed.ResourceVersion = "7"
	h.OnAdd(changed, true)
	other := same.DeepCopy()
	other.Name = "created-meanwhile"
	h.OnAdd(other, true)
	if rec.adds[keyOf(same)] != 0 || rec.updates[keyOf(changed)] != 1 || rec.adds[keyOf(other)] != 1 {
		t.Errorf("adds %v, updates %v; want the changed object as an update and the new one as an add", rec.adds, rec.updates)
	}
}

func TestAnUpdateAcrossTheServedSlotsIsAnAddOrADelete(t *testing.T) {
	tc := newTestCache(t, Options{})
	objs := tc.widgets(1, 1)
	tc.start(t)
	ctx := t.Context()
	if err := tc.AddSlots(ctx, []int{1}); err != nil {
		t.Fatal(err)
	}
	tc.mu.RLock()
	g := tc.groups[0]
	tc.mu.RUnlock()
	rec := newRecorder()
	h := &groupHandler{c: tc.Cache, g: g, key: kindKey{gvk: widgetKind}, handler: rec}
	in := objs[0]
	out := in.DeepCopy()
	out.Labels["sharding.kubeshard.dev/slot"] = "6"
	h.OnUpdate(out, in)
	h.OnUpdate(in, out)
	h.OnUpdate(out, out)
	if a, u, d := rec.counts(); a != 1 || u != 0 || d != 1 {
		t.Errorf("%d adds, %d updates, %d deletes; want 1 add and 1 delete", a, u, d)
	}
}

func TestHandlersFollowGroupsAddedLaterAndCanBeRemoved(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.start(t)
	ctx := t.Context()
	inf, err := tc.GetInformer(ctx, &testkind.Widget{})
	if err != nil {
		t.Fatal(err)
	}
	first, second := newRecorder(), newRecorder()
	reg, err := inf.AddEventHandler(first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inf.AddEventHandlerWithResyncPeriod(second, 0); err != nil {
		t.Fatal(err)
	}
	if !reg.HasSynced() || !inf.HasSynced() || inf.IsStopped() {
		t.Errorf("with no group: handler synced %v, informer synced %v, stopped %v", reg.HasSynced(), inf.HasSynced(), inf.IsStopped())
	}
	if err := tc.AddSlots(ctx, []int{5}); err != nil {
		t.Fatal(err)
	}
	tc.widgets(5, 1)
	tc.widgets(6, 1)
	testenv.Eventually(t, wait, "both see the served slot's objects", func() (bool, string) {
		a1, _, _ := first.counts()
		a2, _, _ := second.counts()
		return a1 == 2 && a2 == 2, fmt.Sprintf("first saw %s, second %s", first, second)
	})
	if err := inf.RemoveEventHandler(reg); err != nil {
		t.Fatal(err)
	}
	objs := tc.widgets(5, 2) // two per namespace
	tc.modify(objs[3])
	testenv.Eventually(t, wait, "the remaining handler sees the new objects", func() (bool, string) {
		a, u, _ := second.counts()
		return a == 6 && u == 1, second.String()
	})
	never(t, "a removed handler saw an event", func() bool { a, u, _ := first.counts(); return a != 2 || u != 0 })
	never(t, "an unexpected event arrived", func() bool { a, u, _ := second.counts(); return a != 6 || u != 1 })
}

func TestSlotsAddedBeforeStartAreCachedFromStart(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.widgets(0, 2)
	tc.widgets(1, 2)
	ctx := t.Context()
	if err := tc.AddSlots(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	tc.RemoveSlots([]int{1})
	err := tc.Get(ctx, types.NamespacedName{Namespace: "a", Name: "w-0-0"}, &testkind.Widget{})
	var notStarted *cache.ErrCacheNotStarted
	if !errors.As(err, &notStarted) {
		t.Errorf("Get before Start = %v, want ErrCacheNotStarted", err)
	}
	tc.start(t)
	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 4 {
		t.Errorf("List = %d items, %v; want the 4 of slot 0", len(list.Items), err)
	}
	if g := tc.Groups(); len(g) != 1 || !slices.Equal(g[0].Slots, []int{0}) || g[0].Objects[widgetKind] != 4 {
		t.Errorf("groups = %+v, want one for slot 0 alone", g)
	}
}

func TestReaderFailOnMissingInformerIsHonoured(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.base.ReaderFailOnMissingInformer = true
	tc.start(t)
	err := tc.List(t.Context(), &testkind.WidgetList{})
	var notCached *cache.ErrResourceNotCached
	if !errors.As(err, &notCached) || notCached.GVK != (schema.GroupVersionKind{Group: "example.kubeshard.dev", Version: "v1", Kind: "Widget"}) {
		t.Errorf("List = %v, want ErrResourceNotCached", err)
	}
}

func TestGroupOptionsAddTheSlotsToEverySelector(t *testing.T) {
	tc := newTestCache(t, Options{Transform: func(o any) (any, error) { return o, nil }})
	tc.base.DefaultLabelSelector = labels.SelectorFromSet(labels.Set{"team": "x"})
	tc.base.DefaultNamespaces = map[string]cache.Config{
		"own":   {LabelSelector: labels.SelectorFromSet(labels.Set{"app": "y"})},
		"plain": {},
	}
	opts, err := tc.groupOptions([]int{3, 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.ByObject) != 2 {
		t.Fatalf("ByObject has %d kinds, want Widget and ConfigMap", len(opts.ByObject))
	}
	for obj, bo := range opts.ByObject {
		if got := bo.Label.String(); got != "sharding.kubeshard.dev/slot in (1,3),team=x" {
			t.Errorf("%T selects %q", obj, got)
		}
		if got := bo.Namespaces["own"].LabelSelector.String(); got != "app=y,sharding.kubeshard.dev/slot in (1,3)" {
			t.Errorf("%T selects %q in namespace own", obj, got)
		}
		if bo.Namespaces["plain"].LabelSelector != nil {
			t.Errorf("%T: namespace plain has a selector of its own; it should inherit the kind's", obj)
		}
		if bo.Transform == nil {
			t.Errorf("%T has no transform", obj)
		}
	}
}

func TestASlotRegainedBeforeCompactionIsServedOnceByItsNewGroup(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	tc := newTestCache(t, Options{Clock: clk, CompactAfter: time.Minute})
	var objs [][]*testkind.Widget
	for s := range 4 {
		objs = append(objs, tc.widgets(s, 2))
	}
	tc.start(t)
	ctx := t.Context()
	rec := tc.record(t)
	if err := tc.AddSlots(ctx, seq(0, 3)); err != nil {
		t.Fatal(err)
	}
	// AddSlots returns when the informers have synced, not when the
	// handlers have had the initial list. An Add of slot 1 still queued
	// when it is removed is dropped, rightly: it is no longer served.
	testenv.Eventually(t, wait, "the initial list arrives", func() (bool, string) { a, _, _ := rec.counts(); return a == 16, rec.String() })
	tc.RemoveSlots([]int{1})
	if err := tc.AddSlots(ctx, []int{1}); err != nil {
		t.Fatal(err)
	}
	// A new owner reconciles everything it gains: slot 1 arrives again.
	testenv.Eventually(t, wait, "slot 1 arrives again", func() (bool, string) { a, _, _ := rec.counts(); return a == 16+4, rec.String() })
	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 16 {
		t.Errorf("List = %d items, %v; want 16, each once although two groups hold slot 1", len(list.Items), err)
	}
	tc.modify(objs[1][0])
	testenv.Eventually(t, wait, "the update arrives", func() (bool, string) { _, u, _ := rec.counts(); return u == 1, rec.String() })
	never(t, "the stale group delivered the update too", func() bool { _, u, _ := rec.counts(); return u > 1 })

	testenv.Eventually(t, wait, "the first group is compacted", func() (bool, string) {
		clk.Step(time.Minute)
		g := tc.Groups()
		return len(g) == 2 && slices.Equal(g[1].Slots, []int{0, 2, 3}), fmt.Sprintf("groups %+v", g)
	})
	if got := tc.Served(); !slices.Equal(got, seq(0, 3)) {
		t.Errorf("Served = %v", got)
	}
	if a, _, _ := rec.counts(); a != 20 {
		t.Errorf("%d adds after compaction, want still 20", a)
	}
}

func TestAddSlotsThatCannotSyncLeavesThemUnserved(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.widgets(0, 1)
	tc.start(t)
	if _, err := tc.GetInformer(t.Context(), &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	tc.api.failLists.Store(true)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := tc.AddSlots(ctx, []int{0}); err == nil {
		t.Fatal("AddSlots succeeded although its group cannot sync")
	}
	if s, g := tc.Served(), tc.Groups(); len(s) != 0 || len(g) != 0 {
		t.Errorf("after a failed AddSlots: served %v, groups %+v", s, g)
	}
	tc.api.failLists.Store(false)
	if err := tc.AddSlots(t.Context(), []int{0}); err != nil {
		t.Fatalf("AddSlots again = %v", err)
	}
	list := &testkind.WidgetList{}
	if err := tc.List(t.Context(), list); err != nil || len(list.Items) != 2 {
		t.Errorf("List = %d items, %v; want 2", len(list.Items), err)
	}
}
