package localenv

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

func settledRing() *shardingv1alpha1.ShardRing {
	return &shardingv1alpha1.ShardRing{
		Spec: shardingv1alpha1.ShardRingSpec{Slots: 8},
		Status: shardingv1alpha1.ShardRingStatus{
			Epoch: 3, MemberCount: 2, ReadyMembers: 2,
			Members: []shardingv1alpha1.MemberStatus{
				{Name: "op-0", State: shardingv1alpha1.MemberReady, Slots: "0-3", SlotCount: 4},
				{Name: "op-1", State: shardingv1alpha1.MemberReady, Slots: "4-7", SlotCount: 4},
			},
			Conditions: []metav1.Condition{{Type: shardingv1alpha1.ConditionReady, Status: metav1.ConditionTrue}},
		},
	}
}

func TestSettled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*shardingv1alpha1.ShardRing)
		n      int
		want   bool
	}{
		{"ready with its share each", func(*shardingv1alpha1.ShardRing) {}, 2, true},
		{"waiting for a third member", func(*shardingv1alpha1.ShardRing) {}, 3, false},
		{"slots moving", func(sr *shardingv1alpha1.ShardRing) { sr.Status.MovingSlots = 2 }, 2, false},
		{"a member joining", func(sr *shardingv1alpha1.ShardRing) { sr.Status.ReadyMembers = 1 }, 2, false},
		{"a member short of its share", func(sr *shardingv1alpha1.ShardRing) {
			sr.Status.Members[0].SlotCount, sr.Status.Members[1].SlotCount = 3, 5
		}, 2, false},
		{"condition Ready False", func(sr *shardingv1alpha1.ShardRing) { sr.Status.Conditions[0].Status = metav1.ConditionFalse }, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := settledRing()
			tc.change(sr)
			if got := Settled(sr, tc.n); got != tc.want {
				t.Errorf("Settled(%d members) = %v, want %v", tc.n, got, tc.want)
			}
		})
	}
}
