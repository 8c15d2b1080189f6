package journal_test

import (
	"fmt"
	"time"

	"github.com/kubeshard/kubeshard/internal/journal"
)

// Two members' journals, merged: op-1 started on slot 7 before op-0 had
// finished there, and nobody reconciled generation 2 of ns/b.
func ExampleCheck() {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	entries := []journal.Entry{
		{Object: "ns/a", Slot: 7, Member: "op-0", Generation: 1, Start: ms(0), End: ms(40), Result: journal.ResultOK},
		{Object: "ns/b", Slot: 7, Member: "op-1", Generation: 1, Start: ms(30), End: ms(50), Result: journal.ResultOK},
		{Object: "ns/b", Slot: 7, Member: "op-1", Generation: 2, Start: ms(60), End: ms(70), Result: journal.ResultError},
	}
	r := journal.Check(entries, map[string]int64{"ns/a": 1, "ns/b": 2})
	fmt.Println(r)
	fmt.Println(r.Overlaps[0])
	fmt.Println(r.Missing)
	// Output:
	// entries=3 overlaps=1 missing=1 members=op-0:1,op-1:2
	// slot 7: op-0 reconciled ns/a from 12:00:00.000000 to 12:00:00.040000 while op-1 reconciled ns/b from 12:00:00.030000 to 12:00:00.050000
	// [ns/b]
}
