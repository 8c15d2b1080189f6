package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// steadyRow is what one operator configuration asks of the API server while
// it reconciles a batch of spec changes.
type steadyRow struct {
	Name       string `json:"name"`
	Members    int    `json:"members"`
	Changed    int    `json:"objectsChanged"`
	Reconciles int64  `json:"reconciles"` // runs of the operator's reconciler
	// Dropped are requests ring.Reconciler refused because the member does
	// not serve the slot: each one a wasted wake-up.
	Dropped    int64 `json:"droppedByRing"`
	Duplicates int   `json:"duplicateReconciles"`
	// Requests are the API requests of every member in the window except
	// named Lease requests, which Leases lists apart.
	Requests     int            `json:"requests"`
	PerReconcile float64        `json:"requestsPerReconcile"`
	ByCall       map[string]int `json:"requestsByCall"`
	MemberLeases int            `json:"memberLeaseRequests"`
	LeaderLeases int            `json:"leaderElectionRequests"`
	Seconds      float64        `json:"windowSeconds"`
}

// measureSteady changes spec.seed of keys and counts, from the first patch
// until every change has been reconciled, the reconciles and the requests of
// the members.
func measureSteady(ctx context.Context, name string, ms []*member, c client.Client, keys []types.NamespacedName, seed int64, workers int, watch *watchlist) (steadyRow, error) {
	row := steadyRow{Name: name, Members: len(ms), Changed: len(keys)}
	var before snapshot
	var admitted, requests int64
	for _, m := range ms {
		before = before.add(m.wire.snapshot())
		admitted += m.rec.admitted.Load()
		requests += m.rec.requests.Load()
	}
	done := watch.expect(keys, seed)
	t0 := time.Now()
	if err := patchSeeds(ctx, c, keys, seed, workers); err != nil {
		return row, err
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		return row, fmt.Errorf("%s: %d of %d changes not reconciled within 2m", name, watch.pending(), len(keys))
	case <-ctx.Done():
		return row, context.Cause(ctx)
	}
	row.Seconds = time.Since(t0).Seconds()

	var after snapshot
	var admittedAfter, requestsAfter int64
	for _, m := range ms {
		after = after.add(m.wire.snapshot())
		admittedAfter += m.rec.admitted.Load()
		requestsAfter += m.rec.requests.Load()
	}
	d := after.sub(before)
	row.Reconciles = admittedAfter - admitted
	if ms[0].ring != nil {
		row.Dropped = (requestsAfter - requests) - row.Reconciles
	}
	row.Duplicates = watch.duplicates()
	row.Requests = d.requests(func(c call) bool { return !isLease(c.Resource) })
	row.PerReconcile = float64(row.Requests) / float64(row.Reconciles)
	row.ByCall = map[string]int{}
	for c, n := range d.calls {
		if !isLease(c.Resource) {
			row.ByCall[c.Verb+" "+c.Resource] += n
		}
	}
	leases := d.byResource(func(c call) bool { return isLease(c.Resource) })
	row.MemberLeases, row.LeaderLeases = leases[resourceMemberLease], leases[resourceLeaderLease]
	return row, nil
}

// changedKeys picks n objects spread evenly over the dataset.
func changedKeys(d *dataset, n int) []types.NamespacedName {
	n = min(n, len(d.keys))
	keys := make([]types.NamespacedName, 0, n)
	for i := range n {
		keys = append(keys, d.keys[i*len(d.keys)/n])
	}
	return keys
}

// unshardedReady reports whether the operator without kubeshard leads and
// has reconciled every object once.
func unshardedReady(m *member, objects int) (bool, string) {
	select {
	case <-m.mgr.Elected():
	default:
		return false, "the operator without kubeshard is not elected"
	}
	n := m.rec.admitted.Load()
	return n >= int64(objects), fmt.Sprintf("the operator without kubeshard reconciled %d of %d objects", n, objects)
}
