package slotlabel_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

func TestSetSlotLabel(t *testing.T) {
	for _, tc := range []struct {
		name        string
		labels      map[string]string
		slot        int
		wantChanged bool
		want        map[string]string
	}{
		{name: "no labels", slot: 7, wantChanged: true,
			want: map[string]string{shardingv1alpha1.LabelSlot: "7"}},
		{name: "other labels kept", labels: map[string]string{"app": "x"}, slot: 7, wantChanged: true,
			want: map[string]string{"app": "x", shardingv1alpha1.LabelSlot: "7"}},
		{name: "wrong slot replaced", labels: map[string]string{shardingv1alpha1.LabelSlot: "9"}, slot: 7, wantChanged: true,
			want: map[string]string{shardingv1alpha1.LabelSlot: "7"}},
		{name: "right slot kept", labels: map[string]string{shardingv1alpha1.LabelSlot: "7"}, slot: 7,
			want: map[string]string{shardingv1alpha1.LabelSlot: "7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &metav1.ObjectMeta{Labels: tc.labels}
			if got := slotlabel.SetSlotLabel(obj, tc.slot); got != tc.wantChanged {
				t.Errorf("SetSlotLabel changed = %v, want %v", got, tc.wantChanged)
			}
			if !equalMaps(obj.Labels, tc.want) {
				t.Errorf("labels = %v, want %v", obj.Labels, tc.want)
			}
		})
	}
}

func TestLabelChild(t *testing.T) {
	const slots = 1024
	for _, tc := range []struct {
		name   string
		owner  metav1.ObjectMeta
		want   string
		wantOK bool
	}{
		{
			name:  "owner's label is copied",
			owner: metav1.ObjectMeta{Namespace: "ns", Name: "a", Labels: map[string]string{shardingv1alpha1.LabelSlot: "12"}},
			// The child must land where the owner is served now, even if the
			// owner's label is not yet what its name hashes to.
			want: "12", wantOK: true,
		},
		{
			name:  "owner without a label: computed from its namespace and name",
			owner: metav1.ObjectMeta{Namespace: "ns", Name: "a"},
			want:  slotlabel.Value(ring.Slot("ns", "a", slots)), wantOK: true,
		},
		{
			name:  "owner with a label that is no slot of the ring: computed",
			owner: metav1.ObjectMeta{Namespace: "ns", Name: "a", Labels: map[string]string{shardingv1alpha1.LabelSlot: "5000"}},
			want:  slotlabel.Value(ring.Slot("ns", "a", slots)), wantOK: true,
		},
		{
			name:  "cluster-scoped owner",
			owner: metav1.ObjectMeta{Name: "global"},
			want:  slotlabel.Value(ring.Slot("", "global", slots)), wantOK: true,
		},
		{
			name:  "owner with neither label nor name",
			owner: metav1.ObjectMeta{Namespace: "ns", GenerateName: "a-"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			child := &metav1.ObjectMeta{Namespace: "ns", Name: "child", Labels: map[string]string{"app": "x"}}
			ok := slotlabel.LabelChild(&tc.owner, child, slots)
			got, has := child.Labels[shardingv1alpha1.LabelSlot]
			if ok != tc.wantOK || got != tc.want || has != tc.wantOK {
				t.Errorf("LabelChild = %v with label %q (present %v), want %v with %q", ok, got, has, tc.wantOK, tc.want)
			}
			if child.Labels["app"] != "x" {
				t.Errorf("LabelChild dropped the child's other labels: %v", child.Labels)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
