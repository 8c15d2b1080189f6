package ring

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// testKeys returns namespace/name pairs like those of a real cluster, plus
// cluster-scoped names and keys long enough to skip Slot's stack buffer.
func testKeys(n int) [][2]string {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := [][2]string{
		{"", "cluster-scoped"},
		{"default", ""},
		{"", ""},
		{"ns", "op-1"},
		{"ns", "op-11"},
		{"kube-system", "ünïcødé-名前"},
		{strings.Repeat("n", 63), strings.Repeat("x", 253)},
		{strings.Repeat("n", 63), strings.Repeat("x", 64)}, // exactly keyBufSize bytes
		{strings.Repeat("n", 63), strings.Repeat("x", 65)}, // one byte more
	}
	for len(keys) < n {
		ns := ""
		if rng.IntN(5) > 0 {
			ns = fmt.Sprintf("team-%d", rng.IntN(300))
		}
		name := fmt.Sprintf("widget-%x", rng.Uint64())
		if rng.IntN(10) == 0 {
			name = strings.Repeat(name, 1+rng.IntN(12))
		}
		keys = append(keys, [2]string{ns, name})
	}
	return keys
}

func TestSlotIsTheConsistentPartitionOfTheKey(t *testing.T) {
	keys := testKeys(20000)
	for _, slots := range []int{1, 7, 271, DefaultSlots, 4096, 16411} {
		c := consistent.New(nil, consistent.Config{PartitionCount: slots, Hasher: Hasher{}, ReplicationFactor: 1, Load: 1.25})
		for _, k := range keys {
			key := k[1]
			if k[0] != "" {
				key = k[0] + "/" + k[1]
			}
			if got, want := Slot(k[0], k[1], slots), c.FindPartitionID([]byte(key)); got != want {
				t.Fatalf("Slot(%q, %q, %d) = %d, consistent.FindPartitionID(%q) = %d", k[0], k[1], slots, got, key, want)
			}
		}
	}
}

// A slot label is written once and never rewritten, so a change of hash would
// silently strand every existing object in a slot nobody watches. The values were
// checked against an independent XXH64 implementation.
func TestSlotOfAKnownObjectNeverChanges(t *testing.T) {
	for _, tc := range []struct {
		namespace, name string
		want            int
	}{
		{"default", "my-object", 270},
		{"team-payments", "widget-0001", 786},
		{"", "cluster-scoped-thing", 851},
		{"ns", "op-1", 820},
		{"ns", "op-11", 682},
	} {
		if got := Slot(tc.namespace, tc.name, DefaultSlots); got != tc.want {
			t.Errorf("Slot(%q, %q) = %d, want %d: existing slot labels would no longer match", tc.namespace, tc.name, got, tc.want)
		}
	}
}

func TestClusterScopedObjectsHashTheirNameOnly(t *testing.T) {
	if Slot("", "a/b", DefaultSlots) != Slot("a", "b", DefaultSlots) {
		t.Error(`cluster-scoped "a/b" and namespaced a/b differ: the key of a namespaced object is not namespace + "/" + name`)
	}
	c := consistent.New(nil, consistent.Config{PartitionCount: DefaultSlots, Hasher: Hasher{}})
	if got, want := Slot("", "node-1", DefaultSlots), c.FindPartitionID([]byte("node-1")); got != want {
		t.Errorf("Slot of cluster-scoped node-1 = %d, want %d (the hash of the bare name)", got, want)
	}
}

func TestSlotWithoutSlotsIsNeverAValidSlot(t *testing.T) {
	for _, slots := range []int{0, -1, -1024} {
		if got := Slot("ns", "name", slots); got != -1 {
			t.Errorf("Slot(ns, name, %d) = %d, want -1", slots, got)
		}
	}
}

func TestSlotDoesNotAllocate(t *testing.T) {
	for _, k := range testKeys(20)[:9] {
		if allocs := testing.AllocsPerRun(100, func() { Slot(k[0], k[1], DefaultSlots) }); allocs != 0 {
			t.Errorf("Slot(%q, %q) allocates %v times per call", k[0], k[1], allocs)
		}
	}
}

var slotSink uint64

func BenchmarkSlot(b *testing.B) {
	long := strings.Repeat("x", 100)
	for _, bc := range []struct{ name, namespace, object string }{
		{"namespaced", "team-payments", "widget-0000123456789"},
		{"cluster-scoped", "", "widget-0000123456789"},
		{"long key", "team-payments", long},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				slotSink += uint64(Slot(bc.namespace, bc.object, DefaultSlots))
			}
		})
	}
	// The floor: hashing a key that is already one string. Slot's overhead over it
	// is the price of not allocating that string.
	b.Run("baseline xxhash of a prebuilt key", func(b *testing.B) {
		key := "team-payments/widget-0000123456789"
		b.ReportAllocs()
		for b.Loop() {
			slotSink += xxhash.Sum64String(key) % DefaultSlots
		}
	})
}
