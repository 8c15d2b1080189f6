package assignment

import (
	"strings"
	"testing"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

func TestStatusRoundTrip(t *testing.T) {
	tbl := New(8)
	tbl.Epoch = 5
	copy(tbl.Owner, []string{"a", "a", "a", "b", "b", "", "c", "c"})
	tbl.MoveTo[2], tbl.MoveEpoch[2] = "c", 5
	tbl.MoveTo[5], tbl.MoveEpoch[5] = "a", 4

	status := &shardingv1alpha1.ShardRingStatus{Epoch: tbl.Epoch, Moves: tbl.Moves()}
	for _, m := range []string{"a", "b", "c"} {
		status.Members = append(status.Members, shardingv1alpha1.MemberStatus{Name: m, Slots: rangesOf(tbl, m)})
	}
	got, err := FromStatus(status, 8)
	if err != nil {
		t.Fatalf("reading back a status we wrote: %v", err)
	}
	if !got.Equal(tbl) || got.Epoch != 5 {
		t.Errorf("round trip changed the table: got %+v, want %+v", got, tbl)
	}
	if s := got.Servable("a"); len(s) != 2 || s[0] != 0 || s[1] != 1 {
		t.Errorf("a may serve %v, want [0 1]: slot 2 is moving away from it", s)
	}
	if s := got.Servable("c"); len(s) != 2 || s[0] != 6 {
		t.Errorf("c may serve %v, want [6 7]: slot 2 is not its own until the move completes", s)
	}
	if got.Moving() != 2 || got.Unowned() != 1 {
		t.Errorf("moving=%d unowned=%d, want 2 and 1", got.Moving(), got.Unowned())
	}
}

func rangesOf(t *Table, member string) string {
	var slots []int
	for s, o := range t.Owner {
		if o == member {
			slots = append(slots, s)
		}
	}
	return ring.FormatRanges(slots)
}

func TestContradictoryStatusIsRefused(t *testing.T) {
	tests := []struct {
		name   string
		status shardingv1alpha1.ShardRingStatus
		want   string
	}{
		{"slot owned twice", shardingv1alpha1.ShardRingStatus{Members: []shardingv1alpha1.MemberStatus{
			{Name: "a", Slots: "0-3"}, {Name: "b", Slots: "3-7"}}}, "owned by both"},
		{"move from a non-owner", shardingv1alpha1.ShardRingStatus{
			Members: []shardingv1alpha1.MemberStatus{{Name: "a", Slots: "0-7"}},
			Moves:   []shardingv1alpha1.SlotMove{{Slots: "2", From: "b", To: "c"}}}, "owned by"},
		{"move without destination", shardingv1alpha1.ShardRingStatus{
			Members: []shardingv1alpha1.MemberStatus{{Name: "a", Slots: "0-7"}},
			Moves:   []shardingv1alpha1.SlotMove{{Slots: "2", From: "a"}}}, "no destination"},
		{"slot beyond the ring", shardingv1alpha1.ShardRingStatus{Members: []shardingv1alpha1.MemberStatus{
			{Name: "a", Slots: "0-8"}}}, "member a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromStatus(&tt.status, 8)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
