package ring

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/buraksezer/consistent"
)

// DefaultLoadFactor bounds how many slots the consistent ring may prefer for one
// member, relative to the mean. 1.25 is the value of the bounded-load paper and
// of buraksezer/consistent: low enough that preferences stay balanced, high
// enough that a join does not cascade preferences around the whole ring.
const DefaultLoadFactor = 1.25

// DefaultReplicationFactor is the number of points each member has on the
// consistent ring. buraksezer/consistent re-sorts the whole ring once per member
// while it is built, so construction costs about N²·R·log(N·R): R = 10 keeps
// Assign for 64 members at a few milliseconds, where 100 would take tens. Little is
// lost: R only shapes which slots a member prefers, never how many slots a member
// gets or how many move (Assign enforces both itself), and in a fresh 1024-slot
// ring about 90% of slots land on their preferred member for any R from 5 to 100.
const DefaultReplicationFactor = 10

// Errors returned by Assign, for errors.Is. The returned error wraps one of
// them and says which member or option is at fault.
var (
	ErrNoMembers       = errors.New("no members")
	ErrEmptyMember     = errors.New("empty member name")
	ErrDuplicateMember = errors.New("duplicate member")
	ErrTooManyMembers  = errors.New("more members than slots")
	ErrInvalidOptions  = errors.New("invalid ring options")
	ErrAssignmentSize  = errors.New("assignment does not cover every slot")
)

// Assignment says which member serves each slot: index = slot, value = member
// name, "" = no owner.
type Assignment []string

// Counts returns how many slots each member owns. Unowned slots are not counted.
func (a Assignment) Counts() map[string]int {
	counts := make(map[string]int)
	for _, m := range a {
		if m != "" {
			counts[m]++
		}
	}
	return counts
}

// SlotsOf returns the slots owned by member, in increasing order.
func (a Assignment) SlotsOf(member string) []int {
	var slots []int
	for s, m := range a {
		if m == member {
			slots = append(slots, s)
		}
	}
	return slots
}

// Move is one slot changing owner. From is "" when the slot had no owner, To is
// "" when it loses its owner.
type Move struct {
	Slot     int
	From, To string
}

// Diff returns the slots whose owner differs between old and new, by increasing
// slot. A slot beyond the end of either assignment counts as unowned there, so a
// nil old gives one move per owned slot of new.
func Diff(old, new Assignment) []Move {
	var moves []Move
	for s := range max(len(old), len(new)) {
		var from, to string
		if s < len(old) {
			from = old[s]
		}
		if s < len(new) {
			to = new[s]
		}
		if from != to {
			moves = append(moves, Move{Slot: s, From: from, To: to})
		}
	}
	return moves
}

// Options tune Assign. The zero value means every default.
type Options struct {
	// Slots is the number of slots, P. It must equal the length of a non-empty
	// current assignment and must never change for a ring, because every object's
	// slot label was computed with it. Default DefaultSlots (1024).
	Slots int

	// LoadFactor bounds the consistent ring's preferences: no member is the
	// preferred member of more than ceil(LoadFactor·Slots/N) slots. It must be
	// greater than 1, or the ring cannot place every slot.
	// Default DefaultLoadFactor (1.25).
	LoadFactor float64

	// ReplicationFactor is the number of points per member on the consistent ring.
	// Default DefaultReplicationFactor (10), which explains why it is small.
	ReplicationFactor int
}

// withDefaults is the one place where zero fields get their defaults.
func (o Options) withDefaults() Options {
	if o.Slots == 0 {
		o.Slots = DefaultSlots
	}
	if o.LoadFactor == 0 {
		o.LoadFactor = DefaultLoadFactor
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = DefaultReplicationFactor
	}
	return o
}

// validate rejects what would make buraksezer/consistent panic or loop: it
// panics when no ring point has room for a partition, which a load factor of 1 or
// less, or no points at all, can cause.
func (o Options) validate() error {
	if o.Slots < 1 {
		return fmt.Errorf("%w: slots must be at least 1, got %d", ErrInvalidOptions, o.Slots)
	}
	if !(o.LoadFactor > 1) || math.IsInf(o.LoadFactor, 0) {
		return fmt.Errorf("%w: load factor must be a finite number greater than 1, got %v", ErrInvalidOptions, o.LoadFactor)
	}
	if o.ReplicationFactor < 1 {
		return fmt.Errorf("%w: replication factor must be at least 1, got %d", ErrInvalidOptions, o.ReplicationFactor)
	}
	return nil
}

// member adapts a name to consistent.Member.
type member string

func (m member) String() string { return string(m) }

