package tracker

import (
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

var names = workload.Names{Prefix: "lt", Namespaces: 3}

// largeData returns object i at generation gen, sent at sent, with the given
// status and slot label ("" for none).
func largeData(i int, gen, observed int64, phase datav1alpha1.Phase, slot string, sent time.Time) *datav1alpha1.LargeData {
	ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{
		Namespace: names.Namespace(i), Name: names.Name(i), Generation: gen,
		Labels:      map[string]string{workload.LabelRun: names.Prefix},
		Annotations: map[string]string{workload.AnnotationSentAt: stampOf(sent)},
	}}
	if slot != "" {
		ld.Labels[shardingv1alpha1.LabelSlot] = slot
	}
	ld.Status.ObservedGeneration, ld.Status.Phase = observed, phase
	status := metav1.ConditionFalse
	if phase == datav1alpha1.PhaseReady {
		status = metav1.ConditionTrue
	}
	if observed > 0 {
		ld.Status.Conditions = []metav1.Condition{{Type: datav1alpha1.ConditionReady, Status: status, ObservedGeneration: observed}}
	}
	return ld
}

func stampOf(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func TestTrackerLatencyAndWrites(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0
	tr, err := New(Options{Names: names, Slots: 8, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) time.Time { now = t0.Add(d); return now }
	var reconciled []time.Duration
	tr.opts.OnReconciled = func(d time.Duration) { reconciled = append(reconciled, d) }

	// Object 4: created at t0, labelled, finalizer, two status writes, Ready after 3 s.
	tr.observe(largeData(4, 1, 0, "", "", t0), watch.Added, at(100*time.Millisecond), watched)
	tr.observe(largeData(4, 1, 0, "", "5", t0), watch.Modified, at(200*time.Millisecond), watched)
	tr.observe(largeData(4, 1, 1, datav1alpha1.PhaseProcessing, "5", t0), watch.Modified, at(time.Second), watched)
	tr.observe(largeData(4, 1, 1, datav1alpha1.PhaseReady, "5", t0), watch.Modified, at(3*time.Second), watched)
	// Writes to the reconciled object that change nothing we follow: one
	// right after its last change (an echo), one long after (idle).
	tr.observe(largeData(4, 1, 1, datav1alpha1.PhaseReady, "5", t0), watch.Modified, at(4*time.Second), watched)
	tr.observe(largeData(4, 1, 1, datav1alpha1.PhaseReady, "5", t0), watch.Modified, at(4*time.Second+IdleAfter), watched)
	// A spec change sent at 20 s, reconciled at 22.5 s.
	sent := t0.Add(20 * time.Second)
	tr.observe(largeData(4, 2, 1, datav1alpha1.PhaseReady, "5", sent), watch.Modified, at(20100*time.Millisecond), watched)
	if s := tr.Stats(); s.Reconciled != 0 {
		t.Errorf("after a spec change, %d reconciled; want 0 until the status shows generation 2", s.Reconciled)
	}
	// A status patch from a stale copy: phase Ready, Ready condition False.
	stale := largeData(4, 2, 2, datav1alpha1.PhaseReady, "5", sent)
	stale.Status.Conditions[0].Status = metav1.ConditionFalse
	tr.observe(stale, watch.Modified, at(21*time.Second), watched)
	if s := tr.Stats(); s.Reconciled != 0 {
		t.Errorf("phase Ready with the Ready condition False counted as reconciled")
	}
	tr.observe(largeData(4, 2, 2, datav1alpha1.PhaseReady, "5", sent), watch.Modified, at(22500*time.Millisecond), watched)
	// Object 7, already Ready when the tracker started: no latency.
	tr.observe(largeData(7, 1, 1, datav1alpha1.PhaseReady, "5", t0), watch.Added, at(23*time.Second), firstList)
	// Not the harness's: ignored.
	other := largeData(1, 1, 1, datav1alpha1.PhaseReady, "1", t0)
	other.Name = "baseline-000000001"
	tr.observe(other, watch.Added, at(23*time.Second), watched)

	want := []time.Duration{3 * time.Second, 2500 * time.Millisecond}
	if len(reconciled) != 2 || reconciled[0] != want[0] || reconciled[1] != want[1] {
		t.Errorf("latencies %v, want %v", reconciled, want)
	}
	s := tr.Stats()
	if s.Present != 2 || s.Reconciled != 2 || s.ReconciledBefore != 1 || s.EchoWrites != 1 || s.IdleWrites != 1 || s.SpecWrites != 1 || s.MetadataWrites != 1 || s.StatusWrites != 4 {
		t.Errorf("stats %+v", s)
	}
	if got, want := tr.IdleWrites(), float32(4+IdleAfter.Seconds()); len(got) != 1 || got[0] != want {
		t.Errorf("idle writes at %v, want [%v]", got, want)
	}
	if slots := tr.SlotObjects(); slots[5] != 2 {
		t.Errorf("slot 5 has %d objects, want 2", slots[5])
	}
	samples := tr.Samples()
	if len(samples) != 2 || !samples[0].Create || samples[1].Create || samples[1].At != 22.5 {
		t.Errorf("samples %+v", samples)
	}

	// A relist shows the object unchanged: not a write.
	tr.observe(largeData(4, 2, 2, datav1alpha1.PhaseReady, "5", sent), watch.Added, at(25*time.Second), relisted)
	if s := tr.Stats(); s.IdleWrites != 1 || s.EchoWrites != 1 || s.Reconciled != 2 {
		t.Errorf("after a relist: stats %+v; want it counted as no write", s)
	}
	tr.observe(largeData(4, 2, 2, datav1alpha1.PhaseReady, "5", sent), watch.Deleted, at(30*time.Second), watched)
	if s := tr.Stats(); s.Present != 1 || s.Reconciled != 1 || tr.SlotObjects()[5] != 1 {
		t.Errorf("after a delete: stats %+v, slot 5 %d; want one object left", s, tr.SlotObjects()[5])
	}
}
