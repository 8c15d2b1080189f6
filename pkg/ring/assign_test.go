package ring

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/buraksezer/consistent"
)

// statefulSetPods returns op-0 ... op-(n-1), the member names of a StatefulSet.
func statefulSetPods(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("op-%d", i)
	}
	return names
}

func mustAssign(t testing.TB, current Assignment, members []string, opts Options) Assignment {
	t.Helper()
	a, err := Assign(current, members, opts)
	if err != nil {
		t.Fatalf("Assign(%d members): %v", len(members), err)
	}
	return a
}

// checkBalanced fails unless every slot is owned by one of members and every
// member owns floor or ceil of slots/len(members).
func checkBalanced(t testing.TB, a Assignment, members []string, slots int) {
	t.Helper()
	if len(a) != slots {
		t.Fatalf("assignment has %d slots, want %d", len(a), slots)
	}
	live := make(map[string]bool)
	for _, m := range members {
		live[m] = true
	}
	for s, owner := range a {
		if !live[owner] {
			t.Fatalf("slot %d is owned by %q, which is not a live member", s, owner)
		}
	}
	counts := a.Counts()
	lo, hi := slots/len(members), (slots+len(members)-1)/len(members)
	for _, m := range members {
		if c := counts[m]; c < lo || c > hi {
			t.Fatalf("member %s owns %d slots, want %d or %d", m, c, lo, hi)
		}
	}
}

// checkOnlyInvolves fails if a move has neither end at member: on a join every
// moved slot must go to the newcomer, on a leave come from the leaver, because
// a move between two members that both stay is a handover nobody needed.
func checkOnlyInvolves(t testing.TB, moves []Move, member string) {
	t.Helper()
	for _, m := range moves {
		if m.From != member && m.To != member {
			t.Fatalf("slot %d moved from %s to %s, both of which stay; only moves to or from %s were expected", m.Slot, m.From, m.To, member)
		}
	}
}

func TestAssignRejectsInputItCannotServe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		current Assignment
		members []string
		opts    Options
		want    error
	}{
		{"no members", nil, nil, Options{}, ErrNoMembers},
		{"empty member name", nil, []string{"op-0", ""}, Options{}, ErrEmptyMember},
		{"duplicate member", nil, []string{"op-0", "op-1", "op-0"}, Options{}, ErrDuplicateMember},
		{"more members than slots", nil, statefulSetPods(5), Options{Slots: 4}, ErrTooManyMembers},
		{"negative slots", nil, statefulSetPods(1), Options{Slots: -1}, ErrInvalidOptions},
		{"load factor of 1", nil, statefulSetPods(3), Options{LoadFactor: 1}, ErrInvalidOptions},
		{"load factor below 1", nil, statefulSetPods(3), Options{LoadFactor: 0.5}, ErrInvalidOptions},
		{"negative load factor", nil, statefulSetPods(3), Options{LoadFactor: -2}, ErrInvalidOptions},
		{"NaN load factor", nil, statefulSetPods(3), Options{LoadFactor: math.NaN()}, ErrInvalidOptions},
		{"infinite load factor", nil, statefulSetPods(3), Options{LoadFactor: math.Inf(1)}, ErrInvalidOptions},
		{"negative replication factor", nil, statefulSetPods(3), Options{ReplicationFactor: -1}, ErrInvalidOptions},
		{"current shorter than the ring", make(Assignment, 10), statefulSetPods(3), Options{Slots: 16}, ErrAssignmentSize},
		{"current longer than the ring", make(Assignment, DefaultSlots+1), statefulSetPods(3), Options{}, ErrAssignmentSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Assign(tc.current, tc.members, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Assign error = %v, want %v", err, tc.want)
			}
			if a != nil {
				t.Errorf("Assign returned an assignment of %d slots with its error", len(a))
			}
		})
	}
}

