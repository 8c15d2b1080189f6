package coordinator

import (
	"testing"

	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

const planSlots = 8

func live(name string, epoch int64, serving ...int) membership.MemberInfo {
	return membership.MemberInfo{Name: name, Live: true, Epoch: epoch, Serving: serving}
}

func table(epoch int64, owners ...string) *assignment.Table {
	t := assignment.New(planSlots)
	t.Epoch = epoch
	copy(t.Owner, owners)
	return t
}

func mustPlan(t *testing.T, in planInput) planResult {
	t.Helper()
	in.ring = ring.Options{Slots: planSlots}
	res, err := plan(in)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAFreshRingIsAssignedWithoutMoves(t *testing.T) {
	res := mustPlan(t, planInput{current: table(0), members: []membership.MemberInfo{live("a", 0), live("b", 0)}, rebalance: true})
	if res.next.Unowned() != 0 || res.next.Moving() != 0 || res.next.Epoch != 1 {
		t.Fatalf("unowned %d, moving %d, epoch %d; want every slot owned at once, nothing moving, epoch 1",
			res.next.Unowned(), res.next.Moving(), res.next.Epoch)
	}
}

func TestAJoinMovesSlotsOnlyAfterTheOwnerReleasedThem(t *testing.T) {
	cur := table(4, "a", "a", "a", "a", "a", "a", "a", "a")
	a := live("a", 4, 0, 1, 2, 3, 4, 5, 6, 7)
	res := mustPlan(t, planInput{current: cur, members: []membership.MemberInfo{a, live("b", 0)}, rebalance: true})
	if res.started != 4 || res.next.Epoch != 5 {
		t.Fatalf("started %d moves at epoch %d, want 4 at epoch 5", res.started, res.next.Epoch)
	}
	for s, to := range res.next.MoveTo {
		if to != "" && (to != "b" || res.next.Owner[s] != "a" || res.next.MoveEpoch[s] != 5) {
			t.Fatalf("slot %d: owner %s moving to %s at epoch %d; want owner a until it releases, moving to b at 5",
				s, res.next.Owner[s], to, res.next.MoveEpoch[s])
		}
	}
	moving := res.next

	// a still publishes the epoch before the move, without some slots: that
	// list may predate a gain, so it proves nothing.
	stale := live("a", 4)
	res = mustPlan(t, planInput{current: moving, members: []membership.MemberInfo{stale, live("b", 5)}})
	if res.completed != 0 {
		t.Fatalf("completed %d moves on a serving list older than the move", res.completed)
	}

	// a acknowledged epoch 5 and still serves everything: nothing completes.
	res = mustPlan(t, planInput{current: moving, members: []membership.MemberInfo{live("a", 5, 0, 1, 2, 3, 4, 5, 6, 7), live("b", 5)}})
	if res.completed != 0 {
		t.Fatalf("completed %d moves while the owner still serves the slots", res.completed)
	}

	// a acknowledged epoch 5 and serves only what it keeps: the moves complete.
	var keeps []int
	for s, to := range moving.MoveTo {
		if to == "" {
			keeps = append(keeps, s)
		}
	}
	res = mustPlan(t, planInput{current: moving, members: []membership.MemberInfo{live("a", 5, keeps...), live("b", 5)}})
	if res.completed != 4 || res.next.Moving() != 0 || res.next.Owner.Counts()["b"] != 4 {
		t.Fatalf("completed %d, moving %d, b owns %d; want 4, 0, 4", res.completed, res.next.Moving(), res.next.Owner.Counts()["b"])
	}
}

func TestSlotsOfADeadMemberGoToTheLiveOnesAtOnce(t *testing.T) {
	cur := table(7, "a", "a", "a", "a", "b", "b", "b", "b")
	dead := membership.MemberInfo{Name: "b", Expired: true}
	res := mustPlan(t, planInput{current: cur, members: []membership.MemberInfo{live("a", 7, 0, 1, 2, 3), dead}, rebalance: true})
	if res.next.Owner.Counts()["a"] != planSlots || res.next.Moving() != 0 {
		t.Fatalf("owners %v moving %d; want every slot with a and no move: b has fenced itself", res.next.Owner, res.next.Moving())
	}
}

func TestAMoveToAMemberThatDiedIsCancelled(t *testing.T) {
	cur := table(9, "a", "a", "a", "a", "a", "a", "a", "a")
	cur.MoveTo[0], cur.MoveEpoch[0] = "b", 9
	res := mustPlan(t, planInput{current: cur, members: []membership.MemberInfo{live("a", 9, 0, 1, 2, 3, 4, 5, 6, 7)}})
	if res.cancelled != 1 || res.next.MoveTo[0] != "" || res.next.Owner[0] != "a" {
		t.Fatalf("cancelled %d, slot 0 owner %s moving to %q; want the move cancelled and a still the owner",
			res.cancelled, res.next.Owner[0], res.next.MoveTo[0])
	}
}

func TestAnUnreadableServingListNeverCompletesAMove(t *testing.T) {
	cur := table(3, "a", "a", "a", "a", "a", "a", "a", "a")
	cur.MoveTo[0], cur.MoveEpoch[0] = "b", 3
	a := live("a", 3)
	a.ServingUnknown = true
	res := mustPlan(t, planInput{current: cur, members: []membership.MemberInfo{a, live("b", 3)}})
	if res.completed != 0 {
		t.Fatal("a move completed although the owner's serving list could not be read")
	}
}
