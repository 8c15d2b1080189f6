package ring

import (
	"hash/fnv"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// UIDHash is the 64-bit FNV-1a hash of uid: the value the API server's
// shardSelector (KEP-5866) compares with the bounds of shardRange.
func UIDHash(uid string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(uid)) // hash writes never fail
	return h.Sum64()
}

// UIDSlot returns the slot of an object with this uid in a ring of the given
// number of slots, in selectorMode ShardSelector: slot i holds the hashes of
// the i-th of slots contiguous, equal ranges of the 64-bit hash space
// (HashRange). It returns -1 when slots < 1 or uid is empty: an object
// without a uid has not been created yet and has no slot.
func UIDSlot(uid string, slots int) int {
	if slots < 1 || uid == "" {
		return -1
	}
	return HashSlot(UIDHash(uid), slots)
}

// HashSlot returns the slot whose range holds hash h: floor(h * slots / 2^64).
func HashSlot(h uint64, slots int) int {
	hi, _ := bits.Mul64(h, uint64(slots))
	return int(hi)
}

// HashRange returns the half-open range [lo, hi) of hashes in slot s of a
// ring of the given number of slots. lo is ceil(s * 2^64 / slots), so that
// HashSlot(h) == s exactly for lo <= h < hi; hi of the last slot is 2^64,
// which does not fit in a uint64 and is returned as end == true with hi 0.
func HashRange(s, slots int) (lo, hi uint64, end bool) {
	lo = rangeStart(s, slots)
	if s+1 >= slots {
		return lo, 0, true
	}
	return lo, rangeStart(s+1, slots), false
}

// rangeStart is ceil(s * 2^64 / slots) for 0 <= s < slots.
func rangeStart(s, slots int) uint64 {
	q, r := bits.Div64(uint64(s), 0, uint64(slots))
	if r != 0 {
		q++
	}
	return q
}

// hashEnd is the exclusive upper bound of the hash space, 2^64, as the API
// server spells it: the only bound with 17 hex digits.
const hashEnd = "0x10000000000000000"

// formatHash writes a bound as the API server requires: "0x" and exactly 16
// lower-case hex digits ("0x0" is refused).
func formatHash(h uint64) string {
	s := strconv.FormatUint(h, 16)
	return "0x" + strings.Repeat("0", 16-len(s)) + s
}

// SelectorField is the object field a ShardSelector hashes.
const SelectorField = "object.metadata.uid"

// ShardSelector returns the shardSelector (KEP-5866) that selects exactly
// the objects of the given slots in a ring of the given number of slots:
// the OR of one shardRange(object.metadata.uid, 'lo', 'hi') per run of
// consecutive slots, in slot order, such as
//
//	shardRange(object.metadata.uid, '0x0000000000000000', '0x0400000000000000') || shardRange(...)
//
// Slots outside [0, slots) and duplicates are ignored. It returns "" when no
// slot is left: an empty shardSelector selects everything, so the caller
// must not send it as if it selected nothing.
func ShardSelector(served []int, slots int) string {
	sorted := slices.Clone(served)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var b strings.Builder
	for i := 0; i < len(sorted); {
		if sorted[i] < 0 || sorted[i] >= slots {
			i++
			continue
		}
		j := i
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 && sorted[j+1] < slots {
			j++
		}
		lo, _, _ := HashRange(sorted[i], slots)
		_, hi, end := HashRange(sorted[j], slots)
		if b.Len() > 0 {
			b.WriteString(" || ")
		}
		b.WriteString("shardRange(" + SelectorField + ", '" + formatHash(lo) + "', '")
		if end {
			b.WriteString(hashEnd)
		} else {
			b.WriteString(formatHash(hi))
		}
		b.WriteString("')")
		i = j + 1
	}
	return b.String()
}
