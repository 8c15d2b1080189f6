package coordinator

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Condition reasons.
const (
	ReasonAllSlotsServed    = "AllSlotsServed"
	ReasonSlotsMoving       = "SlotsMoving"
	ReasonMembersJoining    = "MembersJoining"
	ReasonNoMoves           = "NoMoves"
	ReasonSlotsWithoutOwner = "SlotsWithoutOwner"
	ReasonNoLiveMembers     = "NoLiveMembers"
	ReasonInvalidRing       = "InvalidRing"
	ReasonLeaseAnomaly      = "LeaseAnomaly"
	ReasonMembershipChanged = "MembershipChanged"

	// Reasons of the ServerSideSharding condition (selectorMode ShardSelector).
	ReasonShardSelectorApplied     = "ShardSelectorApplied"
	ReasonShardSelectorIgnored     = "ShardSelectorIgnored"
	ReasonShardSelectorNotReported = "NotReported"
)

// buildStatus returns the status that records table t for the given members.
// It lists every live member, and a member that is not live for as long as it
// still owns a slot (it cannot, for long: its slots become unowned).
//
// pending says that membership changed and a rebalance waits for it to
// settle: the ring is not Ready then, though every slot is served, because
// some member does not have its share yet.
func buildStatus(old *shardingv1alpha1.ShardRingStatus, generation int64, t *assignment.Table, members []membership.MemberInfo, pending bool) shardingv1alpha1.ShardRingStatus {
	st := shardingv1alpha1.ShardRingStatus{
		ObservedGeneration: generation,
		Epoch:              t.Epoch,
		Moves:              t.Moves(),
		MovingSlots:        int32(t.Moving()),
		UnownedSlots:       int32(t.Unowned()),
		Conditions:         slices.Clone(old.Conditions),
	}
	incoming := map[string]bool{}
	for _, to := range t.MoveTo {
		if to != "" {
			incoming[to] = true
		}
	}
	for _, m := range members {
		owned := t.Owner.SlotsOf(m.Name)
		if !m.Live && len(owned) == 0 {
			continue
		}
		ms := shardingv1alpha1.MemberStatus{
			Name:      m.Name,
			State:     memberState(m, t, incoming[m.Name]),
			Slots:     ring.FormatRanges(owned),
			SlotCount: int32(len(owned)),
		}
		if m.Live {
			st.MemberCount++
			if ms.State == shardingv1alpha1.MemberReady {
				st.ReadyMembers++
			}
		}
		st.Members = append(st.Members, ms)
	}

	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: generation,
		})
	}
	switch {
	case st.MemberCount == 0:
		set(shardingv1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonNoLiveMembers, "No member holds a live Lease; no slot is served")
	case st.UnownedSlots > 0:
		set(shardingv1alpha1.ConditionDegraded, metav1.ConditionTrue, ReasonSlotsWithoutOwner, fmt.Sprintf("%d slots have no live owner", st.UnownedSlots))
	default:
		set(shardingv1alpha1.ConditionDegraded, metav1.ConditionFalse, ReasonAllSlotsServed, "Every slot has a live owner")
	}
	switch {
	case st.MovingSlots > 0:
		set(shardingv1alpha1.ConditionRebalancing, metav1.ConditionTrue, ReasonSlotsMoving, fmt.Sprintf("%d slots are moving", st.MovingSlots))
	case pending:
		set(shardingv1alpha1.ConditionRebalancing, metav1.ConditionTrue, ReasonMembershipChanged, "Membership changed; slots move once it has been quiet for a moment")
	default:
		set(shardingv1alpha1.ConditionRebalancing, metav1.ConditionFalse, ReasonNoMoves, "No slot is moving")
	}
	switch {
	case st.MemberCount == 0 || st.UnownedSlots > 0:
		set(shardingv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonSlotsWithoutOwner, "Some slots have no live owner")
	case st.MovingSlots > 0:
		set(shardingv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonSlotsMoving, "Slots are moving between members")
	case pending:
		set(shardingv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonMembershipChanged, "A rebalance waits for membership to settle")
	case st.ReadyMembers < st.MemberCount:
		set(shardingv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonMembersJoining, "Some members do not serve all their slots yet")
	default:
		set(shardingv1alpha1.ConditionReady, metav1.ConditionTrue, ReasonAllSlotsServed, "Every slot is served by its owner")
	}
	return st
}

// memberState says how far a member is from serving what the table gives it.
func memberState(m membership.MemberInfo, t *assignment.Table, incoming bool) shardingv1alpha1.MemberState {
	switch {
	case m.Released:
		return shardingv1alpha1.MemberLeaving
	case m.Expired || !m.Live:
		return shardingv1alpha1.MemberExpired
	case incoming || m.ServingUnknown || m.Epoch < t.Epoch && t.Epoch > 0:
		return shardingv1alpha1.MemberJoining
	}
	for _, s := range t.Servable(m.Name) {
		if _, ok := slices.BinarySearch(m.Serving, s); !ok {
			return shardingv1alpha1.MemberJoining
		}
	}
	return shardingv1alpha1.MemberReady
}

// invalidRingStatus records why the ring cannot be coordinated, leaving the
// assignment as it is: members keep serving what they were given.
func invalidRingStatus(old *shardingv1alpha1.ShardRingStatus, generation int64, msg string) shardingv1alpha1.ShardRingStatus {
	st := *old.DeepCopy()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: shardingv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalidRing,
		Message: msg, ObservedGeneration: generation,
	})
	return st
}

// setServerSideSharding sets the ServerSideSharding condition of a ring in
// selectorMode ShardSelector from what its live members published on their
// Leases; in selectorMode Labels the condition does not apply and is removed.
// One member that found the selector ignored makes it False: that member
// filters every object of the sharded kinds itself, which is correct but
// costs what sharding was meant to save.
func setServerSideSharding(st *shardingv1alpha1.ShardRingStatus, spec *shardingv1alpha1.ShardRingSpec, generation int64, members []membership.MemberInfo) {
	if spec.SelectorMode != shardingv1alpha1.SelectorModeShardSelector {
		meta.RemoveStatusCondition(&st.Conditions, shardingv1alpha1.ConditionServerSideSharding)
		return
	}
	var ignored []string
	live, applied := 0, 0
	for _, m := range members {
		if !m.Live {
			continue
		}
		live++
		switch m.ShardSelector {
		case shardingv1alpha1.ShardSelectorIgnored:
			ignored = append(ignored, m.Name)
		case shardingv1alpha1.ShardSelectorApplied:
			applied++
		}
	}
	c := metav1.Condition{Type: shardingv1alpha1.ConditionServerSideSharding, ObservedGeneration: generation}
	switch {
	case len(ignored) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonShardSelectorIgnored
		c.Message = fmt.Sprintf("The API server ignores shardSelector (enable its feature gate ShardedListAndWatch, Kubernetes 1.36 or later); "+
			"members %s receive every object of the sharded kinds and filter them themselves", strings.Join(ignored, ", "))
	case live > 0 && applied == live:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonShardSelectorApplied
		c.Message = "The API server selects each member's objects by uid hash"
	default:
		c.Status, c.Reason = metav1.ConditionUnknown, ReasonShardSelectorNotReported
		c.Message = fmt.Sprintf("%d of %d live members have reported whether the API server applies shardSelector", applied, live)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}
