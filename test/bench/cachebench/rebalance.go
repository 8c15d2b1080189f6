package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// rebalanceFigures are the join 3 -> 4 at the full object count.
type rebalanceFigures struct {
	StartSeconds float64 `json:"threeMembersSettledSeconds"` // 3 members from start to settled

	// The join, timed from the start of the new member's manager.
	JoinServedSeconds   float64 `json:"newMemberServesAllSlotsSyncedSeconds"` // (c)
	AssignedSeconds     float64 `json:"newMemberAssignedSeconds"`             // its slots assigned, no move pending
	SettledSeconds      float64 `json:"ringSettledSeconds"`                   // all 4 serve their slots, synced
	CompactedSeconds    float64 `json:"oldMembersCompactedSeconds"`           // old members dropped the lost slots
	LoneSyncSeconds     float64 `json:"loneCacheSyncSeconds"`                 // a lone cache of the newcomer's slots, just before the join
	LoneObjects         int     `json:"loneCacheObjects"`
	PredictedSlots      bool    `json:"loneCacheHadTheNewcomersSlots"`
	NewMemberSlots      int     `json:"newMemberSlots"`
	NewMemberGroups     int     `json:"newMemberSlotGroups"`
	ObjectsInSlots      int     `json:"objectsInNewMemberSlots"`
	ObjectsCached       int     `json:"objectsCachedByNewMember"`
	ListedStream        int     `json:"objectsListedByNewMemberWatchList"`
	ListedList          int     `json:"objectsListedByNewMemberList"`
	Unreadable          int     `json:"uncountedInitialLists"`
	LargeDataWrites     int     `json:"largeDataWritesDuringJoin"` // (a), join to settled
	LargeDataWritesComp int     `json:"largeDataWritesUntilCompacted"`
	// Writes by resource during the join (start to settled), over every
	// member, and what a quiet ring of 3 writes in the same time.
	Writes      map[string]int     `json:"writesByResource"`
	QuietWrites map[string]float64 `json:"quietRingWritesSameDuration"`
	// The objects the old members' replacement groups listed again when
	// they compacted (settled to compacted).
	CompactionListed int `json:"objectsRelistedByCompaction"`
}

// ringCluster is the sharded operator: its ShardRing and members.
type ringCluster struct {
	env     *testenv.Environment
	slots   int
	data    *dataset
	watch   *watchlist
	members []*member
	abort   func(error)
}

func createRing(ctx context.Context, env *testenv.Environment, slots int) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNamespace}}
	if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", systemNamespace, err)
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: ringName, Namespace: systemNamespace},
		Spec: shardingv1alpha1.ShardRingSpec{
			Slots: int32(slots), LeaseDurationSeconds: leaseSeconds,
			Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "data.kubeshard.dev", Resource: "largedata"},
				Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
			}},
		},
	}
	if err := env.Client.Create(ctx, sr); err != nil {
		return fmt.Errorf("creating the ShardRing: %w", err)
	}
	return nil
}

func (rc *ringCluster) start(ctx context.Context, name string) (*member, error) {
	m, err := startMember(ctx, rc.env, memberOptions{
		name: name, sharded: true, slots: rc.slots, leaderLease: ringName + "-coordinator", watch: rc.watch, abort: rc.abort,
	})
	if err != nil {
		return nil, err
	}
	rc.members = append(rc.members, m)
	return m, nil
}

func (rc *ringCluster) status(ctx context.Context) (*shardingv1alpha1.ShardRing, *assignment.Table, error) {
	sr := &shardingv1alpha1.ShardRing{}
	if err := rc.env.Client.Get(ctx, types.NamespacedName{Namespace: systemNamespace, Name: ringName}, sr); err != nil {
		return nil, nil, err
	}
	table, err := assignment.FromStatus(&sr.Status, rc.slots)
	if err != nil {
		return nil, nil, err
	}
	return sr, table, nil
}

// serving reports whether m serves exactly the slots the status gives it,
// with its cache holding exactly those slots in synced groups.
func serving(m *member, table *assignment.Table) (bool, string) {
	want := table.Servable(m.name)
	if len(want) == 0 {
		return false, fmt.Sprintf("%s owns no slot yet", m.name)
	}
	if served := m.ring.Agent().Gate().Served(); !slices.Equal(served, want) {
		return false, fmt.Sprintf("%s admits %d slots, owns %d", m.name, len(served), len(want))
	}
	if cached := m.cache.Served(); !slices.Equal(cached, want) {
		return false, fmt.Sprintf("%s caches %d slots, owns %d", m.name, len(cached), len(want))
	}
	for _, g := range m.cache.Groups() {
		if !g.Synced {
			return false, fmt.Sprintf("%s: slot group %d not synced", m.name, g.ID)
		}
	}
	return true, ""
}

// settled reports whether the ring is Ready with exactly the running members,
// each serving its slots with a synced cache.
func (rc *ringCluster) settled(ctx context.Context) (bool, string) {
	sr, table, err := rc.status(ctx)
	if err != nil {
		return false, err.Error()
	}
	if !meta.IsStatusConditionTrue(sr.Status.Conditions, shardingv1alpha1.ConditionReady) {
		return false, "ring not Ready"
	}
	var got []string
	for _, ms := range sr.Status.Members {
		got = append(got, ms.Name)
	}
	if want := names(rc.members); !slices.Equal(got, want) {
		return false, fmt.Sprintf("status members %v, running %v", got, want)
	}
	for _, m := range rc.members {
		if ok, why := serving(m, table); !ok {
			return false, why
		}
	}
	return true, ""
}

