package coordinator

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

func TestSetServerSideSharding(t *testing.T) {
	byUID := &shardingv1alpha1.ShardRingSpec{SelectorMode: shardingv1alpha1.SelectorModeShardSelector}
	member := func(name, selector string, live bool) membership.MemberInfo {
		return membership.MemberInfo{Name: name, ShardSelector: selector, Live: live}
	}
	tests := []struct {
		name    string
		spec    *shardingv1alpha1.ShardRingSpec
		members []membership.MemberInfo
		status  metav1.ConditionStatus // "": no condition
		reason  string
		message string
	}{
		{"labels mode has no such condition", &shardingv1alpha1.ShardRingSpec{},
			[]membership.MemberInfo{member("a", shardingv1alpha1.ShardSelectorIgnored, true)}, "", "", ""},
		{"every live member applied", byUID, []membership.MemberInfo{
			member("a", shardingv1alpha1.ShardSelectorApplied, true),
			member("b", shardingv1alpha1.ShardSelectorApplied, true),
			member("gone", shardingv1alpha1.ShardSelectorIgnored, false),
		}, metav1.ConditionTrue, ReasonShardSelectorApplied, ""},
		{"one member found it ignored", byUID, []membership.MemberInfo{
			member("a", shardingv1alpha1.ShardSelectorApplied, true),
			member("b", shardingv1alpha1.ShardSelectorIgnored, true),
		}, metav1.ConditionFalse, ReasonShardSelectorIgnored, "members b receive every object"},
		{"not everyone has reported", byUID, []membership.MemberInfo{
			member("a", shardingv1alpha1.ShardSelectorApplied, true),
			member("b", "", true),
		}, metav1.ConditionUnknown, ReasonShardSelectorNotReported, "1 of 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &shardingv1alpha1.ShardRingStatus{Conditions: []metav1.Condition{{
				Type: shardingv1alpha1.ConditionServerSideSharding, Status: metav1.ConditionTrue, Reason: "Old",
			}}}
			setServerSideSharding(st, tt.spec, 3, tt.members)
			c := meta.FindStatusCondition(st.Conditions, shardingv1alpha1.ConditionServerSideSharding)
			if tt.status == "" {
				if c != nil {
					t.Fatalf("condition %+v, want none", c)
				}
				return
			}
			if c == nil || c.Status != tt.status || c.Reason != tt.reason || !strings.Contains(c.Message, tt.message) || c.ObservedGeneration != 3 {
				t.Fatalf("condition %+v, want status %s reason %s message containing %q at generation 3", c, tt.status, tt.reason, tt.message)
			}
		})
	}
}
