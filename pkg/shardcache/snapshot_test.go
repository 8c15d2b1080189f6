package shardcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
)

// memberSource answers a warm group with another cache's Snapshot, through
// JSON as a transport would carry it.
type memberSource struct {
	from *testCache
	// tamper, if set, changes what is sent.
	tamper func(*Snapshot)
	asked  int
}

func (m *memberSource) Snapshot(_ context.Context, gvk schema.GroupVersionKind, slots []int) (*Snapshot, error) {
	m.asked++
	snap, err := m.from.Snapshot(gvk, slots)
	if err != nil {
		return nil, err
	}
	out := &Snapshot{Versions: maps.Clone(snap.Versions)}
	for _, obj := range snap.Items {
		data, err := json.Marshal(obj)
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(data, &u.Object); err != nil {
			return nil, err
		}
		out.Items = append(out.Items, u)
	}
	if m.tamper != nil {
		m.tamper(out)
	}
	return out, nil
}

// twoMembers returns a cache serving slots 0-3, whose Widgets are those of
// the fake API server, and a second cache on the same server whose warm
// groups ask the first; transform, if set, is both caches' Transform.
func twoMembers(t *testing.T, transform toolscache.TransformFunc) (a, b *testCache, src *memberSource, objs [][]*testkind.Widget) {
	t.Helper()
	a = newTestCache(t, Options{Transform: transform})
	for s := range 4 {
		objs = append(objs, a.widgets(s, 10))
	}
	a.start(t)
	// A member's controllers ask for the informers of their kinds.
	if _, err := a.GetInformer(t.Context(), &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddSlots(t.Context(), seq(0, 3)); err != nil {
		t.Fatal(err)
	}
	src = &memberSource{from: a}
	b = newTestCacheOn(t, a.api, Options{Snapshots: src, Transform: transform})
	b.start(t)
	if _, err := b.GetInformer(t.Context(), &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	return a, b, src, objs
}

func TestAWarmGroupTakesItsObjectsFromTheMemberServingThem(t *testing.T) {
	// Each cache counts its transform on the objects.
	a, b, src, objs := twoMembers(t, countTransforms)
	rec := b.record(t)
	if err := b.Warm(t.Context(), []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, "slots 2 and 3 are warm", func() (bool, string) {
		w := b.Warmed([]int{2, 3})
		return slices.Equal(w, []int{2, 3}), fmt.Sprintf("warm %v", w)
	})
	if n := a.api.listsFor(keptSelector); n != 0 {
		t.Errorf("the warm group sent %d lists to the API server, want 0", n)
	}
	if src.asked == 0 {
		t.Error("the warm group did not ask the member serving the slots")
	}
	a.modify(objs[2][0]) // arrives through the warm group's watch
	if err := b.AddSlots(t.Context(), []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	want := sourceVersions(t, a)
	testenv.Eventually(t, wait, "every object of slots 2 and 3 arrives at its last version", func() (bool, string) {
		got := in23(rec.latestVersions())
		return maps.Equal(got, want), fmt.Sprintf("%d of %d", countEqual(got, want), len(want))
	})
	list := &testkind.WidgetList{}
	if err := b.List(t.Context(), list); err != nil || len(list.Items) != 40 {
		t.Fatalf("List = %d items, %v; want 40", len(list.Items), err)
	}
	for _, w := range list.Items {
		if got := w.Annotations["transforms"]; got != "1" {
			t.Errorf("%s/%s was transformed %s times, want 1", w.Namespace, w.Name, got)
		}
	}
}

func TestAWarmGroupListsFromTheAPIServerWhenTheMembersCannotAnswer(t *testing.T) {
	for name, tamper := range map[string]func(*Snapshot){
		"a slot missing": func(s *Snapshot) { delete(s.Versions, 3) },
		"an object of another slot": func(s *Snapshot) {
			u := s.Items[0].(*unstructured.Unstructured).DeepCopy()
			u.SetName("intruder")
			u.SetLabels(map[string]string{shardingv1alpha1.LabelSlot: "5"})
			s.Items = append(s.Items, u)
		},
		"an object newer than its slot's version": func(s *Snapshot) {
			u := s.Items[0].(*unstructured.Unstructured)
			s.Versions[slotOfName(u.GetName())] = 1
		},
	} {
		t.Run(name, func(t *testing.T) {
			a, b, src, _ := twoMembers(t, nil)
			src.tamper = tamper
			if err := b.Warm(t.Context(), []int{2, 3}); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, wait, "slots 2 and 3 are warm", func() (bool, string) {
				w := b.Warmed([]int{2, 3})
				return slices.Equal(w, []int{2, 3}), fmt.Sprintf("warm %v", w)
			})
			if n := a.api.listsFor(keptSelector); n != 1 {
				t.Errorf("the warm group sent %d lists to the API server, want 1", n)
			}
			if err := b.AddSlots(t.Context(), []int{2, 3}); err != nil {
				t.Fatal(err)
			}
			if got, want := cachedVersions(t, b), sourceVersions(t, a); !maps.Equal(got, want) {
				t.Errorf("cached %d objects, want the %d of slots 2 and 3", len(got), len(want))
			}
		})
	}
}

func TestSnapshotAnswersOnlyForSlotsItHoldsWhole(t *testing.T) {
	a := newTestCache(t, Options{})
	a.widgets(1, 2)
	a.start(t)
	if _, err := a.GetInformer(t.Context(), &testkind.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddSlots(t.Context(), []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Snapshot(widgetKind, []int{1, 2}); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Snapshot of a slot not held = %v, want ErrNotHeld", err)
	}
	snap, err := a.Snapshot(widgetKind, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Items) != 4 || snap.Versions[1] == 0 {
		t.Errorf("Snapshot = %d items, versions %v; want the 4 of slot 1 at a version", len(snap.Items), snap.Versions)
	}
	// A group without objects can tell no version: nothing shows how far
	// its watch has come.
	if err := a.AddSlots(t.Context(), []int{4}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Snapshot(widgetKind, []int{4}); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Snapshot of slots whose store is empty = %v, want ErrNotHeld", err)
	}
	// A slot given away stays in its group's store until compaction: the
	// member can still answer for it, as the newcomer asks while it warms.
	a.RemoveSlots([]int{1})
	if _, err := a.Snapshot(widgetKind, []int{1}); err != nil {
		t.Errorf("Snapshot of a slot given away, not compacted yet = %v", err)
	}
}

// TestTheWatchSkipsWhatTheFirstListHasAlready drives a seeded informer's
// watch with slots at different versions, as from two members.
func TestTheWatchSkipsWhatTheFirstListHasAlready(t *testing.T) {
	tc := newTestCache(t, Options{})
	fw := watch.NewFake()
	lw := &seedLW{
		c: tc.Cache, key: kindKey{gvk: widgetKind}, what: "test", seeded: map[string]bool{},
		first: func(context.Context, kindKey) ([]runtime.Object, map[int]uint64, error) {
			return nil, map[int]uint64{2: 10, 3: 5}, nil
		},
		inner: &toolscache.ListWatch{
			WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return fw, nil },
		},
	}
	list, err := lw.ListWithContext(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rv := list.(*metav1.List).ResourceVersion; rv != "5" {
		t.Errorf("the first list is at %s, want the oldest version, 5", rv)
	}
	w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{ResourceVersion: "5"})
	if err != nil {
		t.Fatal(err)
	}
	widget := func(slot, rv int) *testkind.Widget {
		return &testkind.Widget{ObjectMeta: metav1.ObjectMeta{
			Namespace: "a", Name: fmt.Sprintf("w-%d-0", slot), ResourceVersion: strconv.Itoa(rv),
			Labels: map[string]string{shardingv1alpha1.LabelSlot: strconv.Itoa(slot)},
		}}
	}
	go func() {
		fw.Modify(widget(2, 7))  // slot 2's member had it: skipped
		fw.Delete(widget(2, 10)) // had that too
		fw.Modify(widget(3, 7))  // slot 3's member had not
		fw.Action(watch.Bookmark, widget(2, 8))
		fw.Modify(widget(2, 11))
		fw.Stop()
	}()
	var got []string
	for ev := range w.ResultChan() {
		m, _ := apimeta.Accessor(ev.Object)
		got = append(got, fmt.Sprintf("%s %s@%s", ev.Type, m.GetName(), m.GetResourceVersion()))
	}
	want := []string{"MODIFIED w-3-0@7", "BOOKMARK w-2-0@8", "MODIFIED w-2-0@11"}
	if !slices.Equal(got, want) {
		t.Errorf("the watch delivered %q, want %q", got, want)
	}
}