// compacted reports whether no member keeps objects of slots it lost.
func (rc *ringCluster) compacted() (bool, string) {
	for _, m := range rc.members {
		for _, g := range m.cache.Groups() {
			if len(g.Served) != len(g.Slots) || !g.Synced {
				return false, fmt.Sprintf("%s: slot group %d serves %d of its %d slots", m.name, g.ID, len(g.Served), len(g.Slots))
			}
		}
	}
	return true, ""
}

func (rc *ringCluster) snapshot(ms []*member) snapshot {
	var s snapshot
	for _, m := range ms {
		s = s.add(m.wire.snapshot())
	}
	return s
}

// measureRebalance runs 3 members, then starts a 4th and times the join. The
// members keep running for the steady-state measurement. whileCompacting
// runs once the ring has settled, while the old members wait to compact.
func measureRebalance(ctx context.Context, rc *ringCluster, progress io.Writer, whileCompacting func() error) (rebalanceFigures, error) {
	var f rebalanceFigures
	if err := createRing(ctx, rc.env, rc.slots); err != nil {
		return f, err
	}
	for _, name := range memberNames(3) {
		if _, err := rc.start(ctx, name); err != nil {
			return f, err
		}
	}
	took, err := waitFor(ctx, 5*time.Minute, "3 members settle", func() (bool, string) { return rc.settled(ctx) })
	if err != nil {
		return f, err
	}
	f.StartSeconds = took.Seconds()
	fmt.Fprintf(progress, "  rebalance: 3 members settled in %s; waiting for their initial reconciles and the labeler's sweep\n", took.Round(time.Millisecond))
	if err := waitQuiet(ctx, rc.members, 3*time.Second, 5*time.Minute, func() (bool, string) { return rc.settled(ctx) }); err != nil {
		return f, err
	}

	// What a quiet ring of 3 writes, to compare the join's writes with.
	quiet := 5 * time.Second
	before := rc.snapshot(rc.members)
	select {
	case <-time.After(quiet):
	case <-ctx.Done():
		return f, context.Cause(ctx)
	}
	quietWrites := rc.snapshot(rc.members).sub(before).byResource(isWrite)

	// The baseline of the join's time: a lone cache of the slots the
	// newcomer will get (the coordinator's ring.Assign, computed here from
	// the same status), synced just before, under the same load.
	_, table, err := rc.status(ctx)
	if err != nil {
		return f, err
	}
	target, err := ring.Assign(table.Target(), memberNames(4), ring.Options{Slots: rc.slots})
	if err != nil {
		return f, err
	}
	predicted := target.SlotsOf("op-3")
	lone, err := measureShardCache(ctx, ownConnection(rc.env.Config), cache.Options{Scheme: rc.env.Scheme}, rc.slots, predicted)
	if err != nil {
		return f, fmt.Errorf("measuring a lone cache of op-3's slots: %w", err)
	}
	f.LoneSyncSeconds, f.LoneObjects = lone.Sync, lone.Objects

	old := slices.Clone(rc.members)
	before = rc.snapshot(old)
	fmt.Fprintln(progress, "  rebalance: starting op-3")
	t0 := time.Now()
	newcomer, err := rc.start(ctx, "op-3")
	if err != nil {
		return f, err
	}
	var assigned time.Duration
	joined, err := waitFor(ctx, 2*time.Minute, "op-3 serves all its slots with a synced cache", func() (bool, string) {
		sr, table, err := rc.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		if assigned == 0 && sr.Status.MovingSlots == 0 && len(table.Servable("op-3")) > 0 {
			assigned = time.Since(t0)
		}
		return serving(newcomer, table)
	})
	if err != nil {
		return f, err
	}
	if _, err := waitFor(ctx, 2*time.Minute, "4 members settle", func() (bool, string) { return rc.settled(ctx) }); err != nil {
		return f, err
	}
	settled := time.Since(t0)
	during := rc.snapshot(rc.members).sub(before)
	joinNew := newcomer.wire.snapshot()
	fmt.Fprintf(progress, "  rebalance: op-3 served its slots after %s; waiting for the old members to compact\n", joined.Round(time.Millisecond))

	settledOld := rc.snapshot(old)
	if err := whileCompacting(); err != nil {
		return f, err
	}
	if _, err := waitFor(ctx, 3*time.Minute, "old members compact", rc.compacted); err != nil {
		return f, err
	}
	compacted := time.Since(t0)
	untilCompacted := rc.snapshot(rc.members).sub(before)

	served := newcomer.cache.Served()
	f.PredictedSlots = slices.Equal(served, predicted)
	f.JoinServedSeconds = joined.Seconds()
	f.AssignedSeconds = assigned.Seconds()
	f.SettledSeconds = settled.Seconds()
	f.CompactedSeconds = compacted.Seconds()
	f.NewMemberSlots = len(served)
	f.NewMemberGroups = len(newcomer.cache.Groups())
	f.ObjectsInSlots = rc.data.inSlots(served)
	f.ObjectsCached = newcomer.cache.Counts()[largeDataGVK]
	f.ListedStream, f.ListedList, f.Unreadable = joinNew.listedStream, joinNew.listedList, joinNew.unreadable
	f.LargeDataWrites = during.requests(isLargeDataWrite)
	f.LargeDataWritesComp = untilCompacted.requests(isLargeDataWrite)
	f.Writes = during.byResource(isWrite)
	f.QuietWrites = map[string]float64{}
	for r, n := range quietWrites {
		f.QuietWrites[r] = float64(n) * settled.Seconds() / quiet.Seconds()
	}
	comp := rc.snapshot(old).sub(settledOld)
	f.CompactionListed = comp.listedStream + comp.listedList
	return f, nil
}

// isLargeDataWrite matches writes to LargeData objects and their
// subresources (status).
func isLargeDataWrite(c call) bool {
	return isWrite(c) && (c.Resource == "largedata" || strings.HasPrefix(c.Resource, "largedata/"))
}
