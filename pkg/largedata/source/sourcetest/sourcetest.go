// Package sourcetest holds the conformance tests that every source.Source
// passes: Redis against a real redis-server, Memory in its unit tests.
package sourcetest

import (
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kubeshard/kubeshard/pkg/largedata/source"
)

// Add appends an entry with fields to a stream and returns its ID.
type Add func(t *testing.T, stream string, fields map[string]string) string

// Run runs the conformance tests on src; add produces entries. The tests
// use streams of their own.
func Run(t *testing.T, src source.Source, add Add) {
	tests := []struct {
		name string
		fn   func(t *testing.T, src source.Source, add Add)
	}{
		{"ReadCreatesTheGroupAtTheFirstEntry", testReadFromFirst},
		{"UnacknowledgedEntriesGoToTheNextReader", testRedelivery},
		{"ReadsAreBoundedAndReportLag", testLimitAndLag},
		{"ForgetStartsTheGroupOver", testForget},
		{"GroupsAreIndependent", testGroups},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, src, add) })
	}
}

func newStream() source.Stream {
	return source.Stream{Name: "sourcetest." + rand.Text(), Group: "dataset"}
}

func produce(t *testing.T, add Add, s source.Stream, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = add(t, s.Name, map[string]string{"payload": fmt.Sprintf("entry-%d", i)})
	}
	return ids
}

func read(t *testing.T, src source.Source, s source.Stream, consumer string, limit int) source.Batch {
	t.Helper()
	b, err := src.Read(t.Context(), s, consumer, limit)
	if err != nil {
		t.Fatalf("Read %s as %s: %v", s, consumer, err)
	}
	return b
}

func ids(b source.Batch) []string {
	out := make([]string, len(b.Messages))
	for i, m := range b.Messages {
		out[i] = m.ID
	}
	return out
}

func ack(t *testing.T, src source.Source, s source.Stream, ids []string) {
	t.Helper()
	if err := src.Ack(t.Context(), s, ids); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func testReadFromFirst(t *testing.T, src source.Source, add Add) {
	s := newStream()
	if b := read(t, src, s, "m0", 10); len(b.Messages) != 0 || b.More {
		t.Fatalf("a stream with no entry: %+v, want none", b)
	}
	want := produce(t, add, s, 5)
	b := read(t, src, s, "m0", 10)
	if got := ids(b); !slices.Equal(got, want) {
		t.Fatalf("read %v, want the 5 entries %v in order", got, want)
	}
	if b.More || b.Lag != 0 {
		t.Errorf("more %v lag %d after reading everything, want false and 0", b.More, b.Lag)
	}
	m := b.Messages[3]
	if m.Fields["payload"] != "entry-3" {
		t.Errorf("fields %v, want payload entry-3", m.Fields)
	}
	if d := time.Since(m.Produced); d < -time.Minute || d > time.Minute {
		t.Errorf("entry produced at %v, want about now", m.Produced)
	}
}

func testRedelivery(t *testing.T, src source.Source, add Add) {
	s := newStream()
	first := produce(t, add, s, 5)
	read(t, src, s, "m0", 5)
	ack(t, src, s, first[:2])
	// m0 stops with three entries unacknowledged; m1 takes over.
	later := produce(t, add, s, 2)
	b := read(t, src, s, "m1", 10)
	if got, want := ids(b), append(slices.Clone(first[2:]), later...); !slices.Equal(got, want) {
		t.Fatalf("the next reader got %v, want the 3 unacknowledged %v first, then the 2 new", got, want)
	}
	// Not acknowledged yet: a reader gets them again, and nothing else.
	if got, want := ids(read(t, src, s, "m1", 10)), ids(b); !slices.Equal(got, want) {
		t.Fatalf("read again before the acknowledgement: %v, want %v", got, want)
	}
	ack(t, src, s, ids(b))
	if b := read(t, src, s, "m1", 10); len(b.Messages) != 0 {
		t.Fatalf("after every entry was acknowledged a read returned %v", ids(b))
	}
}

func testLimitAndLag(t *testing.T, src source.Source, add Add) {
	s := newStream()
	all := produce(t, add, s, 25)
	var got []string
	for i, want := range []struct {
		n    int
		more bool
		lag  int64
	}{{10, true, 15}, {10, true, 5}, {5, false, 0}} {
		b := read(t, src, s, "m0", 10)
		if len(b.Messages) != want.n || b.More != want.more || b.Lag != want.lag {
			t.Fatalf("read %d: %d entries, more %v, lag %d; want %d, %v, %d", i, len(b.Messages), b.More, b.Lag, want.n, want.more, want.lag)
		}
		got = append(got, ids(b)...)
		ack(t, src, s, ids(b))
	}
	if !slices.Equal(got, all) {
		t.Fatalf("three bounded reads returned %d entries, want the 25 in order", len(got))
	}
	if _, err := src.Read(t.Context(), s, "m0", 0); err == nil {
		t.Error("a read of 0 entries succeeded, want an error")
	}
}

func testForget(t *testing.T, src source.Source, add Add) {
	s := newStream()
	all := produce(t, add, s, 3)
	ack(t, src, s, ids(read(t, src, s, "m0", 10)))
	if err := src.Forget(t.Context(), s); err != nil {
		t.Fatalf("Forget: %v", err)
	}
	if err := src.Forget(t.Context(), s); err != nil {
		t.Fatalf("Forget of a group that is gone: %v", err)
	}
	if err := src.Forget(t.Context(), newStream()); err != nil {
		t.Fatalf("Forget of a stream that never existed: %v", err)
	}
	if got := ids(read(t, src, s, "m0", 10)); !slices.Equal(got, all) {
		t.Fatalf("a group created again read %v, want every entry %v", got, all)
	}
}

func testGroups(t *testing.T, src source.Source, add Add) {
	a := newStream()
	b := source.Stream{Name: a.Name, Group: "other"}
	all := produce(t, add, a, 4)
	ack(t, src, a, ids(read(t, src, a, "m0", 10)))
	if got := ids(read(t, src, b, "m0", 10)); !slices.Equal(got, all) {
		t.Fatalf("a second group read %v, want every entry %v", got, all)
	}
}
