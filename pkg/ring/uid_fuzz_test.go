package ring

import (
	"slices"
	"strings"
	"testing"
)

// FuzzShardSelector builds the shardSelector of any set of slots, in range
// or not: it selects every served slot's hash range and nothing else, in one
// shardRange per run of consecutive slots with 16-digit hex bounds.
func FuzzShardSelector(f *testing.F) {
	f.Add([]byte{0, 1, 2, 200, 255}, uint16(256))
	f.Add([]byte{}, uint16(1024))
	f.Add([]byte{7, 7, 7}, uint16(8))
	f.Fuzz(func(t *testing.T, raw []byte, n uint16) {
		slots := int(n%4096) + 1
		var served []int
		for i, b := range raw {
			// Mostly in range, sometimes past the end or negative.
			served = append(served, int(b)*slots/200-i%3)
		}
		sel := ShardSelector(served, slots)
		var valid []int
		for _, s := range served {
			if s >= 0 && s < slots {
				valid = append(valid, s)
			}
		}
		if len(valid) == 0 {
			if sel != "" {
				t.Fatalf("ShardSelector(%v, %d) = %q, want \"\" for no slot in range", served, slots, sel)
			}
			return
		}
		slices.Sort(valid)
		valid = slices.Compact(valid)
		runs := 1
		for i := 1; i < len(valid); i++ {
			if valid[i] != valid[i-1]+1 {
				runs++
			}
		}
		terms := strings.Split(sel, " || ")
		if len(terms) != runs {
			t.Fatalf("ShardSelector(%v, %d) has %d terms, want one per run of slots (%d): %q", served, slots, len(terms), runs, sel)
		}
		for _, term := range terms {
			lo, hi, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(term, "shardRange("+SelectorField+", '"), "')"), "', '")
			// The last slot's range ends at 2^64, the one bound with 17 digits.
			if !ok || len(lo) != 18 || (len(hi) != 18 && hi != hashEnd) || !strings.HasPrefix(lo, "0x") || !strings.HasPrefix(hi, "0x") || lo >= hi && hi != hashEnd {
				t.Fatalf("term %q of ShardSelector(%v, %d) is not shardRange(uid, '0x<16 hex>', '0x<16 hex>') with lo < hi", term, served, slots)
			}
		}
	})
}
