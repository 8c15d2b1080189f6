package shardcache

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
)

const keptSelector = "sharding.kubeshard.dev/slot in (2,3)"

// compactTo steps the clock until the cache holds one group, for slots 2
// and 3.
func compactTo23(t *testing.T, tc *testCache, clk *testingclock.FakeClock) {
	t.Helper()
	testenv.Eventually(t, wait, "the group is compacted", func() (bool, string) {
		clk.Step(time.Minute) // CompactAfter, then handoverGrace
		g := tc.Groups()
		return len(g) == 1 && slices.Equal(g[0].Slots, []int{2, 3}), fmt.Sprintf("groups %+v", g)
	})
}

// slotOfName reads the slot from a Widget name made by testCache.widgets,
// "w-<slot>-<i>", with or without its namespace.
func slotOfName(key string) int {
	parts := strings.Split(key[strings.LastIndex(key, "/")+1:], "-")
	s, _ := strconv.Atoi(parts[1])
	return s
}

// in keeps the entries of versions whose object is in slots 2 or 3.
func in23(versions map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range versions {
		if s := slotOfName(k); s == 2 || s == 3 {
			out[k] = v
		}
	}
	return out
}

// sourceVersions returns the resourceVersion of every Widget of slots 2 and
// 3 that the fake API server holds.
func sourceVersions(t *testing.T, tc *testCache) map[string]string {
	t.Helper()
	list, err := tc.api.source(widgetKind).List(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	items, err := apimeta.ExtractList(list)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, obj := range items {
		out[keyOf(obj)] = resourceVersionOf(obj)
	}
	return in23(out)
}

// cachedVersions returns the resourceVersion of every Widget a List of the
// cache returns.
func cachedVersions(t *testing.T, tc *testCache) map[string]string {
	t.Helper()
	list := &testkind.WidgetList{}
	if err := tc.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for i := range list.Items {
		out[keyOf(&list.Items[i])] = list.Items[i].ResourceVersion
	}
	return out
}

func (r *recorder) latestVersions() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.latest)
}

// servingThenLosing01 is a cache with perSlot Widgets in each namespace of
// slots 0-3 (opts, plus a fake clock and a CompactAfter of a minute), that
// served all four, delivered their objects to rec, and lost slots 0 and 1:
// its group awaits compaction.
func servingThenLosing01(t *testing.T, perSlot int, opts Options) (tc *testCache, clk *testingclock.FakeClock, objs [][]*testkind.Widget, rec *recorder) {
	t.Helper()
	clk = testingclock.NewFakeClock(time.Now())
	opts.Clock, opts.CompactAfter = clk, time.Minute
	tc = newTestCache(t, opts)
	for s := range 4 {
		objs = append(objs, tc.widgets(s, perSlot))
	}
	tc.start(t)
	rec = tc.record(t)
	if err := tc.AddSlots(t.Context(), seq(0, 3)); err != nil {
		t.Fatal(err)
	}
	want := 4 * 2 * perSlot
	testenv.Eventually(t, wait, "the initial list arrives", func() (bool, string) { a, _, _ := rec.counts(); return a == want, rec.String() })
	tc.RemoveSlots([]int{0, 1})
	return tc, clk, objs, rec
}

// countTransforms is a transform that counts itself on a Widget: applied
// twice, an object would say 2.
func countTransforms(obj any) (any, error) {
	if w, ok := obj.(*testkind.Widget); ok {
		n, _ := strconv.Atoi(w.Annotations["transforms"])
		if w.Annotations == nil {
			w.Annotations = map[string]string{}
		}
		w.Annotations["transforms"] = strconv.Itoa(n + 1)
	}
	return obj, nil
}

