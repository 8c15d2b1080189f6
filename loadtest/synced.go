package main

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// waitCachesSynced waits until every member serves every slot its Lease
// publishes from a synced cache, as its kubeshard_member_slots_served says.
// The ring is Ready once the members publish their slots; a newcomer's
// cache lists them after that, which without the API server's watch cache
// is a scan of every object of the kind. This is when the newcomer really
// serves.
func waitCachesSynced(ctx context.Context, c client.Client, key types.NamespacedName, fetch func(context.Context, string) ([]byte, error), timeout time.Duration) error {
	why := "not looked yet"
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		why = cachesSynced(ctx, c, key, fetch)
		return why == "", nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the members' caches to sync: %s: %w", why, err)
	}
	return nil
}

// cachesSynced returns "" when every live member's cache has synced the
// slots it serves, or what is not there yet.
func cachesSynced(ctx context.Context, c client.Client, key types.NamespacedName, fetch func(context.Context, string) ([]byte, error)) string {
	sr := &shardingv1alpha1.ShardRing{}
	if err := c.Get(ctx, key, sr); err != nil {
		return err.Error()
	}
	leases := &coordinationv1.LeaseList{}
	if err := c.List(ctx, leases, client.InNamespace(key.Namespace), client.MatchingLabels{shardingv1alpha1.LabelRing: key.Name}); err != nil {
		return err.Error()
	}
	for _, l := range leases.Items {
		m := l.Labels[membership.LabelMember]
		if m == "" || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			continue // not a member's, or released by a member that left
		}
		serving, err := ring.ParseRanges(l.Annotations[shardingv1alpha1.AnnotationServing], int(sr.Spec.Slots))
		if err != nil {
			return fmt.Sprintf("the Lease of %s: %v", m, err)
		}
		body, err := fetch(ctx, m)
		if err != nil {
			return fmt.Sprintf("the metrics of %s: %v", m, err)
		}
		synced, err := slotsSynced(body)
		if err != nil {
			return fmt.Sprintf("the metrics of %s: %v", m, err)
		}
		if synced < len(serving) {
			return fmt.Sprintf("%s has synced the cache of %d of the %d slots it serves", m, synced, len(serving))
		}
	}
	return ""
}

// slotsSynced reads from a member's metrics how many slots it serves from a
// synced cache (kubeshard_member_slots_served, set once the cache of every
// slot it gained has synced).
func slotsSynced(metrics []byte) (int, error) {
	fams, err := parseMetrics(metrics)
	if err != nil {
		return 0, err
	}
	synced := 0
	if fam := fams["kubeshard_member_slots_served"]; fam != nil {
		for _, m := range fam.Metric {
			synced += int(m.GetGauge().GetValue())
		}
	}
	return synced, nil
}