func TestAssignWithZeroOptionsUsesTheDefaultRing(t *testing.T) {
	members := statefulSetPods(3)
	a := mustAssign(t, nil, members, Options{})
	checkBalanced(t, a, members, DefaultSlots)
	explicit := mustAssign(t, nil, members, Options{Slots: DefaultSlots, LoadFactor: DefaultLoadFactor, ReplicationFactor: DefaultReplicationFactor})
	if moves := Diff(a, explicit); len(moves) != 0 {
		t.Errorf("zero Options and explicit defaults differ in %d slots", len(moves))
	}
}

func TestAssignBalancesEveryRingSize(t *testing.T) {
	for _, slots := range []int{1, 2, 7, 64, 271, DefaultSlots} {
		for _, n := range []int{1, 2, 3, 5, 13, 64} {
			if n > slots {
				continue
			}
			members := statefulSetPods(n)
			checkBalanced(t, mustAssign(t, nil, members, Options{Slots: slots}), members, slots)
		}
	}
}

// v0.10.0 of buraksezer/consistent built ring points as name+index, so op-1's
// point 10 and op-11's point 0 were both "op-110": whoever was added last took the
// point, and the assignment depended on the order the pods were listed in.
func TestStatefulSetNamesOp1AndOp11GiveTheSameAssignmentInAnyOrder(t *testing.T) {
	members := statefulSetPods(13)
	want := mustAssign(t, nil, members, Options{})
	checkBalanced(t, want, members, DefaultSlots)

	rng := rand.New(rand.NewPCG(13, 11))
	others := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == "op-1" || m == "op-11" })
	reversed := slices.Clone(members)
	slices.Reverse(reversed)
	orders := [][]string{
		reversed,
		append([]string{"op-11", "op-1"}, others...),
		append([]string{"op-1", "op-11"}, others...),
		append(slices.Clone(others), "op-11", "op-1"),
	}
	for range 20 {
		o := slices.Clone(members)
		rng.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
		orders = append(orders, o)
	}
	for _, order := range orders {
		if moves := Diff(want, mustAssign(t, nil, order, Options{})); len(moves) != 0 {
			t.Fatalf("members listed as %v: %d slots get a different owner, first %+v", order, len(moves), moves[0])
		}
	}

	// The preferences themselves must not depend on insertion order either, or a
	// downgrade of the library would go unnoticed behind Assign's sorting.
	ringOwners := func(order []string) []string {
		ms := make([]consistent.Member, len(order))
		for i, name := range order {
			ms[i] = member(name)
		}
		c := consistent.New(ms, consistent.Config{Hasher: Hasher{}, PartitionCount: DefaultSlots, ReplicationFactor: DefaultReplicationFactor, Load: DefaultLoadFactor})
		owners := make([]string, DefaultSlots)
		for s := range owners {
			owners[s] = c.GetPartitionOwner(s).String()
		}
		return owners
	}
	wantOwners := ringOwners(members)
	for _, order := range orders {
		if !slices.Equal(ringOwners(order), wantOwners) {
			t.Fatalf("the consistent ring prefers other owners when members are added as %v", order)
		}
	}
}

func TestAssignOfItsOwnResultMovesNothing(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 100} {
		members := statefulSetPods(n)
		a := mustAssign(t, nil, members, Options{})
		if moves := Diff(a, mustAssign(t, a, members, Options{})); len(moves) != 0 {
			t.Errorf("%d members: reassigning an unchanged ring moved %d slots, first %+v", n, len(moves), moves[0])
		}
	}
}

func TestSlotsOfAGoneMemberGoToTheOthersAndNothingElseMoves(t *testing.T) {
	members := statefulSetPods(4)
	current := mustAssign(t, nil, members, Options{})
	current[5] = "op-9" // an owner that is gone
	current[6] = ""     // a slot nobody owns
	// The counts are now uneven, so the assignment must rebalance them too, but
	// only by taking slots from members above their fair share.
	before := current.Counts()
	got := mustAssign(t, current, members, Options{})
	checkBalanced(t, got, members, DefaultSlots)
	after := got.Counts()
	for _, m := range Diff(current, got) {
		if m.From != "op-9" && m.From != "" && after[m.From] >= before[m.From] {
			t.Errorf("slot %d moved from %s to %s although %s was not above its share", m.Slot, m.From, m.To, m.From)
		}
	}
	if got[5] == "op-9" || got[6] == "" {
		t.Errorf("slots 5 and 6 are owned by %q and %q, want live members", got[5], got[6])
	}
}

