package membership

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// FuzzTrackerObserve feeds the Tracker member Leases with whatever a person
// or a broken member may have written in them: any serving list, epoch,
// holder, member label and lease duration. It must never panic; a serving
// list it cannot read must leave the member's slots unknown (never empty:
// empty would let the coordinator complete handovers away from it), and
// nothing read may lie outside the ring. A Lease that names another member
// than its own name does is no member's: it is ignored and reported.
func FuzzTrackerObserve(f *testing.F) {
	f.Add("0-9", "3", "op-0", "op-0", int32(15))
	f.Add("0-9,abc", "-1", "", "op-0", int32(0))
	f.Add("99999", "99999999999999999999", "op-1", "op-0", int32(-5))
	f.Add("", "", "op-0", "", int32(1<<30))
	f.Fuzz(func(t *testing.T, serving, epoch, holder, member string, seconds int32) {
		tracker, _ := newTestTracker()
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: testNamespace, Name: LeaseName(testRing, "op-0"), ResourceVersion: "1",
				Labels:      map[string]string{shardingv1alpha1.LabelRing: testRing, LabelMember: member},
				Annotations: map[string]string{shardingv1alpha1.AnnotationServing: serving, shardingv1alpha1.AnnotationEpoch: epoch},
			},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &seconds},
		}
		tracker.Observe(lease)
		named := member
		if named == "" {
			named = holder
		}
		if named != "" && named != "op-0" {
			if got := tracker.Members(); len(got) != 0 || tracker.Anomalies()[lease.Name] == "" {
				t.Fatalf("the Lease of op-0 naming member %q (holder %q) read as members %+v, anomalies %v; want it ignored and reported",
					member, holder, got, tracker.Anomalies())
			}
			return
		}
		m := onlyMember(t, tracker)
		if holder != "" && holder != "op-0" && tracker.Anomalies()[lease.Name] == "" {
			t.Fatalf("op-0's Lease held by %q is not reported", holder)
		}
		if _, err := ring.ParseRanges(serving, ring.DefaultSlots); err != nil {
			if !m.ServingUnknown || len(m.Serving) != 0 {
				t.Fatalf("serving %q does not parse, yet the member reads %+v; want its slots unknown", serving, m)
			}
		}
		for _, s := range m.Serving {
			if s < 0 || s >= ring.DefaultSlots {
				t.Fatalf("serving %q read as slot %d, outside the ring", serving, s)
			}
		}
		if m.Epoch < 0 || m.LeaseDuration <= 0 || m.Name == "" {
			t.Fatalf("Lease (epoch %q, duration %d, holder %q, member %q) read as %+v: negative epoch, no duration or no name", epoch, seconds, holder, member, m)
		}
		if m.Released != (holder == "") || (!m.Released && m.Live == m.Expired) || m.LeaseDuration > 1<<31*time.Second {
			t.Fatalf("Lease held by %q read as %+v", holder, m)
		}
	})
}
