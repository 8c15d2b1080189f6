package largedata_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// streamFixture is a fixture whose dataset reads a stream of an in-memory
// source stamped by the fixture's clock.
type streamFixture struct {
	*fixture
	src      *source.Memory
	stream   source.Stream
	recorder *events.FakeRecorder
}

func newStreamFixture(t *testing.T, items int64, opts largedata.Options) *streamFixture {
	t.Helper()
	ld := dataset(items, datav1alpha1.ProcessingChecksum)
	ld.Spec.PublishSummary = false
	ld.Spec.Source = &datav1alpha1.DataSource{RedisStream: &datav1alpha1.RedisStreamSource{}}
	sf := &streamFixture{recorder: events.NewFakeRecorder(100)}
	sf.src = source.NewMemory(func() time.Time { return sf.clock.Now() })
	opts.Source, opts.Consumer, opts.Recorder = sf.src, "member-1", sf.recorder
	sf.fixture = newFixture(t, ld, opts)
	sf.stream = largedata.StreamOf(ld)
	if sf.stream.Name != "team-a.dataset-1.data" {
		t.Fatalf("the default stream of team-a/dataset-1 is %q, want team-a.dataset-1.data", sf.stream.Name)
	}
	return sf
}

func (sf *streamFixture) produce(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = sf.src.Add(sf.stream.Name, map[string]string{"payload": fmt.Sprintf("entry-%d", i)})
	}
	return ids
}