func TestAnOverloadedMemberGivesAwayOnlyItsExcess(t *testing.T) {
	current := make(Assignment, DefaultSlots)
	for s := range current {
		current[s] = "op-0"
	}
	members := statefulSetPods(4)
	got := mustAssign(t, current, members, Options{})
	checkBalanced(t, got, members, DefaultSlots)
	moves := Diff(current, got)
	if len(moves) != DefaultSlots-DefaultSlots/4 {
		t.Errorf("%d slots moved, want %d: op-0 should keep a quarter", len(moves), DefaultSlots-DefaultSlots/4)
	}
	checkOnlyInvolves(t, moves, "op-0")
}

// The design asks that scaling by one replica moves close to the ideal 1/(N+1)
// of the slots, and only between the changed member and the others.
func TestScalingByOneMemberMovesNearlyTheIdealShare(t *testing.T) {
	const slots = DefaultSlots
	for n := 1; n <= 64; n++ {
		small, large := statefulSetPods(n), statefulSetPods(n+1)
		ideal := float64(slots) / float64(n+1)
		smallRing := mustAssign(t, nil, small, Options{})
		largeRing := mustAssign(t, nil, large, Options{})

		joined := mustAssign(t, smallRing, large, Options{})
		checkBalanced(t, joined, large, slots)
		moves := Diff(smallRing, joined)
		checkOnlyInvolves(t, moves, large[n])
		if ratio := float64(len(moves)) / ideal; ratio > 1.15 {
			t.Errorf("join %d -> %d moved %d slots, %.3f x the ideal %.1f", n, n+1, len(moves), ratio, ideal)
		}

		sorted := slices.Sorted(slices.Values(large))
		for _, leaver := range []string{sorted[len(sorted)-1], sorted[len(sorted)/2], sorted[0]} {
			staying := slices.DeleteFunc(slices.Clone(large), func(m string) bool { return m == leaver })
			left := mustAssign(t, largeRing, staying, Options{})
			checkBalanced(t, left, staying, slots)
			moves := Diff(largeRing, left)
			checkOnlyInvolves(t, moves, leaver)
			if ratio := float64(len(moves)) / ideal; ratio > 1.15 {
				t.Errorf("%s leaving %d -> %d moved %d slots, %.3f x the ideal %.1f", leaver, n+1, n, len(moves), ratio, ideal)
			}
		}
	}
}

