package ring

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestFormatRangesWritesTheCompactCanonicalList(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots []int
		want  string
	}{
		{"nothing", nil, ""},
		{"one slot", []int{99}, "99"},
		{"runs and a single", []int{0, 1, 2, 3, 40, 41, 42, 99}, "0-3,40-42,99"},
		{"two neighbours", []int{5, 6}, "5-6"},
		{"unsorted with duplicates", []int{42, 40, 41, 41, 3, 0, 2, 1, 99, 40}, "0-3,40-42,99"},
		{"negative values are not slots", []int{-3, -1, 0, 1}, "0-1"},
		{"whole default ring", seq(0, DefaultSlots-1), "0-1023"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FormatRanges(tc.slots); got != tc.want {
				t.Errorf("FormatRanges(%v) = %q, want %q", tc.slots, got, tc.want)
			}
		})
	}
}

func TestFormatRangesLeavesItsInputAlone(t *testing.T) {
	in := []int{3, 1, 2}
	FormatRanges(in)
	if !slices.Equal(in, []int{3, 1, 2}) {
		t.Errorf("FormatRanges reordered its argument to %v", in)
	}
}

func TestParseRangesReadsWhatPeopleAndMembersWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []int
	}{
		{"empty", "", nil},
		{"blank", "  ", nil},
		{"single", "7", []int{7}},
		{"canonical", "0-3,40-42,99", []int{0, 1, 2, 3, 40, 41, 42, 99}},
		{"one-slot range", "5-5", []int{5}},
		{"spaces around items", " 0-1 , 5 ", []int{0, 1, 5}},
		{"out of order and overlapping", "40-42,0-3,2-5,41", []int{0, 1, 2, 3, 4, 5, 40, 41, 42}},
		{"last slot", "1023", []int{1023}},
		{"leading zeros", "007", []int{7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRanges(tc.in, DefaultSlots)
			if err != nil {
				t.Fatalf("ParseRanges(%q): %v", tc.in, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ParseRanges(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseRangesRejectsDamagedLists(t *testing.T) {
	for _, tc := range []struct {
		name, in, wantText string
	}{
		{"trailing comma", "1,2,", `item 3 "": missing number`},
		{"empty item", "1,,2", `item 2 "": missing number`},
		{"open range", "3-", `item 1 "3-": missing number`},
		{"range without start", "-3", `item 1 "-3": missing number`},
		{"reversed range", "0,9-3", `item 2 "9-3": range is reversed`},
		{"out of range", "1024", "slot 1024 is out of range [0, 1024)"},
		{"range past the end", "1000-1024", "slot 1024 is out of range"},
		{"huge number", "99999999999999999999999", "out of range"},
		{"sign", "+5", "not a slot number"},
		{"three parts", "1-2-3", "not a slot number"},
		{"letters", "1,a", `item 2 "a": "a" is not a slot number`},
		{"space inside a number", "1 2", "not a slot number"},
		{"semicolon", "1;2", "not a slot number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRanges(tc.in, DefaultSlots)
			if !errors.Is(err, ErrMalformedRanges) {
				t.Fatalf("ParseRanges(%q) = %v, %v; want an ErrMalformedRanges error", tc.in, got, err)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("ParseRanges(%q) error %q should say %q", tc.in, err, tc.wantText)
			}
		})
	}
}

func TestRangeListsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for range 500 {
		slots := 1 + rng.IntN(2048)
		var set []int
		for s := range slots {
			if rng.IntN(4) == 0 {
				set = append(set, s)
			}
		}
		got, err := ParseRanges(FormatRanges(set), slots)
		if err != nil {
			t.Fatalf("ParseRanges(FormatRanges(%v)): %v", set, err)
		}
		if !slices.Equal(got, set) {
			t.Fatalf("round trip of %v gave %v", set, got)
		}
	}
}

// A list that repeats itself must not cost more than the ring has slots.
func TestParseRangesOutputIsBoundedByTheRing(t *testing.T) {
	in := strings.Repeat("0-1023,", 5000) + "0"
	got, err := ParseRanges(in, DefaultSlots)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != DefaultSlots {
		t.Errorf("got %d slots, want %d", len(got), DefaultSlots)
	}
}

func FuzzParseRanges(f *testing.F) {
	for _, seed := range []string{"", "0", "0-17,40-63,99", "1023", "5-5", "9-3", "1,,2", " 1 , 2-4", "+1", "1-2-3", "0-1024"} {
		f.Add(seed, uint16(DefaultSlots))
	}
	f.Fuzz(func(t *testing.T, in string, slots uint16) {
		n := int(slots)
		got, err := ParseRanges(in, n)
		if err != nil {
			if !errors.Is(err, ErrMalformedRanges) {
				t.Fatalf("ParseRanges(%q, %d) error %v does not wrap ErrMalformedRanges", in, n, err)
			}
			return
		}
		for i, s := range got {
			if s < 0 || s >= n || (i > 0 && s <= got[i-1]) {
				t.Fatalf("ParseRanges(%q, %d) = %v: not sorted unique slots of the ring", in, n, got)
			}
		}
		text := FormatRanges(got)
		again, err := ParseRanges(text, n)
		if err != nil {
			t.Fatalf("ParseRanges(%q) of FormatRanges output: %v", text, err)
		}
		if !slices.Equal(again, got) {
			t.Fatalf("%q -> %v -> %q -> %v", in, got, text, again)
		}
		if FormatRanges(again) != text {
			t.Fatalf("FormatRanges is not canonical for %v", got)
		}
	})
}

func seq(lo, hi int) []int {
	var out []int
	for v := lo; v <= hi; v++ {
		out = append(out, v)
	}
	return out
}
