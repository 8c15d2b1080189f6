package ring_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apisharding "k8s.io/apimachinery/pkg/sharding"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// The API server hashes with apimachinery's HashField; a member that hashed
// differently would think it serves objects the server never sends it.
func TestUIDHashMatchesTheAPIServer(t *testing.T) {
	for _, uid := range []string{"", "a", "0b4f6f0e-3f44-4a43-9a0f-1b2a3c4d5e6f", strings.Repeat("x", 300)} {
		if got, want := fmt.Sprintf("%016x", ring.UIDHash(uid)), apisharding.HashField(uid); got != want {
			t.Errorf("UIDHash(%q) = %s, the API server computes %s", uid, got, want)
		}
	}
}

// The ranges of all slots tile the hash space: each starts where the previous
// ended, the first at 0 and the last at 2^64, and HashSlot agrees with them at
// both edges of every range.
func TestHashRangesCoverTheSpaceExactly(t *testing.T) {
	for _, slots := range []int{1, 2, 3, 7, 1000, 1024, 16384} {
		var next uint64
		for s := range slots {
			lo, hi, end := ring.HashRange(s, slots)
			if lo != next {
				t.Fatalf("slots=%d: slot %d starts at %#x, want %#x (gap or overlap)", slots, s, lo, next)
			}
			if end != (s == slots-1) {
				t.Fatalf("slots=%d: slot %d end=%v", slots, s, end)
			}
			if got := ring.HashSlot(lo, slots); got != s {
				t.Fatalf("slots=%d: HashSlot(%#x), the start of slot %d, = %d", slots, lo, s, got)
			}
			last := hi - 1
			if end {
				last = math.MaxUint64
			}
			if got := ring.HashSlot(last, slots); got != s {
				t.Fatalf("slots=%d: HashSlot(%#x), the end of slot %d, = %d", slots, last, s, got)
			}
			next = hi
		}
	}
}

func TestUIDSlot(t *testing.T) {
	if got := ring.UIDSlot("", 1024); got != -1 {
		t.Errorf("UIDSlot of an empty uid = %d, want -1", got)
	}
	if got := ring.UIDSlot("abc", 0); got != -1 {
		t.Errorf("UIDSlot with 0 slots = %d, want -1", got)
	}
	// Spread: 10,000 random version 4 uids, as the API server makes them,
	// over 16 slots, each slot within 20% of the mean. (Sequential strings
	// would not do: FNV-1a's high bits barely change with the last bytes.)
	rnd := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, 16)
	for range 10000 {
		uid := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rnd.Uint32(), rnd.Uint32()&0xffff,
			rnd.Uint32()&0xfff, rnd.Uint32()&0xfff, rnd.Uint64()&0xffffffffffff)
		counts[ring.UIDSlot(uid, 16)]++
	}
	for s, n := range counts {
		if n < 500 || n > 750 {
			t.Errorf("slot %d holds %d of 10000 uids, want about 625", s, n)
		}
	}
}

var rangeRE = regexp.MustCompile(`^shardRange\(object\.metadata\.uid, '(0x[0-9a-f]{16}|0x10000000000000000)', '(0x[0-9a-f]{16}|0x10000000000000000)'\)$`)

// parseSelector reads ShardSelector's output with the API server's rules for
// bounds (0x and 16 lower-case hex digits, or 2^64 spelled with 17) and
// returns apimachinery's selector for it.
func parseSelector(t *testing.T, sel string) apisharding.Selector {
	t.Helper()
	var reqs []apisharding.ShardRangeRequirement
	for part := range strings.SplitSeq(sel, " || ") {
		m := rangeRE.FindStringSubmatch(part)
		if m == nil {
			t.Fatalf("%q is not in the API server's shardRange syntax", part)
		}
		if !apisharding.HexLess(m[1], m[2]) {
			t.Fatalf("%q: start is not below end", part)
		}
		reqs = append(reqs, apisharding.ShardRangeRequirement{Key: ring.SelectorField, Start: m[1], End: m[2]})
	}
	return apisharding.NewSelector(reqs...)
}

func TestShardSelector(t *testing.T) {
	tests := []struct {
		name   string
		served []int
		slots  int
		want   string
	}{
		{"none", nil, 4, ""},
		{"out of range only", []int{-1, 4}, 4, ""},
		{"everything", []int{0, 1, 2, 3}, 4,
			"shardRange(object.metadata.uid, '0x0000000000000000', '0x10000000000000000')"},
		{"adjacent slots merge, in any order, duplicates ignored", []int{2, 1, 1}, 4,
			"shardRange(object.metadata.uid, '0x4000000000000000', '0xc000000000000000')"},
		{"two runs", []int{0, 3}, 4,
			"shardRange(object.metadata.uid, '0x0000000000000000', '0x4000000000000000') || " +
				"shardRange(object.metadata.uid, '0xc000000000000000', '0x10000000000000000')"},
		{"uneven slots round starts up", []int{1}, 3,
			"shardRange(object.metadata.uid, '0x5555555555555556', '0xaaaaaaaaaaaaaaab')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ring.ShardSelector(tt.served, tt.slots); got != tt.want {
				t.Errorf("ShardSelector(%v, %d) =\n  %s\nwant\n  %s", tt.served, tt.slots, got, tt.want)
			}
		})
	}
}

// What the API server selects with a member's selector is exactly the objects
// whose UIDSlot the member serves.
func TestShardSelectorSelectsExactlyTheSlots(t *testing.T) {
	const slots = 1024
	served := []int{0, 1, 2, 17, 500, 501, 1023}
	sel := parseSelector(t, ring.ShardSelector(served, slots))
	isServed := map[int]bool{}
	for _, s := range served {
		isServed[s] = true
	}
	for i := range 20000 {
		uid := "uid-" + strconv.Itoa(i)
		obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid)}}
		got, err := sel.Matches(obj)
		if err != nil {
			t.Fatal(err)
		}
		if want := isServed[ring.UIDSlot(uid, slots)]; got != want {
			t.Fatalf("uid %q (slot %d): the server would select it: %v, the member serves it: %v",
				uid, ring.UIDSlot(uid, slots), got, want)
		}
	}
}
