package ring_test

import (
	"fmt"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// The slot of an object is fixed by its namespace and name, so it can be
// written once into a label and never changes.
func ExampleSlot() {
	fmt.Println(ring.Slot("default", "my-object", ring.DefaultSlots))
	fmt.Println(ring.Slot("", "cluster-scoped-thing", ring.DefaultSlots))
	// Output:
	// 270
	// 851
}

// Scaling a StatefulSet from 3 to 4 replicas: only the new pod gains slots and
// every other pod keeps the rest of what it had.
func ExampleAssign() {
	opts := ring.Options{Slots: 16}
	before, err := ring.Assign(nil, []string{"op-0", "op-1", "op-2"}, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	after, err := ring.Assign(before, []string{"op-0", "op-1", "op-2", "op-3"}, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range []string{"op-0", "op-1", "op-2", "op-3"} {
		fmt.Printf("%s serves %s\n", m, ring.FormatRanges(after.SlotsOf(m)))
	}
	for _, move := range ring.Diff(before, after) {
		fmt.Printf("slot %d: %s -> %s\n", move.Slot, move.From, move.To)
	}
	// Output:
	// op-0 serves 3,5,14-15
	// op-1 serves 0-1,4,6
	// op-2 serves 2,7,10-11
	// op-3 serves 8-9,12-13
	// slot 8: op-1 -> op-3
	// slot 9: op-1 -> op-3
	// slot 12: op-0 -> op-3
	// slot 13: op-2 -> op-3
}

func ExampleParseRanges() {
	slots, err := ring.ParseRanges("0-3,8,10-11", ring.DefaultSlots)
	fmt.Println(slots, err)
	_, err = ring.ParseRanges("0-3,9-8", ring.DefaultSlots)
	fmt.Println(err)
	// Output:
	// [0 1 2 3 8 10 11] <nil>
	// malformed slot ranges: item 2 "9-8": range is reversed
}
