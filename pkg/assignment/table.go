package assignment

import (
	"cmp"
	"fmt"
	"slices"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Table is the assignment of one epoch: per slot its owner and, while a
// handover is pending, the member it moves to and the epoch that started it.
type Table struct {
	// Epoch is the status epoch the table was read from.
	Epoch int64
	// Owner is, per slot, the member that owns it; "" when no live member does.
	Owner ring.Assignment
	// MoveTo is, per slot, the member a pending handover moves it to, or "".
	MoveTo []string
	// MoveEpoch is, per slot with a pending handover, the epoch that started it.
	MoveEpoch []int64
}

// New returns a table of the given number of slots with no owners.
func New(slots int) *Table {
	return &Table{
		Owner:     make(ring.Assignment, slots),
		MoveTo:    make([]string, slots),
		MoveEpoch: make([]int64, slots),
	}
}

// Slots returns the number of slots.
func (t *Table) Slots() int { return len(t.Owner) }

// Clone returns a deep copy.
func (t *Table) Clone() *Table {
	return &Table{
		Epoch:     t.Epoch,
		Owner:     slices.Clone(t.Owner),
		MoveTo:    slices.Clone(t.MoveTo),
		MoveEpoch: slices.Clone(t.MoveEpoch),
	}
}

// Servable returns the slots member may serve under this table: those it owns
// that are not moving away. A member serves nothing else, which is what keeps
// two members from ever serving one slot.
func (t *Table) Servable(member string) []int {
	var slots []int
	for s, owner := range t.Owner {
		if owner == member && t.MoveTo[s] == "" {
			slots = append(slots, s)
		}
	}
	return slots
}

// Incoming returns the number of slots on their way to member: those of a
// pending handover to it.
func (t *Table) Incoming(member string) int {
	n := 0
	for _, to := range t.MoveTo {
		if to == member {
			n++
		}
	}
	return n
}

// Moving returns the number of slots with a pending handover.
func (t *Table) Moving() int {
	n := 0
	for _, to := range t.MoveTo {
		if to != "" {
			n++
		}
	}
	return n
}

// Unowned returns the number of slots with no owner.
func (t *Table) Unowned() int {
	n := 0
	for _, owner := range t.Owner {
		if owner == "" {
			n++
		}
	}
	return n
}

// Target returns the assignment the table is heading to: the owners with
// every pending move applied.
func (t *Table) Target() ring.Assignment {
	target := slices.Clone(t.Owner)
	for s, to := range t.MoveTo {
		if to != "" {
			target[s] = to
		}
	}
	return target
}

// Equal reports whether two tables assign the same owners and moves,
// ignoring the epoch.
func (t *Table) Equal(o *Table) bool {
	return slices.Equal(t.Owner, o.Owner) && slices.Equal(t.MoveTo, o.MoveTo) && slices.Equal(t.MoveEpoch, o.MoveEpoch)
}

// FromStatus reads the table that a ShardRing status records for a ring of
// the given number of slots. A status that contradicts itself (a slot owned
// twice, a move of a slot its From does not own) is an error: the caller must
// not act on it.
func FromStatus(status *shardingv1alpha1.ShardRingStatus, slots int) (*Table, error) {
	t := New(slots)
	t.Epoch = status.Epoch
	for _, m := range status.Members {
		owned, err := ring.ParseRanges(m.Slots, slots)
		if err != nil {
			return nil, fmt.Errorf("reading the slots of member %s: %w", m.Name, err)
		}
		for _, s := range owned {
			if t.Owner[s] != "" {
				return nil, fmt.Errorf("slot %d is owned by both %s and %s", s, t.Owner[s], m.Name)
			}
			t.Owner[s] = m.Name
		}
	}
	for _, mv := range status.Moves {
		moving, err := ring.ParseRanges(mv.Slots, slots)
		if err != nil {
			return nil, fmt.Errorf("reading the move from %q to %s: %w", mv.From, mv.To, err)
		}
		if mv.To == "" {
			return nil, fmt.Errorf("a move of slots %s has no destination", mv.Slots)
		}
		for _, s := range moving {
			if t.Owner[s] != mv.From {
				return nil, fmt.Errorf("slot %d moves from %q but is owned by %q", s, mv.From, t.Owner[s])
			}
			if t.MoveTo[s] != "" {
				return nil, fmt.Errorf("slot %d moves twice", s)
			}
			t.MoveTo[s] = mv.To
			t.MoveEpoch[s] = mv.Epoch
		}
	}
	return t, nil
}

// Moves returns the pending handovers grouped by (from, to, epoch), in a
// stable order, as the status records them.
func (t *Table) Moves() []shardingv1alpha1.SlotMove {
	type key struct {
		from, to string
		epoch    int64
	}
	groups := map[key][]int{}
	for s, to := range t.MoveTo {
		if to != "" {
			k := key{t.Owner[s], to, t.MoveEpoch[s]}
			groups[k] = append(groups[k], s)
		}
	}
	moves := make([]shardingv1alpha1.SlotMove, 0, len(groups))
	for k, slots := range groups {
		moves = append(moves, shardingv1alpha1.SlotMove{Slots: ring.FormatRanges(slots), From: k.from, To: k.to, Epoch: k.epoch})
	}
	slices.SortFunc(moves, func(a, b shardingv1alpha1.SlotMove) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To), cmp.Compare(a.Epoch, b.Epoch))
	})
	return moves
}
