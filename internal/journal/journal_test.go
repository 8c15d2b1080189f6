package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

func TestJournalRecordsConcurrentReconciles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "op-0.jsonl")
	j, err := Open(path, Options{Member: "op-0"})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				j.Record(Entry{Object: "ns/a", Slot: w, Member: "op-0", Generation: int64(i), Start: t0, End: t0, Result: ResultOK})
			}
		})
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j.Record(Entry{Object: "ns/after-close"}) // ignored
	entries, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != writers*each {
		t.Errorf("read %d entries, want %d", len(entries), writers*each)
	}
}

func TestJournalFlushesWithoutClose(t *testing.T) {
	clock := clocktesting.NewFakeClock(t0)
	path := filepath.Join(t.TempDir(), "op-0.jsonl")
	j, err := Open(path, Options{Member: "op-0", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	j.Record(at("op-0", "ns/a", 1, 0, 1))
	if entries, _ := Read(path); len(entries) != 0 {
		t.Fatalf("an entry reached the file before the flush interval: %v", entries)
	}
	testenv.Eventually(t, 5*time.Second, "the journal waits for its flush interval", func() (bool, string) {
		return clock.HasWaiters(), "no timer on the clock"
	})
	clock.Step(100 * time.Millisecond)
	testenv.Eventually(t, 5*time.Second, "the entry reaches the file after a flush interval", func() (bool, string) {
		entries, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		return len(entries) == 1, fmt.Sprintf("%d entries in the file", len(entries))
	})
}

// A process killed in the middle of a write leaves a partial line; the next
// process's entries must still be readable, and so must the file as it was.
func TestJournalAfterAPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "op-0.jsonl")
	j, err := Open(path, Options{Member: "op-0"})
	if err != nil {
		t.Fatal(err)
	}
	j.Record(at("op-0", "ns/a", 1, 0, 1))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"object":"ns/b","slo`); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if entries, err := Read(path); err != nil || len(entries) != 1 {
		t.Fatalf("Read with a partial last line = %d entries, %v; want 1, nil", len(entries), err)
	}

	j, err = Open(path, Options{Member: "op-0"})
	if err != nil {
		t.Fatal(err)
	}
	j.Record(at("op-0", "ns/c", 1, 2, 3))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Object != "ns/a" || entries[1].Object != "ns/c" {
		t.Errorf("entries after a restart = %+v, want ns/a and ns/c", entries)
	}
}

func TestReadRejectsAGarbledLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "op-0.jsonl")
	if err := os.WriteFile(path, []byte("{\"object\":\"ns/a\"}\nnot json\n{\"object\":\"ns/b\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Read = %v, want an error about line 2", err)
	}
}

func TestWrap(t *testing.T) {
	clock := clocktesting.NewFakeClock(t0)
	ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Generation: 4}}
	c := fake.NewClientBuilder().WithScheme(testenv.NewScheme()).WithObjects(ld).Build()
	path := filepath.Join(t.TempDir(), "op-1.jsonl")
	j, err := Open(path, Options{
		Member: "op-1", Slots: 64, Reader: c, Clock: clock,
		NewObject: func() client.Object { return &datav1alpha1.LargeData{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	failing := errors.New("store unavailable")
	inner := reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
		clock.Step(time.Second)
		switch req.Name {
		case "fails":
			return reconcile.Result{}, failing
		}
		return reconcile.Result{RequeueAfter: time.Minute}, nil
	})
	r := Wrap(inner, j)

	res, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "a"}})
	if err != nil || res.RequeueAfter != time.Minute {
		t.Errorf("Reconcile = %v, %v; want the inner reconciler's result", res, err)
	}
	if _, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "fails"}}); !errors.Is(err, failing) {
		t.Errorf("Reconcile = %v, want the inner reconciler's error", err)
	}
	// The ring cancels the context it passes in when the member fences itself.
	ctx, cancel := context.WithCancel(t.Context())
	inner2 := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		cancel()
		return reconcile.Result{}, nil
	})
	if _, err := Wrap(inner2, j).Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	entries, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Object: "ns/a", Slot: ring.Slot("ns", "a", 64), Member: "op-1", Generation: 4, Start: t0, End: t0.Add(time.Second), Result: ResultOK},
		{Object: "ns/fails", Slot: ring.Slot("ns", "fails", 64), Member: "op-1", Start: t0.Add(time.Second), End: t0.Add(2 * time.Second), Result: ResultError},
		{Object: "ns/b", Slot: ring.Slot("ns", "b", 64), Member: "op-1", Start: t0.Add(2 * time.Second), End: t0.Add(2 * time.Second), Result: ResultDropped},
	}
	if len(entries) != len(want) {
		t.Fatalf("entries = %+v, want %+v", entries, want)
	}
	for i := range want {
		if got := entries[i]; got.Object != want[i].Object || got.Slot != want[i].Slot || got.Member != want[i].Member ||
			got.Generation != want[i].Generation || !got.Start.Equal(want[i].Start) || !got.End.Equal(want[i].End) || got.Result != want[i].Result {
			t.Errorf("entry %d = %+v, want %+v", i, got, want[i])
		}
	}
}

func TestOpenValidates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.jsonl")
	for _, opts := range []Options{{}, {Member: "op-0", Reader: fake.NewClientBuilder().Build()}} {
		if j, err := Open(path, opts); err == nil {
			_ = j.Close()
			t.Errorf("Open(%+v) succeeded", opts)
		}
	}
}
