package sampler

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

var ringKey = types.NamespacedName{Namespace: "kubeshard-system", Name: "largedata"}

// ring is an 8-slot ShardRing, settled on two members.
func ring() *shardingv1alpha1.ShardRing {
	return &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ringKey.Namespace, Name: ringKey.Name},
		Spec:       shardingv1alpha1.ShardRingSpec{Slots: 8},
		Status: shardingv1alpha1.ShardRingStatus{
			Epoch: 3, MemberCount: 2, ReadyMembers: 2,
			Members: []shardingv1alpha1.MemberStatus{
				{Name: "op-0", State: shardingv1alpha1.MemberReady, Slots: "0-3", SlotCount: 4},
				{Name: "op-1", State: shardingv1alpha1.MemberReady, Slots: "4-7", SlotCount: 4},
			},
			Conditions: []metav1.Condition{{Type: shardingv1alpha1.ConditionReady, Status: metav1.ConditionTrue}},
		},
	}
}

// The sampler attributes objects to members through the ring's slots and the
// objects' slot labels, and turns the counters of the members' and the API
// server's metrics into rates between samples.
func TestSample(t *testing.T) {
	names := workload.Names{Prefix: "lt", Namespaces: 2}
	scheme := runtime.NewScheme()
	utilruntime.Must(datav1alpha1.AddToScheme(scheme))
	utilruntime.Must(shardingv1alpha1.AddToScheme(scheme))
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ring())
	// Slots 1, 2 and 6: two objects on op-0, one on op-1; one unlabelled.
	for i, slot := range []string{"1", "2", "6", ""} {
		ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{
			Namespace: names.Namespace(i), Name: names.Name(i), Labels: map[string]string{workload.LabelRun: names.Prefix},
		}}
		if slot != "" {
			ld.Labels[shardingv1alpha1.LabelSlot] = slot
		}
		b = b.WithObjects(ld)
	}
	c := b.Build()

	tr, err := tracker.New(tracker.Options{Names: names, Slots: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = tr.Run(ctx, c) }()
	select {
	case <-tr.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("the tracker never listed the objects")
	}

	// Counters grow between the samples: op-0 uses 2 CPU seconds, op-1 none;
	// the API server takes 30 PATCH (20 of them LargeData) and 4 CPU seconds.
	round := 0
	member := func(_ context.Context, name string) ([]byte, error) {
		cpu := map[string]float64{"op-0": 10, "op-1": 5}[name]
		if round > 0 && name == "op-0" {
			cpu += 2
		}
		return fmt.Appendf(nil, "process_cpu_seconds_total %g\nprocess_resident_memory_bytes %d\ngo_memstats_heap_inuse_bytes %d\n",
			cpu, 100<<20, 40<<20), nil
	}
	api := func(context.Context) ([]byte, error) {
		n := 10 * float64(round)
		return fmt.Appendf(nil, `# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total %g
process_resident_memory_bytes 2e+09
go_memstats_heap_inuse_bytes 1.5e+09
apiserver_storage_size_bytes{storage_cluster_id="etcd-0"} 7e+07
# TYPE apiserver_request_total counter
apiserver_request_total{verb="PATCH",resource="largedata",code="200"} %g
apiserver_request_total{verb="PATCH",resource="largedata",code="409"} %g
apiserver_request_total{verb="PATCH",resource="leases",code="200"} %g
apiserver_request_total{verb="POST",resource="largedata",code="201"} 7
`, 100+4*float64(round), 100+n, 50+n, 20+n), nil
	}
	s, err := New(Options{Client: c, Ring: ringKey, Tracker: tr, MemberMetrics: member, APIServerMetrics: api})
	if err != nil {
		t.Fatal(err)
	}
	s.Sample(ctx)
	time.Sleep(200 * time.Millisecond)
	round++
	s.Sample(ctx)

	snaps := s.Snapshots()
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots, want 2", len(snaps))
	}
	first, last := snaps[0], snaps[1]
	if first.APIRequests != nil || first.APIServerCPU != 0 || first.Members[0].CPU != 0 {
		t.Errorf("the first sample has rates (%v, CPU %v, member CPU %v); a rate needs two samples", first.APIRequests, first.APIServerCPU, first.Members[0].CPU)
	}
	if last.Objects != 4 || last.Epoch != 3 || last.MemberCount != 2 {
		t.Errorf("sample: %d objects, epoch %d, %d members; want 4, 3, 2", last.Objects, last.Epoch, last.MemberCount)
	}
	got := map[string]Member{}
	for _, m := range last.Members {
		got[m.Name] = m
	}
	if got["op-0"].Objects != 2 || got["op-1"].Objects != 1 || got["op-0"].Slots != 4 {
		t.Errorf("members %+v; want op-0 with 2 objects in 4 slots, op-1 with 1", last.Members)
	}
	if last.APIServerRSS != 2e9 || last.APIServerHeap != 1.5e9 || last.StorageBytes != 7e7 {
		t.Errorf("API server RSS %v, heap %v, storage %v; want 2e9, 1.5e9, 7e7", last.APIServerRSS, last.APIServerHeap, last.StorageBytes)
	}
	if got["op-0"].RSS != 100<<20 || got["op-0"].Heap != 40<<20 {
		t.Errorf("op-0 memory: RSS %v, heap %v", got["op-0"].RSS, got["op-0"].Heap)
	}

	// Rates are per second of the real time between the samples, so compare
	// them with each other: 2 CPU seconds for op-0 and 4 for the API server
	// in the same time, 30 PATCH of which 20 LargeData, POST unchanged.
	elapsed := 2 / got["op-0"].CPU
	if got["op-1"].CPU != 0 || elapsed < 0.2 || elapsed > 10 {
		t.Errorf("member CPU op-0 %v op-1 %v; want 2 CPU seconds over the %v s between the samples, and 0", got["op-0"].CPU, got["op-1"].CPU, elapsed)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6*max(1, b) }
	if !near(last.APIServerCPU, 2*got["op-0"].CPU) {
		t.Errorf("API server CPU %v, want twice op-0's %v", last.APIServerCPU, got["op-0"].CPU)
	}
	if !near(last.APIRequests["PATCH"]*elapsed, 30) || !near(last.LargeDataRequests["PATCH"]*elapsed, 20) || last.LargeDataRequests["POST"] != 0 {
		t.Errorf("request rates %v, LargeData %v over %v s; want 30 PATCH, 20 of them LargeData, no POST", last.APIRequests, last.LargeDataRequests, elapsed)
	}
}