func (sf *streamFixture) stored(t *testing.T) []store.Entry {
	t.Helper()
	es, err := sf.st.Entries(t.Context(), store.Key{UID: "uid-1"}, 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// metricValue reads one labelled sample from the fixture's registry.
type metricValue struct {
	f            *fixture
	name, result string
}

func (m *metricValue) value() float64 {
	mfs, err := m.f.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != m.name {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == m.result {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func TestStreamEntriesAreStoredOnceInBatchesAndAcknowledged(t *testing.T) {
	sf := newStreamFixture(t, 0, largedata.Options{})
	ids := sf.produce(1200)

	// batchSize 500: two full reads come back at once, the last waits for
	// the next poll.
	for i, want := range []time.Duration{time.Millisecond, time.Millisecond, time.Second} {
		res, err := sf.reconcile(t)
		if err != nil {
			t.Fatalf("reconcile %d: %v", i, err)
		}
		if res.RequeueAfter != want {
			t.Errorf("reconcile %d requeued after %v, want %v", i, res.RequeueAfter, want)
		}
	}
	got := sf.stored(t)
	if len(got) != 1200 || got[0].ID != ids[0] || got[1199].ID != ids[1199] || got[7].Payload != "entry-7" {
		t.Fatalf("the store holds %d entries, want the 1200 produced, in order", len(got))
	}
	if n := sf.src.Pending(sf.stream); n != 0 {
		t.Errorf("%d entries left unacknowledged", n)
	}
	if v := entriesMetricValue(sf.fixture, "ingested"); v != 1200 {
		t.Errorf("kubeshard_largedata_stream_entries_total{result=ingested} %v, want 1200", v)
	}

	// The status showed the first batch at once, and the rest waits for
	// StreamStatusInterval: a busy stream is not a stream of status writes.
	ld := sf.get(t)
	if st := ld.Status.Stream; st == nil || st.Ingested != 500 {
		t.Fatalf("status.stream %+v two seconds in, want the first batch's 500", st)
	}
	if ld.Status.Phase != datav1alpha1.PhaseReady {
		t.Errorf("phase %s, want Ready: the dataset has no records of spec.items to process", ld.Status.Phase)
	}
	sf.clock.Step(10 * time.Second)
	if _, err := sf.reconcile(t); err != nil {
		t.Fatal(err)
	}
	st := sf.get(t).Status.Stream
	if st == nil || st.Ingested != 1200 || st.LastEntryID != ids[1199] || st.Lag == nil || *st.Lag != 0 || st.UpdatedAt == nil {
		t.Fatalf("status.stream %+v after the interval, want 1200 ingested up to %s, lag 0", st, ids[1199])
	}
	// A quiet stream writes nothing more.
	rv := sf.get(t).ResourceVersion
	sf.clock.Step(time.Minute)
	if _, err := sf.reconcile(t); err != nil {
		t.Fatal(err)
	}
	if sf.get(t).ResourceVersion != rv {
		t.Error("a poll of a stream with nothing new wrote the object")
	}
}

func entriesMetricValue(f *fixture, result string) float64 {
	return (&metricValue{f: f, name: "kubeshard_largedata_stream_entries_total", result: result}).value()
}

// TestTheNewOwnerClaimsWhatTheOldOneLeftPending: the member that served the
// dataset read 300 entries, stored 200 of them and died before it
// acknowledged any. The next owner stores the 100 missing ones and the new
// entries, each once.
func TestTheNewOwnerClaimsWhatTheOldOneLeftPending(t *testing.T) {
	sf := newStreamFixture(t, 0, largedata.Options{})
	if _, err := sf.reconcile(t); err != nil { // creates the dataset and the group
		t.Fatal(err)
	}
	sf.produce(300)
	b, err := sf.src.Read(t.Context(), sf.stream, "member-0", 300)
	if err != nil || len(b.Messages) != 300 {
		t.Fatalf("the old owner's read: %d, %v", len(b.Messages), err)
	}
	var old []store.Entry
	for _, m := range b.Messages[:200] {
		old = append(old, store.Entry{ID: m.ID, Payload: m.Fields["payload"]})
	}
	if _, err := sf.st.Ingest(t.Context(), store.Key{UID: "uid-1"}, old); err != nil {
		t.Fatal(err)
	}
	sf.produce(50)

	for range 3 {
		if _, err := sf.reconcile(t); err != nil {
			t.Fatal(err)
		}
	}
	got := sf.stored(t)
	seen := map[string]bool{}
	for _, e := range got {
		if seen[e.ID] {
			t.Fatalf("entry %s stored twice", e.ID)
		}
		seen[e.ID] = true
	}
	if len(got) != 350 || sf.src.Pending(sf.stream) != 0 {
		t.Fatalf("%d entries stored, %d pending; want all 350 stored once, none pending", len(got), sf.src.Pending(sf.stream))
	}
	if v := entriesMetricValue(sf.fixture, "duplicate"); v != 200 {
		t.Errorf("duplicates counted %v, want the 200 the old owner had stored", v)
	}
}

func TestMalformedEntriesAreCountedSkippedAndReported(t *testing.T) {
	sf := newStreamFixture(t, 0, largedata.Options{})
	sf.produce(3)
	bad1 := sf.src.Add(sf.stream.Name, map[string]string{"data": "no payload field"})
	sf.src.Add(sf.stream.Name, map[string]string{"payload": strings.Repeat("x", largedata.MaxEntryPayload+1)})
	sf.produce(2)
	if _, err := sf.reconcile(t); err != nil {
		t.Fatal(err)
	}
	if n := sf.src.Pending(sf.stream); n != 0 {
		t.Fatalf("%d entries pending: malformed entries must be acknowledged, never retried", n)
	}
	st := sf.get(t).Status.Stream
	if st == nil || st.Ingested != 5 || st.Malformed != 2 {
		t.Fatalf("status.stream %+v, want 5 ingested and 2 malformed", st)
	}
	select {
	case ev := <-sf.recorder.Events:
		if !strings.Contains(ev, "Warning "+largedata.EventMalformedEntries) || !strings.Contains(ev, "Skipped 2 malformed entries") ||
			!strings.Contains(ev, bad1) {
			t.Errorf("event %q: want a Warning %s naming the first malformed entry %s", ev, largedata.EventMalformedEntries, bad1)
		}
	default:
		t.Fatal("no event about the malformed entries")
	}
	if _, err := sf.reconcile(t); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-sf.recorder.Events:
		t.Errorf("a second event %q for entries already reported", ev)
	default:
	}
}

func TestStreamOutageDegradesAndLosesNothing(t *testing.T) {
	sf := newStreamFixture(t, 0, largedata.Options{})
	sf.produce(100)
	sf.src.SetUnavailable(true)
	if _, err := sf.reconcile(t); err == nil {
		t.Fatal("reconcile with the stream down: no error, want one so that the controller backs off")
	}
	ld := sf.get(t)
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionTrue, largedata.ReasonStreamUnavailable)
	if c := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionDegraded); !strings.Contains(c.Message, sf.stream.Name) {
		t.Errorf("Degraded says %q, want the stream's name", c.Message)
	}

	sf.src.SetUnavailable(false)
	sf.produce(100)
	for range 2 {
		if _, err := sf.reconcile(t); err != nil {
			t.Fatal(err)
		}
	}
	ld = sf.get(t)
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionFalse, largedata.ReasonHealthy)
	if n := len(sf.stored(t)); n != 200 {
		t.Errorf("%d entries stored after the outage, want all 200", n)
	}
}

func TestAStreamWithoutASourceIsDegraded(t *testing.T) {
	ld := dataset(0, datav1alpha1.ProcessingChecksum)
	ld.Spec.Source = &datav1alpha1.DataSource{RedisStream: &datav1alpha1.RedisStreamSource{Stream: "elsewhere"}}
	sf := newFixture(t, ld, largedata.Options{})
	res, err := sf.reconcile(t)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != time.Minute {
		t.Errorf("requeued after %v, want the retry's maximum, 1m", res.RequeueAfter)
	}
	ld = sf.get(t)
	wantCondition(t, ld, datav1alpha1.ConditionDegraded, metav1.ConditionTrue, largedata.ReasonStreamUnavailable)
	if c := meta.FindStatusCondition(ld.Status.Conditions, datav1alpha1.ConditionDegraded); !strings.Contains(c.Message, "--stream-redis-address") {
		t.Errorf("Degraded says %q, want it to name the flag that fixes it", c.Message)
	}
}

func TestDeletionRemovesTheEntriesAndTheGroup(t *testing.T) {
	sf := newStreamFixture(t, 10, largedata.Options{})
	all := sf.produce(20)
	if _, err := sf.reconcile(t); err != nil {
		t.Fatal(err)
	}
	if err := sf.c.Delete(t.Context(), sf.get(t)); err != nil {
		t.Fatal(err)
	}
	sf.reconcileUntilDone(t)
	if err := sf.c.Get(t.Context(), sf.req.NamespacedName, &datav1alpha1.LargeData{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the object outlived its deletion: %v", err)
	}
	if n := len(sf.stored(t)); n != 0 {
		t.Errorf("%d entries left in the store", n)
	}
	// The group is gone: one made again starts at the stream's first entry.
	b, err := sf.src.Read(t.Context(), sf.stream, "someone", 100)
	if err != nil || len(b.Messages) != len(all) {
		t.Errorf("a read of the deleted dataset's group got %d entries (%v), want all %d: the group was not deleted", len(b.Messages), err, len(all))
	}
}
