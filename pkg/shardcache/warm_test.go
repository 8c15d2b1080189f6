package shardcache

import (
	"fmt"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	testingclock "k8s.io/utils/clock/testing"
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

// With a HandoverRate, the objects of adopted slots reach the handlers at
// that rate, while their changes arrive at once; objects of a slot lost
// before their turn are never delivered.
func TestAHandoverRateDeliversAdoptedObjectsAtThatRate(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	tc := newTestCache(t, Options{Clock: clk, HandoverRate: 10})
	tc.widgets(0, 1)
	objs2, objs3 := tc.widgets(2, 15), tc.widgets(3, 15)
	tc.start(t)
	ctx := t.Context()
	rec := tc.record(t)
	if err := tc.AddSlots(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "slot 0's list arrives at once", func() (bool, string) { a, _, _ := rec.counts(); return a == 2, rec.String() })
	if err := tc.Warm(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "slots 2 and 3 are warm", func() (bool, string) {
		return len(tc.Warmed([]int{2, 3})) == 2, fmt.Sprintf("warmed %v", tc.Warmed([]int{2, 3}))
	})
	if err := tc.AddSlots(ctx, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := rec.counts(); a != 2 || tc.HandoverPending() != 60 {
		t.Errorf("on adoption: %s, %d pending; want no adds yet and all 60 objects pending", rec.String(), tc.HandoverPending())
	}
	// Served at once: reads see them, and a change is delivered now.
	var got testkind.Widget
	if err := tc.Get(ctx, client.ObjectKeyFromObject(objs2[0]), &got); err != nil {
		t.Errorf("Get of an adopted object waiting for its Add: %v", err)
	}
	tc.modify(objs2[0])
	testenv.Eventually(t, wait, "the change of an adopted object arrives unpaced", func() (bool, string) { _, u, _ := rec.counts(); return u == 1, rec.String() })

	// One second: ten objects, one per tick.
	for i := range 10 {
		step(t, clk, handoverTick)
		testenv.Eventually(t, wait, "one tick's share arrives", func() (bool, string) {
			a, _, _ := rec.counts()
			return a == 2+i+1, fmt.Sprintf("%s after %d ticks", rec.String(), i+1)
		})
	}
	if n := tc.HandoverPending(); n != 50 {
		t.Errorf("after a second at 10/s, %d pending, want 50", n)
	}

	// Slot 3 moves on before its turn: what is left of it is never
	// delivered, the rest of slot 2 is.
	tc.RemoveSlots([]int{3})
	seen3 := delivered(rec, objs3)
	for tc.HandoverPending() > 0 {
		step(t, clk, time.Second)
		time.Sleep(10 * time.Millisecond) // let the pacer take its share
	}
	testenv.Eventually(t, wait, "slot 2's objects all arrive", func() (bool, string) {
		n := delivered(rec, objs2)
		return n == len(objs2), fmt.Sprintf("%d of slot 2's %d delivered", n, len(objs2))
	})
	if n := delivered(rec, objs3); n != seen3 {
		t.Errorf("%d of slot 3's objects were delivered after it was lost (%d before, %d now)", n-seen3, seen3, n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for k, n := range rec.adds {
		if n != 1 {
			t.Errorf("%s was added %d times, want once", k, n)
		}
	}
}

// step waits until something waits on clk, then moves it on by d.
func step(t *testing.T, clk *testingclock.FakeClock, d time.Duration) {
	t.Helper()
	testenv.Eventually(t, wait, "a timer is set", func() (bool, string) { return clk.HasWaiters(), "no waiter" })
	clk.Step(d)
}

// delivered counts the objects of objs that rec has seen added.
func delivered(rec *recorder, objs []*testkind.Widget) int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, o := range objs {
		if rec.adds[keyOf(o)] > 0 {
			n++
		}
	}
	return n
}
