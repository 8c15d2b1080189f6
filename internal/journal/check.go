package journal

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Overlap is two reconciles of objects of the same slot, by different
// members, whose times overlap: the invariant a ring must never break.
type Overlap struct {
	// First started no later than Second.
	First, Second Entry
}

func (o Overlap) String() string {
	return fmt.Sprintf("slot %d: %s reconciled %s from %s to %s while %s reconciled %s from %s to %s",
		o.First.Slot, o.First.Member, o.First.Object, o.First.Start.Format(timeFormat), o.First.End.Format(timeFormat),
		o.Second.Member, o.Second.Object, o.Second.Start.Format(timeFormat), o.Second.End.Format(timeFormat))
}

const timeFormat = "15:04:05.000000"

// Counts are one member's reconciles by result.
type Counts struct {
	OK, Error, Dropped int
}

// Total is the number of reconciles.
func (c Counts) Total() int { return c.OK + c.Error + c.Dropped }

// Report is what Check found.
type Report struct {
	// Entries is the number of reconciles checked.
	Entries int
	// Overlaps are the pairs of reconciles that broke the invariant, in the
	// order the second of each started.
	Overlaps []Overlap
	// Missing are the objects (sorted) whose final generation no reconcile
	// ended ok for.
	Missing []string
	// Members counts each member's reconciles.
	Members map[string]Counts
}

// OK reports whether the journals show no overlap and nothing missing.
func (r Report) OK() bool { return len(r.Overlaps) == 0 && len(r.Missing) == 0 }

// String summarises the report on one line: "entries=1200 overlaps=0
// missing=0 members=op-0:600,op-1:600".
func (r Report) String() string {
	members := make([]string, 0, len(r.Members))
	for _, m := range slices.Sorted(maps.Keys(r.Members)) {
		members = append(members, fmt.Sprintf("%s:%d", m, r.Members[m].Total()))
	}
	return fmt.Sprintf("entries=%d overlaps=%d missing=%d members=%s",
		r.Entries, len(r.Overlaps), len(r.Missing), strings.Join(members, ","))
}

// Check looks for overlaps in entries (merged from every member's journal)
// and for objects of want (object to final generation) that were never
// reconciled ok at that generation or a later one. Two reconciles overlap
// when each started before the other ended; one that ends at the very
// instant another starts does not overlap it. Reconciles of one member never
// overlap each other in this sense, whatever their times: a member may run
// several at once, and a restarted member keeps its name.
func Check(entries []Entry, want map[string]int64) Report {
	r := Report{Entries: len(entries), Members: map[string]Counts{}}
	bySlot := map[int][]Entry{}
	reconciled := map[string]int64{} // object -> newest generation reconciled ok
	for _, e := range entries {
		c := r.Members[e.Member]
		switch e.Result {
		case ResultOK:
			c.OK++
			reconciled[e.Object] = max(reconciled[e.Object], e.Generation)
		case ResultError:
			c.Error++
		default:
			c.Dropped++
		}
		r.Members[e.Member] = c
		if e.Slot >= 0 { // -1: the slot is unknown (ByUID, object gone)
			bySlot[e.Slot] = append(bySlot[e.Slot], e)
		}
	}

	for _, slot := range slices.Sorted(maps.Keys(bySlot)) {
		r.Overlaps = append(r.Overlaps, overlaps(bySlot[slot])...)
	}
	slices.SortStableFunc(r.Overlaps, func(a, b Overlap) int { return a.Second.Start.Compare(b.Second.Start) })

	for object, gen := range want {
		if got, ok := reconciled[object]; !ok || got < gen {
			r.Missing = append(r.Missing, object)
		}
	}
	slices.Sort(r.Missing)
	return r
}

// overlaps sweeps the reconciles of one slot in order of their start,
// keeping those still running.
func overlaps(entries []Entry) []Overlap {
	slices.SortStableFunc(entries, func(a, b Entry) int { return a.Start.Compare(b.Start) })
	var found []Overlap
	var running []Entry
	for _, e := range entries {
		running = slices.DeleteFunc(running, func(a Entry) bool { return !a.End.After(e.Start) })
		for _, a := range running {
			if a.Member != e.Member {
				found = append(found, Overlap{First: a, Second: e})
			}
		}
		running = append(running, e)
	}
	return found
}
