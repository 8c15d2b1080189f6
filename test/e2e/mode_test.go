package e2e

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// selectorMode is the rings' selectorMode in every scenario:
// KUBESHARD_E2E_SELECTOR_MODE=ShardSelector runs the set with server-side
// shard selectors (the API servers then start with the feature gate
// ShardedListAndWatch); unset or Labels, with the slot label.
func selectorMode() shardingv1alpha1.SelectorMode {
	if shardingv1alpha1.SelectorMode(os.Getenv("KUBESHARD_E2E_SELECTOR_MODE")) == shardingv1alpha1.SelectorModeShardSelector {
		return shardingv1alpha1.SelectorModeShardSelector
	}
	return shardingv1alpha1.SelectorModeLabels
}

// byUID tells whether the scenarios run in selectorMode ShardSelector.
func byUID() bool { return selectorMode() == shardingv1alpha1.SelectorModeShardSelector }

// apiServerGates are the kube-apiserver feature gates of the scenarios.
func apiServerGates() map[string]bool {
	if byUID() {
		return map[string]bool{"ShardedListAndWatch": true}
	}
	return nil
}

// datasetSlot is the slot of a dataset in the scenarios' mode.
func datasetSlot(ld *datav1alpha1.LargeData) int {
	if byUID() {
		return ring.UIDSlot(string(ld.UID), ring.DefaultSlots)
	}
	return ring.Slot(ld.Namespace, ld.Name, ring.DefaultSlots)
}

// createInSlots creates n datasets (prefix-NNNN) whose slots are in slots
// and returns their names. With the slot label the names are chosen before;
// by uid the slot is known only once the API server made the object, so
// datasets are created until n land in slots (the others stay and are
// reconciled by their own members).
func createInSlots(t *testing.T, c client.Client, ns, prefix string, slots []int, n int) []string {
	t.Helper()
	if !byUID() {
		names := namesInSlots(ns, prefix, slots, n)
		createNamed(t, c, ns, names)
		return names
	}
	var names []string
	for i := 0; len(names) < n; i++ {
		if i > 100*n*ring.DefaultSlots/max(len(slots), 1) {
			t.Fatalf("created %d datasets and only %d landed in slots %s", i, len(names), ring.FormatRanges(slots))
		}
		ld := newDataset(ns, fmt.Sprintf("%s-%04d", prefix, i), int64(i))
		if err := c.Create(t.Context(), ld); err != nil {
			t.Fatal(err)
		}
		if _, ok := slices.BinarySearch(slots, datasetSlot(ld)); ok {
			names = append(names, ld.Name)
		}
	}
	return names
}

// expectServerSideSharding checks, in selectorMode ShardSelector, that the
// ring says the API server applies the members' shardSelector: the scenarios
// run with the feature gate on, so a False would mean the members received
// every object.
func expectServerSideSharding(t *testing.T, c client.Client, ns string) {
	t.Helper()
	if !byUID() {
		return
	}
	waitFor(t, 30*time.Second, "the ring says the API server applies shardSelector", func() (bool, string) {
		sr, err := getRing(t.Context(), c, ns)
		if err != nil {
			return false, err.Error()
		}
		cond := apimeta.FindStatusCondition(sr.Status.Conditions, shardingv1alpha1.ConditionServerSideSharding)
		return cond != nil && cond.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", cond)
	})
}