func TestACompactionUnderChurnListsNothingAndMissesNoChange(t *testing.T) {
	tc, clk, objs, rec := servingThenLosing01(t, 20, Options{})

	// While the group is compacted, objects of the kept slots change, are
	// created and are deleted, and objects of the slots given away change,
	// which moves the old group's store past the kept slots' changes.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		src := tc.api.source(widgetKind)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch {
			case i%11 == 0 && i/11 < len(objs[3]):
				src.Delete(objs[3][i/11].DeepCopy())
			case i%7 == 0:
				tc.widgets(2, 1)
			case i%5 == 0:
				tc.modify(objs[0][i%len(objs[0])])
			default:
				tc.modify(objs[2+i%2][i%len(objs[2])])
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	compactTo23(t, tc, clk)
	time.Sleep(50 * time.Millisecond) // changes go on after the handover too
	close(stop)
	<-done

	want := sourceVersions(t, tc)
	testenv.Eventually(t, wait, "the cache holds every object of slots 2 and 3 at its last version", func() (bool, string) {
		got := cachedVersions(t, tc)
		return maps.Equal(got, want), fmt.Sprintf("%d objects cached, %d in the API server", len(got), len(want))
	})
	testenv.Eventually(t, wait, "the handlers saw every object's last version", func() (bool, string) {
		got := in23(rec.latestVersions())
		return maps.Equal(got, want), fmt.Sprintf("%d objects seen last at the API server's version of %d", countEqual(got, want), len(want))
	})
	if n := tc.api.listsFor(keptSelector); n != 0 {
		t.Errorf("the replacement sent %d lists to the API server, want 0", n)
	}
}

func countEqual(a, b map[string]string) int {
	n := 0
	for k, v := range a {
		if b[k] == v {
			n++
		}
	}
	return n
}

func TestTheReplacementDoesNotTransformAnObjectTwice(t *testing.T) {
	tc, clk, objs, rec := servingThenLosing01(t, 3, Options{Transform: countTransforms})
	compactTo23(t, tc, clk)
	tc.modify(objs[2][0]) // arrives through the replacement's watch
	testenv.Eventually(t, wait, "the update arrives", func() (bool, string) { _, u, _ := rec.counts(); return u == 1, rec.String() })

	list := &testkind.WidgetList{}
	if err := tc.List(t.Context(), list); err != nil || len(list.Items) != 12 {
		t.Fatalf("List = %d items, %v; want 12", len(list.Items), err)
	}
	for _, w := range list.Items {
		if got := w.Annotations["transforms"]; got != "1" {
			t.Errorf("%s/%s was transformed %s times, want 1", w.Namespace, w.Name, got)
		}
	}
	if n := tc.api.listsFor(keptSelector); n != 0 {
		t.Errorf("the replacement sent %d lists to the API server, want 0", n)
	}
}

func TestAReplacementWhoseWatchIsTooOldListsFromTheAPIServer(t *testing.T) {
	tc, clk, objs, rec := servingThenLosing01(t, 3, Options{})
	// The last change is a deletion, which leaves no object at its
	// resourceVersion in the store: the store's newest object is older,
	// and the API server has compacted its history up to the deletion.
	src := tc.api.source(widgetKind)
	src.Delete(objs[0][0].DeepCopy())
	last, err := src.List(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lm, _ := apimeta.ListAccessor(last)
	rv, _ := strconv.ParseInt(lm.GetResourceVersion(), 10, 64)
	tc.api.compactedBelow.Store(rv)

	compactTo23(t, tc, clk)
	// The reflector lists after its backoff; as any relist, it delivers
	// the objects it already holds as Updates.
	testenv.Eventually(t, wait, "the replacement lists from the API server", func() (bool, string) {
		n := tc.api.listsFor(keptSelector)
		return n == 1, fmt.Sprintf("%d lists", n)
	})
	if got, want := cachedVersions(t, tc), sourceVersions(t, tc); !maps.Equal(got, want) {
		t.Errorf("cached %v, want %v", got, want)
	}
	tc.modify(objs[3][0])
	want := sourceVersions(t, tc)
	testenv.Eventually(t, wait, "the update arrives", func() (bool, string) {
		got := in23(rec.latestVersions())
		return maps.Equal(got, want), fmt.Sprintf("%d objects seen last at the API server's version of %d", countEqual(got, want), len(want))
	})
	if a, _, _ := rec.counts(); a != 24 {
		t.Errorf("%d adds, want still the 24 of the initial list", a)
	}
}
