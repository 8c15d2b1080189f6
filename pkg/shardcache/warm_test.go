package shardcache

import (
	"fmt"
	"slices"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
)

// A member warms the slots of a handover while their old owner still serves
// them; the objects must stay out of sight until the slots are its own, and
// then arrive without a second list.
func TestWarmSlotsAreServedWithoutListingThemAgain(t *testing.T) {
	tc := newTestCache(t, Options{})
	var objs [][]*testkind.Widget
	for s := range 4 {
		objs = append(objs, tc.widgets(s, 5))
	}
	tc.start(t)
	ctx := t.Context()
	rec := tc.record(t)
	if err := tc.AddSlots(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "the served slots' list arrives", func() (bool, string) { a, _, _ := rec.counts(); return a == 20, rec.String() })

	if err := tc.Warm(ctx, []int{1, 2, 3}); err != nil { // 1 is served: skipped
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "slots 2 and 3 are warm", func() (bool, string) {
		got := tc.Warmed([]int{1, 2, 3})
		return slices.Equal(got, []int{2, 3}), fmt.Sprintf("warmed %v", got)
	})
	if got := tc.api.listedFor("sharding.kubeshard.dev/slot in (2,3)"); got != 20 {
		t.Errorf("warming listed %d objects, want the 20 of slots 2 and 3", got)
	}

	// Warm is not served: no read sees the objects, no event is delivered.
	if err := tc.Get(ctx, client.ObjectKeyFromObject(objs[2][0]), &testkind.Widget{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get of a warm slot's object = %v, want NotFound", err)
	}
	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 20 {
		t.Errorf("List = %d items, %v; want the 20 of slots 0 and 1", len(list.Items), err)
	}
	if got := tc.Served(); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("Served = %v, want [0 1]", got)
	}
	tc.modify(objs[2][0])
	never(t, "an event of a warm slot was delivered", func() bool { a, u, _ := rec.counts(); return a != 20 || u != 0 })

	// Adopted one at a time, as a handover completes member by member.
	if err := tc.AddSlots(ctx, []int{2}); err != nil {
		t.Fatal(err)
	}
	if a, u, _ := rec.counts(); a != 30 || u != 0 {
		t.Errorf("after adopting slot 2: %s; want its 10 objects as adds when AddSlots returns", rec.String())
	}
	// Marked as an initial list, as a cold group's are: controller-runtime's
	// priority queue then puts them behind the changes users wait for.
	rec.mu.Lock()
	initial := rec.initial
	rec.mu.Unlock()
	if initial != 30 {
		t.Errorf("%d of the 30 adds so far came as part of an initial list, want all", initial)
	}
	var got testkind.Widget
	if err := tc.Get(ctx, client.ObjectKeyFromObject(objs[2][0]), &got); err != nil || got.Spec.Size != objs[2][0].Spec.Size+1 {
		t.Errorf("Get of an adopted object = size %d, %v; want the modified one", got.Spec.Size, err)
	}
	if got := tc.Warmed([]int{2, 3}); !slices.Equal(got, []int{3}) {
		t.Errorf("Warmed after adopting slot 2 = %v, want [3]", got)
	}
	if err := tc.AddSlots(ctx, []int{3}); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := rec.counts(); a != 40 {
		t.Errorf("after adopting slot 3: %s; want 40 adds", rec.String())
	}
	for _, sel := range []string{"sharding.kubeshard.dev/slot in (2)", "sharding.kubeshard.dev/slot in (3)"} {
		if n := tc.api.listedFor(sel); n != 0 {
			t.Errorf("serving a warm slot listed it again (%s: %d objects)", sel, n)
		}
	}
	if got := tc.api.listedFor("sharding.kubeshard.dev/slot in (2,3)"); got != 20 {
		t.Errorf("slots 2 and 3 were listed for %d objects in all, want 20 (once)", got)
	}

	// From now on it is an ordinary group: each change once.
	tc.modify(objs[3][0])
	testenv.Eventually(t, wait, "the update arrives", func() (bool, string) { _, u, _ := rec.counts(); return u == 1, rec.String() })
	never(t, "an update arrived twice", func() bool { _, u, _ := rec.counts(); return u > 1 })
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 40 {
		t.Errorf("List = %d items, %v; want 40", len(list.Items), err)
	}
}

// A handover that is cancelled (its destination went away, or the ring
// changed its mind) leaves slots warm that never come: Cool frees them, and
// a later gain of the same slots lists them afresh.
func TestCoolStopsAGroupWarmingSlotsThatDoNotCome(t *testing.T) {
	tc := newTestCache(t, Options{})
	tc.widgets(2, 1)
	tc.widgets(3, 1)
	tc.start(t)
	ctx := t.Context()
	if _, err := tc.GetInformer(ctx, &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := tc.Warm(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "slots 2 and 3 are warm", func() (bool, string) {
		got := tc.Warmed([]int{2, 3})
		return len(got) == 2, fmt.Sprintf("warmed %v", got)
	})
	inf := tc.api.informer("Widget", "sharding.kubeshard.dev/slot in (2,3)")

	tc.Cool([]int{2})
	if got := tc.Warmed([]int{2, 3}); !slices.Equal(got, []int{3}) {
		t.Errorf("Warmed after cooling slot 2 = %v, want [3]", got)
	}
	if inf.IsStopped() {
		t.Error("the group stopped while slot 3 was still warm")
	}
	tc.Cool([]int{3})
	testenv.Eventually(t, wait, "the warm group stops", func() (bool, string) { return inf.IsStopped(), "still running" })
	if g := tc.Groups(); len(g) != 0 {
		t.Errorf("groups = %+v, want none", g)
	}

	if err := tc.AddSlots(ctx, []int{2}); err != nil {
		t.Fatal(err)
	}
	if n := tc.api.listedFor("sharding.kubeshard.dev/slot in (2)"); n != 2 {
		t.Errorf("a gain after cooling listed %d objects, want slot 2's 2", n)
	}
}

// A warm group whose slots are partly adopted and partly cooled serves the
// adopted ones and is compacted to them, as a group that lost slots is.
func TestAWarmGroupPartlyAdoptedKeepsServingWhatItAdopted(t *testing.T) {
	tc := newTestCache(t, Options{})
	objs := tc.widgets(2, 1)
	tc.widgets(3, 1)
	tc.start(t)
	ctx := t.Context()
	if _, err := tc.GetInformer(ctx, &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := tc.Warm(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := tc.AddSlots(ctx, []int{2}); err != nil { // waits for the warm group to sync
		t.Fatal(err)
	}
	tc.Cool([]int{3})
	if got := tc.Served(); !slices.Equal(got, []int{2}) {
		t.Errorf("Served = %v, want [2]", got)
	}
	if err := tc.Get(ctx, client.ObjectKeyFromObject(objs[0]), &testkind.Widget{}); err != nil {
		t.Errorf("Get of the adopted slot's object: %v", err)
	}
	list := &testkind.WidgetList{}
	if err := tc.List(ctx, list); err != nil || len(list.Items) != 2 {
		t.Errorf("List = %d items, %v; want slot 2's 2", len(list.Items), err)
	}
	if g := tc.Groups(); len(g) != 1 || !slices.Equal(g[0].Served, []int{2}) {
		t.Errorf("groups = %+v, want one serving slot 2", g)
	}
}