// TestRandomRingsKeepEveryPromise drives Assign through random histories of joins,
// leaves and damaged assignments, checking after each step what a user relies on.
func TestRandomRingsKeepEveryPromise(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 5866))
	randomName := func() string {
		if rng.IntN(2) == 0 {
			return fmt.Sprintf("op-%d", rng.IntN(120))
		}
		return fmt.Sprintf("m%x", rng.Uint32()%4096)
	}
	for iter := range 60 {
		slots := 1 + rng.IntN(1500)
		opts := Options{Slots: slots, LoadFactor: 1.05 + rng.Float64(), ReplicationFactor: 1 + rng.IntN(40)}
		members := map[string]bool{}
		for range 1 + rng.IntN(min(slots, 40)) {
			members[randomName()] = true
		}
		var current Assignment
		for step := range 6 {
			names := make([]string, 0, len(members))
			for m := range members {
				names = append(names, m)
			}
			rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
			ctx := fmt.Sprintf("iteration %d step %d (%d slots, %d members)", iter, step, slots, len(names))

			got, err := Assign(current, names, opts)
			if err != nil {
				t.Fatalf("%s: %v", ctx, err)
			}
			checkBalanced(t, got, names, slots)

			// Stickiness: a live member either only gains or only loses slots,
			// and it loses them only while above its final share.
			gained, lost := map[string]bool{}, map[string]bool{}
			for _, m := range Diff(current, got) {
				if members[m.From] {
					lost[m.From] = true
				}
				gained[m.To] = true
			}
			for m := range lost {
				if gained[m] {
					t.Fatalf("%s: %s both gained and lost slots", ctx, m)
				}
			}

			rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
			again, err := Assign(got, names, opts)
			if err != nil {
				t.Fatalf("%s: %v", ctx, err)
			}
			if moves := Diff(got, again); len(moves) != 0 {
				t.Fatalf("%s: reassigning the result (members in another order) moved %d slots", ctx, len(moves))
			}
			if current == nil {
				if moves := Diff(got, mustAssign(t, nil, names, opts)); len(moves) != 0 {
					t.Fatalf("%s: a fresh ring depends on member order", ctx)
				}
			}

			// Next step: a join, a leave, or damage (slots of gone members and
			// unowned slots) on top of the current result.
			current = got
			switch rng.IntN(3) {
			case 0:
				if len(members) < slots {
					newcomer := randomName()
					if !members[newcomer] {
						members[newcomer] = true
						joined := mustAssign(t, current, append(names, newcomer), opts)
						checkOnlyInvolves(t, Diff(current, joined), newcomer)
					}
				}
			case 1:
				if len(members) > 1 {
					leaver := names[rng.IntN(len(names))]
					delete(members, leaver)
					staying := slices.DeleteFunc(slices.Clone(names), func(m string) bool { return m == leaver })
					checkOnlyInvolves(t, Diff(current, mustAssign(t, current, staying, opts)), leaver)
				}
			default:
				current = slices.Clone(current)
				for range rng.IntN(slots/4 + 1) {
					current[rng.IntN(slots)] = []string{"", "gone-1", "gone-2", names[0]}[rng.IntN(4)]
				}
			}
		}
	}
}

func TestDiffListsEveryChangedSlotInOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new Assignment
		want     []Move
	}{
		{"unchanged", Assignment{"a", "b"}, Assignment{"a", "b"}, nil},
		{"fresh ring", nil, Assignment{"a", "b"}, []Move{{0, "", "a"}, {1, "", "b"}}},
		{"handover", Assignment{"a", "b", "a"}, Assignment{"a", "a", "b"}, []Move{{1, "b", "a"}, {2, "a", "b"}}},
		{"slot left unowned", Assignment{"a", "b"}, Assignment{"a", ""}, []Move{{1, "b", ""}}},
		{"everything dropped", Assignment{"a", ""}, nil, []Move{{0, "a", ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Diff(tc.old, tc.new); !slices.Equal(got, tc.want) {
				t.Errorf("Diff = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAssignmentReportsWhatEachMemberServes(t *testing.T) {
	a := Assignment{"b", "a", "", "b"}
	if got := a.SlotsOf("b"); !slices.Equal(got, []int{0, 3}) {
		t.Errorf("SlotsOf(b) = %v, want [0 3]", got)
	}
	if got := a.SlotsOf("c"); len(got) != 0 {
		t.Errorf("SlotsOf(c) = %v, want none", got)
	}
	counts := a.Counts()
	if len(counts) != 2 || counts["a"] != 1 || counts["b"] != 2 {
		t.Errorf("Counts = %v, want map[a:1 b:2] (unowned slots not counted)", counts)
	}
}

func BenchmarkAssign(b *testing.B) {
	members := statefulSetPods(64)
	b.Run("fresh/P=1024/N=64", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Assign(nil, members, Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("join/P=1024/N=63+1", func(b *testing.B) {
		current := mustAssign(b, nil, members[:63], Options{})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Assign(current, members, Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