// Assign returns which live member should serve each slot, given the current
// assignment (nil or empty for a new ring) and the live members. Owners in current
// that are not in members are treated as gone. The result depends only on the set
// of members, not their order, and Assign of its own result with the same members
// returns it unchanged.
//
// The algorithm:
//  1. Each slot's preferred member is its owner in a bounded-load consistent ring
//     (buraksezer/consistent, xxhash) over the sorted members.
//  2. Targets: with q, r = Slots/N, Slots%N, the r members that own the most slots
//     now may own q+1, the others q (ties: see targets).
//     Giving q+1 to the largest owners is what makes a join take slots only for
//     the newcomer and a leave move only the leaver's slots.
//  3. Keep: a live owner keeps its slots up to its target: first the slots that
//     prefer it, then those whose preferred member needs no more, then the rest,
//     each group by slot index. The others, and slots of gone or no owner, form
//     the pool.
//  4. Pool, by slot index: a slot goes to its preferred member while that member
//     is under target; what is left goes to the member furthest under target
//     (ties by name).
//
// So every member ends with exactly its target, and a slot moves only if its
// owner is gone or over target: the fewest moves that restore balance.
func Assign(current Assignment, members []string, opts Options) (Assignment, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if len(current) != 0 && len(current) != opts.Slots {
		return nil, fmt.Errorf("%w: current assignment has %d slots, ring has %d", ErrAssignmentSize, len(current), opts.Slots)
	}
	names, err := sortedMembers(members, opts.Slots)
	if err != nil {
		return nil, err
	}
	n := len(names)
	index := make(map[string]int, n)
	for i, name := range names {
		index[name] = i
	}

	preferred := preferredMembers(names, index, opts)

	// owned[i] lists member i's current slots by increasing slot.
	owned := make([][]int, n)
	for s, owner := range current {
		if i, ok := index[owner]; ok {
			owned[i] = append(owned[i], s)
		}
	}

	target := targets(names, owned, preferred, opts.Slots)

	result := make(Assignment, opts.Slots)
	count := make([]int, n)
	for i, slots := range owned {
		for _, s := range keepOrder(i, slots, preferred, owned, target)[:min(len(slots), target[i])] {
			result[s] = names[i]
			count[i]++
		}
	}

	// Two passes so that a slot without a preferred taker cannot fill up a member
	// before that member's own preferred slots further on in the pool reach it.
	for s, p := range preferred {
		if result[s] == "" && p >= 0 && count[p] < target[p] {
			result[s] = names[p]
			count[p]++
		}
	}
	for s := range result {
		if result[s] != "" {
			continue
		}
		best := 0
		for i := 1; i < n; i++ {
			if target[i]-count[i] > target[best]-count[best] {
				best = i
			}
		}
		result[s] = names[best]
		count[best]++
	}
	return result, nil
}

// sortedMembers validates members and returns a sorted copy, so that nothing
// downstream can depend on the caller's order.
func sortedMembers(members []string, slots int) ([]string, error) {
	if len(members) == 0 {
		return nil, ErrNoMembers
	}
	if len(members) > slots {
		return nil, fmt.Errorf("%w: %d members, %d slots", ErrTooManyMembers, len(members), slots)
	}
	names := slices.Clone(members)
	slices.Sort(names)
	for i, name := range names {
		if name == "" {
			return nil, ErrEmptyMember
		}
		if i > 0 && names[i-1] == name {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, name)
		}
	}
	return names, nil
}

// preferredMembers returns, per slot, the index of its owner in a consistent ring
// over names, or -1 if the ring names none.
func preferredMembers(names []string, index map[string]int, opts Options) []int {
	ringMembers := make([]consistent.Member, len(names))
	for i, name := range names {
		ringMembers[i] = member(name)
	}
	// New with every member distributes the partitions once; Add would
	// redistribute them after each member.
	c := consistent.New(ringMembers, consistent.Config{
		Hasher:            Hasher{},
		PartitionCount:    opts.Slots,
		ReplicationFactor: opts.ReplicationFactor,
		Load:              opts.LoadFactor,
	})
	preferred := make([]int, opts.Slots)
	for s := range preferred {
		preferred[s] = -1
		if owner := c.GetPartitionOwner(s); owner != nil {
			if i, ok := index[owner.String()]; ok {
				preferred[s] = i
			}
		}
	}
	return preferred
}

// targets returns how many slots each member should own: q or q+1. The q+1
// targets go to the members that own the most slots now, so that none of them
// gives up a slot only to receive another one. Among members that own as many,
// those holding fewer slots that prefer an underfilled member (one below q) come
// first, so that the slots released are the ones their preferred member takes;
// on a fresh ring, those preferred by more slots come first, so that fewer slots
// end up away from their preferred member.
func targets(names []string, owned [][]int, preferred []int, slots int) []int {
	n := len(names)
	q, r := slots/n, slots%n
	preferredCount := make([]int, n)
	for _, p := range preferred {
		if p >= 0 {
			preferredCount[p]++
		}
	}
	wantedElsewhere := make([]int, n)
	for i, ss := range owned {
		for _, s := range ss {
			if p := preferred[s]; p >= 0 && p != i && len(owned[p]) < q {
				wantedElsewhere[i]++
			}
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(
			cmp.Compare(len(owned[b]), len(owned[a])),
			cmp.Compare(wantedElsewhere[a], wantedElsewhere[b]),
			cmp.Compare(preferredCount[b], preferredCount[a]),
			cmp.Compare(names[a], names[b]),
		)
	})
	target := make([]int, n)
	for rank, i := range order {
		target[i] = q
		if rank < r {
			target[i]++
		}
	}
	return target
}

// keepOrder returns member i's slots in the order it keeps them when over target:
// slots that prefer i, then slots whose preferred member needs no more, then
// slots whose preferred member is under target, each by slot index. Releasing the
// last group first lets those slots go to the member that prefers them, so that
// the assignment drifts back towards the ring's preferences instead of away.
func keepOrder(i int, slots, preferred []int, owned [][]int, target []int) []int {
	if len(slots) <= target[i] {
		return slots
	}
	rank := func(s int) int {
		switch p := preferred[s]; {
		case p == i:
			return 0
		case p < 0 || len(owned[p]) >= target[p]:
			return 1
		default:
			return 2
		}
	}
	ordered := slices.Clone(slots)
	slices.SortStableFunc(ordered, func(a, b int) int { return cmp.Compare(rank(a), rank(b)) })
	return ordered
}
