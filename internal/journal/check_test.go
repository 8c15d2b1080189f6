package journal

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// at returns an entry of object in slot by member from t0+from to t0+to
// (milliseconds), ended ok, for generation 1.
func at(member, object string, slot, from, to int) Entry {
	return Entry{
		Object: object, Slot: slot, Member: member, Generation: 1, Result: ResultOK,
		Start: t0.Add(time.Duration(from) * time.Millisecond), End: t0.Add(time.Duration(to) * time.Millisecond),
	}
}

func with(e Entry, f func(*Entry)) Entry { f(&e); return e }

func TestCheckOverlaps(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    [][2]string // members of each overlap, first then second
	}{{
		name: "a handover: the new owner starts after the old one ended",
		entries: []Entry{
			at("op-0", "ns/a", 7, 0, 10), at("op-0", "ns/b", 7, 5, 20), at("op-1", "ns/a", 7, 25, 30),
		},
	}, {
		name:    "the new owner starts at the very instant the old one ends",
		entries: []Entry{at("op-0", "ns/a", 7, 0, 10), at("op-1", "ns/a", 7, 10, 20)},
	}, {
		name:    "two members in one slot at once, on different objects",
		entries: []Entry{at("op-0", "ns/a", 7, 0, 10), at("op-1", "ns/b", 7, 9, 20)},
		want:    [][2]string{{"op-0", "op-1"}},
	}, {
		name:    "a long reconcile spans the other member's",
		entries: []Entry{at("op-1", "ns/b", 7, 5, 6), at("op-0", "ns/a", 7, 0, 100)},
		want:    [][2]string{{"op-0", "op-1"}},
	}, {
		name:    "one member runs several reconciles of a slot at once",
		entries: []Entry{at("op-0", "ns/a", 7, 0, 10), at("op-0", "ns/b", 7, 1, 10), at("op-0", "ns/c", 7, 2, 10)},
	}, {
		name:    "two members at once in different slots",
		entries: []Entry{at("op-0", "ns/a", 7, 0, 10), at("op-1", "ns/b", 8, 0, 10)},
	}, {
		name: "failed and dropped reconciles count: they ran",
		entries: []Entry{
			with(at("op-0", "ns/a", 7, 0, 10), func(e *Entry) { e.Result = ResultDropped }),
			with(at("op-1", "ns/a", 7, 5, 15), func(e *Entry) { e.Result = ResultError }),
		},
		want: [][2]string{{"op-0", "op-1"}},
	}, {
		name: "every pair is reported, in the order the second started",
		entries: []Entry{
			at("op-0", "ns/a", 7, 0, 100), at("op-1", "ns/b", 7, 10, 20), at("op-2", "ns/c", 7, 15, 30),
			at("op-2", "ns/d", 3, 0, 10), at("op-0", "ns/e", 3, 5, 10),
		},
		want: [][2]string{{"op-2", "op-0"}, {"op-0", "op-1"}, {"op-0", "op-2"}, {"op-1", "op-2"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Check(tt.entries, nil)
			var got [][2]string
			for _, o := range r.Overlaps {
				if o.First.Slot != o.Second.Slot {
					t.Errorf("overlap across slots: %s", o)
				}
				got = append(got, [2]string{o.First.Member, o.Second.Member})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("overlaps = %v, want %v\n%v", got, tt.want, r.Overlaps)
			}
			if r.OK() != (len(tt.want) == 0) {
				t.Errorf("OK() = %v with %d overlaps", r.OK(), len(tt.want))
			}
		})
	}
}

func TestCheckMissing(t *testing.T) {
	gen := func(e Entry, g int64, res Result) Entry {
		e.Generation, e.Result = g, res
		return e
	}
	entries := []Entry{
		gen(at("op-0", "ns/done", 1, 0, 1), 3, ResultOK),
		gen(at("op-0", "ns/later", 2, 0, 1), 5, ResultOK),
		gen(at("op-0", "ns/old", 3, 0, 1), 1, ResultOK),
		gen(at("op-1", "ns/old", 3, 2, 3), 2, ResultError),
		gen(at("op-1", "ns/cancelled", 4, 0, 1), 1, ResultDropped),
		gen(at("op-1", "ns/unknown", 5, 0, 1), 0, ResultOK),
	}
	want := map[string]int64{
		"ns/done":      3, // reconciled ok at its final generation
		"ns/later":     4, // reconciled ok at a later one
		"ns/old":       2, // only an older generation ended ok
		"ns/cancelled": 1, // its only reconcile was dropped
		"ns/unknown":   1, // reconciled, but the generation could not be read
		"ns/never":     1, // no reconcile at all
	}
	r := Check(entries, want)
	if got, wantMissing := r.Missing, []string{"ns/cancelled", "ns/never", "ns/old", "ns/unknown"}; !slices.Equal(got, wantMissing) {
		t.Errorf("Missing = %v, want %v", got, wantMissing)
	}
	if r.OK() {
		t.Error("OK() with objects missing")
	}
	if got := Check(entries, map[string]int64{"ns/done": 3}); !got.OK() {
		t.Errorf("Check of a reconciled object: %s", got)
	}
}

func TestCheckCounts(t *testing.T) {
	entries := []Entry{
		at("op-0", "ns/a", 1, 0, 1),
		with(at("op-0", "ns/a", 1, 2, 3), func(e *Entry) { e.Result = ResultError }),
		at("op-1", "ns/b", 2, 0, 1),
		with(at("op-1", "ns/b", 2, 2, 3), func(e *Entry) { e.Result = ResultDropped }),
		at("op-1", "ns/b", 2, 4, 5),
	}
	r := Check(entries, nil)
	if want := (Counts{OK: 1, Error: 1}); r.Members["op-0"] != want {
		t.Errorf("op-0: %+v, want %+v", r.Members["op-0"], want)
	}
	if want := (Counts{OK: 2, Dropped: 1}); r.Members["op-1"] != want {
		t.Errorf("op-1: %+v, want %+v", r.Members["op-1"], want)
	}
	if got, want := r.String(), "entries=5 overlaps=0 missing=0 members=op-0:2,op-1:3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
