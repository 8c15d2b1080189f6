package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// labelLimit is how soon a new object must have its slot label when no
// webhook sets it at admission.
const labelLimit = 10 * time.Second

// TestLabelerLabelsNewObjectsWithoutWebhook runs two replicas with no
// webhook at all (the webhook being down looks the same to the API server:
// its failurePolicy is Ignore) and creates datasets, some with generateName,
// which even a webhook could not label. The coordinator's labeler must give
// each its slot label within 10 s, and every dataset must be reconciled.
func TestLabelerLabelsNewObjectsWithoutWebhook(t *testing.T) {
	if byUID() {
		t.Skip("selectorMode ShardSelector: the labeler labels children only, and datasets carry no label")
	}
	ctx := t.Context()
	const named, generated = 40, 10
	ns := createRing(t, env.Client, "e2e-labeler", leaseSeconds)
	journals := t.TempDir()
	replicas := []*replica{
		startReplica(t, ns, "op-0", journalFlag(journals, "op-0")),
		startReplica(t, ns, "op-1", journalFlag(journals, "op-1")),
	}
	waitFor(t, 60*time.Second, "two replicas share the ring", func() (bool, string) {
		return settled(ctx, env.Client, ns, "op-0", "op-1")
	})

	// A watch sees each label as it is written; it starts before the first
	// create so that it misses none.
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &datav1alpha1.LargeDataList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	labelledAt, labels := map[string]time.Time{}, map[string]string{}
	go func() {
		for ev := range w.ResultChan() {
			ld, ok := ev.Object.(*datav1alpha1.LargeData)
			if !ok {
				continue
			}
			if slot, ok := ld.Labels[shardingv1alpha1.LabelSlot]; ok {
				mu.Lock()
				if _, seen := labelledAt[ld.Name]; !seen {
					labelledAt[ld.Name], labels[ld.Name] = time.Now(), slot
				}
				mu.Unlock()
			}
		}
	}()

	// Created at a steady pace, so that each object's latency is measured
	// rather than one burst's; a latency counts from before the create.
	createdAt := map[string]time.Time{}
	for i := range named + generated {
		ld := newDataset(ns, fmt.Sprintf("new-%04d", i), int64(i))
		if i%((named+generated)/generated) == 0 {
			ld.Name, ld.GenerateName = "", "gen-"
		}
		before := time.Now()
		if err := env.Client.Create(ctx, ld); err != nil {
			t.Fatal(err)
		}
		createdAt[ld.Name] = before
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "every new dataset has its slot label", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(labelledAt) == len(createdAt), fmt.Sprintf("%d of %d labelled", len(labelledAt), len(createdAt))
	})
	mu.Lock()
	var latencies []time.Duration
	for name, at := range createdAt {
		latencies = append(latencies, labelledAt[name].Sub(at))
		if want := strconv.Itoa(ring.Slot(ns, name, ring.DefaultSlots)); labels[name] != want {
			t.Errorf("%s has slot label %q, want %q", name, labels[name], want)
		}
	}
	mu.Unlock()
	slices.Sort(latencies)
	worst := latencies[len(latencies)-1]
	if worst > labelLimit {
		t.Errorf("a dataset got its slot label %s after its creation, want at most %s", worst.Round(time.Millisecond), labelLimit)
	}

	took := waitReconciled(t, env.Client, ns, len(createdAt), 60*time.Second)
	for _, r := range replicas {
		r.stop(t)
	}
	report, _ := checkJournals(t, env.Client, ns, journals, nil)
	figures(t, "labeler", append([]any{"members", 2, "webhook", "none", "objects", len(createdAt), "generateName", generated,
		"labelP50", latencies[len(latencies)/2], "labelMax", worst, "limit", labelLimit,
		"allReconciledAfter", took}, journalFigures(report)...)...)
}
