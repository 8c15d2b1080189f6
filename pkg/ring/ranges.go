package ring

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrMalformedRanges is wrapped by every error of ParseRanges.
var ErrMalformedRanges = errors.New("malformed slot ranges")

// FormatRanges writes slots as a compact, canonical range list such as
// "0-17,40-63,99": sorted, without duplicates, consecutive slots merged. Range
// lists are what members and the coordinator put in annotations and status, where
// 1024 slots written one by one would take several kilobytes.
//
// Negative values are dropped: they are never slots, and "-1" would read back as
// half a range.
func FormatRanges(slots []int) string {
	sorted := slices.Clone(slots)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	start, _ := slices.BinarySearch(sorted, 0)
	sorted = sorted[start:]

	var b []byte
	for i := 0; i < len(sorted); {
		j := i
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 {
			j++
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(sorted[i]), 10)
		if j > i {
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(sorted[j]), 10)
		}
		i = j + 1
	}
	return string(b)
}

// ParseRanges reads a range list written by FormatRanges and returns its slots,
// sorted and without duplicates. Every value must be a slot of a ring with the
// given number of slots. "" is the empty list. Spaces around items, items out of
// order and overlapping items are accepted, because a person may have written the
// list; anything else that is not a list of "n" or "lo-hi" items is an error,
// since guessing what a damaged list meant could hand a slot to two members.
func ParseRanges(s string, slots int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	type span struct{ lo, hi int }
	var spans []span
	pos := 0
	for item := range strings.SplitSeq(s, ",") {
		pos++
		item = strings.TrimSpace(item)
		loText, hiText, isRange := strings.Cut(item, "-")
		lo, err := parseSlot(loText, slots)
		if err != nil {
			return nil, fmt.Errorf("%w: item %d %q: %w", ErrMalformedRanges, pos, item, err)
		}
		hi := lo
		if isRange {
			if hi, err = parseSlot(hiText, slots); err != nil {
				return nil, fmt.Errorf("%w: item %d %q: %w", ErrMalformedRanges, pos, item, err)
			}
			if hi < lo {
				return nil, fmt.Errorf("%w: item %d %q: range is reversed", ErrMalformedRanges, pos, item)
			}
		}
		spans = append(spans, span{lo, hi})
	}

	// Sorting and merging the spans before expanding them bounds the result by
	// the number of slots, however many times a list repeats itself.
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	var out []int
	next := 0 // the lowest slot not yet in out
	for _, sp := range spans {
		for v := max(sp.lo, next); v <= sp.hi; v++ {
			out = append(out, v)
		}
		next = max(next, sp.hi+1)
	}
	return out, nil
}

// parseSlot accepts only decimal digits: strconv.Atoi alone would also take a
// sign, and "+5" or "-5" are not slots.
func parseSlot(text string, slots int) (int, error) {
	if text == "" {
		return 0, errors.New("missing number")
	}
	for _, c := range []byte(text) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a slot number", text)
		}
	}
	v, err := strconv.Atoi(text)
	if err != nil || v >= slots {
		return 0, fmt.Errorf("slot %s is out of range [0, %d)", text, slots)
	}
	return v, nil
}
