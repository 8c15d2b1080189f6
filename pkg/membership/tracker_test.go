package membership

import (
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

// memberLease is a Lease as a Member writes it, renewed at renewTime by the
// member's clock.
func memberLease(member, resourceVersion string, renewTime time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       testNamespace,
			Name:            LeaseName(testRing, member),
			ResourceVersion: resourceVersion,
			Labels:          map[string]string{shardingv1alpha1.LabelRing: testRing, LabelMember: member},
			Annotations:     map[string]string{shardingv1alpha1.AnnotationServing: "0-9"},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(member),
			LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime:            ptr.To(metav1.NewMicroTime(renewTime)),
		},
	}
}

func newTestTracker() (*Tracker, *clocktesting.FakeClock) {
	clock := clocktesting.NewFakeClock(start)
	return NewTracker(TrackerOptions{Ring: testRing, Clock: clock}), clock
}

func onlyMember(t *testing.T, tracker *Tracker) MemberInfo {
	t.Helper()
	members := tracker.Members()
	if len(members) != 1 {
		t.Fatalf("Members() = %+v, want exactly one", members)
	}
	return members[0]
}

// The member's clock may be hours off the coordinator's: neither a renewTime
// in the future nor one in the past may change when the member expires.
func TestTrackerJudgesExpiryByItsOwnClock(t *testing.T) {
	for _, tt := range []struct {
		name string
		skew time.Duration // member clock minus coordinator clock
	}{
		{"member clock in sync", 0},
		{"member clock an hour ahead", time.Hour},
		{"member clock an hour behind", -time.Hour},
		{"member clock a year behind", -365 * 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tracker, clock := newTestTracker()
			tracker.Observe(memberLease("op-0", "100", start.Add(tt.skew)))

			clock.Step(15*time.Second - time.Microsecond)
			if m := onlyMember(t, tracker); !m.Live || m.Expired {
				t.Fatalf("just under leaseDuration after the last change: %+v, want live", m)
			}
			clock.Step(time.Microsecond)
			if m := onlyMember(t, tracker); m.Live || !m.Expired {
				t.Fatalf("leaseDuration after the last change: %+v, want expired", m)
			}

			// A renewal brings the member back, counted from when it was seen.
			tracker.Observe(memberLease("op-0", "101", start.Add(tt.skew+17*time.Second)))
			if m := onlyMember(t, tracker); !m.Live || !m.ObservedAt.Equal(clock.Now()) {
				t.Fatalf("after a renewal: %+v, want live, observed now", m)
			}
		})
	}
}

// Resyncs deliver the same version again and again; they must not keep a dead
// member alive. Either a new resourceVersion or a new renewTime is a change.
// A watch that stalled shows a live member as silent. What the coordinator
// reads from the API server before it takes the member's slots is observed
// like any event: the same version leaves the expiry standing, a newer one
// makes the member live again, counted from now.
func TestTrackerReadOfAStalledWatchsMember(t *testing.T) {
	tracker, clock := newTestTracker()
	tracker.Observe(memberLease("op-0", "100", start))
	clock.Step(20 * time.Second)
	if m := onlyMember(t, tracker); !m.Expired {
		t.Fatalf("20 s without a change seen: %+v, want expired", m)
	}
	// The watch missed a renewal: the read shows a newer version.
	tracker.Observe(memberLease("op-0", "140", start.Add(19*time.Second)))
	if m := onlyMember(t, tracker); !m.Live || !m.ObservedAt.Equal(clock.Now()) {
		t.Fatalf("after a read that found a renewal: %+v, want live, observed now", m)
	}
	// Silent for real this time: the read returns the version held.
	clock.Step(15 * time.Second)
	tracker.Observe(memberLease("op-0", "140", start.Add(19*time.Second)))
	if m := onlyMember(t, tracker); !m.Expired {
		t.Fatalf("after a read that found the same version: %+v, want expired", m)
	}
}

func TestTrackerCountsOnlyChangesAsRenewals(t *testing.T) {
	for _, tt := range []struct {
		name        string
		next        *coordinationv1.Lease
		wantRenewed bool
	}{
		{"resync of the same version", memberLease("op-0", "100", start), false},
		{"new resourceVersion", memberLease("op-0", "101", start), true},
		{"new renewTime", memberLease("op-0", "100", start.Add(2*time.Second)), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tracker, clock := newTestTracker()
			tracker.Observe(memberLease("op-0", "100", start))
			clock.Step(10 * time.Second)
			tracker.Observe(tt.next)
			clock.Step(5 * time.Second)
			if m := onlyMember(t, tracker); m.Live != tt.wantRenewed {
				t.Errorf("15 s after the first observation, 5 s after the second: Live = %v, want %v", m.Live, tt.wantRenewed)
			}
		})
	}
}

// A coordinator that has just started cannot know how long a member has been
// silent, so an old renewTime still buys the member a full lease duration.
func TestTrackerFirstObservationCountsAsNow(t *testing.T) {
	tracker, clock := newTestTracker()
	clock.Step(time.Hour)
	tracker.Observe(memberLease("op-0", "100", start))
	m := onlyMember(t, tracker)
	if !m.Live || !m.ObservedAt.Equal(clock.Now()) {
		t.Fatalf("Lease last renewed an hour ago, first seen now: %+v, want live, observed now", m)
	}
	clock.Step(15 * time.Second)
	if m := onlyMember(t, tracker); m.Live {
		t.Fatalf("a full lease duration after the first observation: %+v, want expired", m)
	}

	// A deleted and re-created Lease is seen for the first time again.
	tracker.Forget(LeaseName(testRing, "op-0"))
	if got := tracker.Members(); len(got) != 0 {
		t.Fatalf("Members() after Forget = %+v, want none", got)
	}
	tracker.Observe(memberLease("op-0", "100", start))
	if m := onlyMember(t, tracker); !m.Live {
		t.Fatalf("re-created Lease: %+v, want live", m)
	}
}

func TestTrackerReleasedLeaseIsNotLiveAtOnce(t *testing.T) {
	tracker, _ := newTestTracker()
	lease := memberLease("op-0", "100", start)
	tracker.Observe(lease)

	released := lease.DeepCopy()
	released.ResourceVersion = "101"
	released.Spec.HolderIdentity = nil
	released.Annotations[shardingv1alpha1.AnnotationServing] = ""
	tracker.Observe(released)

	m := onlyMember(t, tracker)
	if m.Live || m.Expired || !m.Released || m.Name != "op-0" || len(m.Serving) != 0 {
		t.Fatalf("released Lease: %+v, want op-0 released, neither live nor expired, serving nothing", m)
	}
	if _, ok := tracker.NextExpiry(); ok {
		t.Error("NextExpiry() reports an expiry for a released member")
	}
}

func TestTrackerMemberName(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*coordinationv1.Lease)
		want   string
	}{
		{"member label", func(l *coordinationv1.Lease) {}, "op-0"},
		{"holder without label", func(l *coordinationv1.Lease) { delete(l.Labels, LabelMember) }, "op-0"},
		{"released, without label", func(l *coordinationv1.Lease) {
			delete(l.Labels, LabelMember)
			l.Spec.HolderIdentity = nil
		}, "op-0"},
		{"label wins over holder", func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = ptr.To("other") }, "op-0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tracker, _ := newTestTracker()
			lease := memberLease("op-0", "100", start)
			tt.change(lease)
			tracker.Observe(lease)
			if m := onlyMember(t, tracker); m.Name != tt.want || m.LeaseName != "widgets-op-0" {
				t.Errorf("Name %q, LeaseName %q; want %q, %q", m.Name, m.LeaseName, tt.want, "widgets-op-0")
			}
		})
	}
}

// A damaged serving annotation must not crash the coordinator nor read as
// "serves nothing", which would let it complete a handover too early.
func TestTrackerServingAnnotation(t *testing.T) {
	for _, tt := range []struct {
		name        string
		annotation  *string
		wantServing []int
		wantUnknown bool
	}{
		{"range list", ptr.To("0-2,7"), []int{0, 1, 2, 7}, false},
		{"empty", ptr.To(""), nil, false},
		{"garbage", ptr.To("0-2,x"), nil, true},
		{"reversed range", ptr.To("9-3"), nil, true},
		{"slot beyond the ring", ptr.To("1024"), nil, true},
		{"missing", nil, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tracker, _ := newTestTracker()
			lease := memberLease("op-0", "100", start)
			delete(lease.Annotations, shardingv1alpha1.AnnotationServing)
			if tt.annotation != nil {
				lease.Annotations[shardingv1alpha1.AnnotationServing] = *tt.annotation
			}
			tracker.Observe(lease)
			m := onlyMember(t, tracker)
			if m.ServingUnknown != tt.wantUnknown || !slices.Equal(m.Serving, tt.wantServing) {
				t.Errorf("Serving %v, ServingUnknown %v; want %v, %v", m.Serving, m.ServingUnknown, tt.wantServing, tt.wantUnknown)
			}
			if !m.Live {
				t.Error("a bad annotation made the member not live")
			}
		})
	}
}

// The epoch tells the coordinator which moves a serving list accounts for; a
// damaged one must acknowledge nothing rather than everything.
func TestTrackerAcknowledgedEpoch(t *testing.T) {
	for _, tt := range []struct {
		name       string
		annotation *string
		want       int64
	}{
		{"written by a member", ptr.To("42"), 42},
		{"missing", nil, 0},
		{"garbage", ptr.To("soon"), 0},
		{"negative", ptr.To("-3"), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tracker, _ := newTestTracker()
			lease := memberLease("op-0", "100", start)
			delete(lease.Annotations, shardingv1alpha1.AnnotationEpoch)
			if tt.annotation != nil {
				lease.Annotations[shardingv1alpha1.AnnotationEpoch] = *tt.annotation
			}
			tracker.Observe(lease)
			if m := onlyMember(t, tracker); m.Epoch != tt.want {
				t.Errorf("Epoch = %d, want %d", m.Epoch, tt.want)
			}
		})
	}
}

func TestTrackerNextExpiry(t *testing.T) {
	tracker, clock := newTestTracker()
	if _, ok := tracker.NextExpiry(); ok {
		t.Fatal("NextExpiry() of an empty tracker reports an expiry")
	}

	tracker.Observe(memberLease("op-0", "100", start))
	clock.Step(4 * time.Second)
	long := memberLease("op-1", "200", start)
	long.Spec.LeaseDurationSeconds = ptr.To[int32](30)
	tracker.Observe(long)
	clock.Step(4 * time.Second)
	tracker.Observe(memberLease("op-2", "300", start))

	for _, want := range []time.Time{
		start.Add(15 * time.Second),               // op-0
		start.Add(8*time.Second + 15*time.Second), // op-2
		start.Add(4*time.Second + 30*time.Second), // op-1, with its own lease duration
	} {
		got, ok := tracker.NextExpiry()
		if !ok || !got.Equal(want) {
			t.Fatalf("NextExpiry() = %v, %v; want %v", got, ok, want)
		}
		clock.SetTime(want)
	}
	if got, ok := tracker.NextExpiry(); ok {
		t.Fatalf("NextExpiry() after every member expired = %v, want none", got)
	}
	for _, m := range tracker.Members() {
		if m.Live {
			t.Errorf("%s still live after its NextExpiry", m.Name)
		}
	}
}

func TestTrackerIgnoresOtherRings(t *testing.T) {
	tracker, _ := newTestTracker()
	foreign := memberLease("op-0", "100", start)
	foreign.Labels[shardingv1alpha1.LabelRing] = "otherring"
	unlabelled := memberLease("op-1", "100", start)
	delete(unlabelled.Labels, shardingv1alpha1.LabelRing)
	tracker.Observe(foreign)
	tracker.Observe(unlabelled)
	if got := tracker.Members(); len(got) != 0 {
		t.Fatalf("Members() = %+v, want Leases of other rings ignored", got)
	}

	// A Lease relabelled away from the ring leaves it.
	mine := memberLease("op-2", "100", start)
	tracker.Observe(mine)
	moved := mine.DeepCopy()
	moved.Labels[shardingv1alpha1.LabelRing] = "otherring"
	tracker.Observe(moved)
	if got := tracker.Members(); len(got) != 0 {
		t.Fatalf("Members() = %+v after the Lease left the ring, want none", got)
	}
}

func TestTrackerMembersSortedWithLeaseDurationDefault(t *testing.T) {
	tracker, _ := newTestTracker()
	noDuration := memberLease("op-10", "1", start)
	noDuration.Spec.LeaseDurationSeconds = nil
	for _, lease := range []*coordinationv1.Lease{memberLease("op-2", "1", start), noDuration, memberLease("op-1", "1", start)} {
		tracker.Observe(lease)
	}
	members := tracker.Members()
	var names []string
	for _, m := range members {
		names = append(names, m.Name)
	}
	if want := []string{"op-1", "op-10", "op-2"}; !slices.Equal(names, want) {
		t.Errorf("Members() names = %v, want %v", names, want)
	}
	if members[1].LeaseDuration != DefaultLeaseDuration {
		t.Errorf("LeaseDuration of a Lease without one = %v, want the default %v", members[1].LeaseDuration, DefaultLeaseDuration)
	}
}

// Only a member's own Lease, named after the ring and the member, makes a
// member: another Lease with the ring's label, made by hand or by something
// else, is ignored and reported; a member's Lease held in another name is
// still the member's (ignoring it would make a live member look gone) but is
// reported.
func TestTrackerLeasesThatAreNoMembersOwn(t *testing.T) {
	tracker, _ := newTestTracker()
	tracker.Observe(memberLease("op-0", "100", start))

	forged := memberLease("op-0", "7", start)
	forged.Name = "someone-elses-lease"
	tracker.Observe(forged)
	ghost := memberLease("ghost", "8", start)
	ghost.Name = "widgets-not-ghost"
	tracker.Observe(ghost)
	if m := onlyMember(t, tracker); m.Name != "op-0" || m.LeaseName != "widgets-op-0" {
		t.Errorf("member %+v; want op-0 of its own Lease only", m)
	}
	anomalies := tracker.Anomalies()
	for _, name := range []string{"someone-elses-lease", "widgets-not-ghost"} {
		if !strings.Contains(anomalies[name], "ignored") {
			t.Errorf("Lease %s: anomaly %q, want it reported as ignored", name, anomalies[name])
		}
	}

	held := memberLease("op-0", "101", start)
	held.Spec.HolderIdentity = ptr.To("intruder")
	tracker.Observe(held)
	if m := onlyMember(t, tracker); m.Name != "op-0" || !m.Live {
		t.Errorf("op-0 with its Lease held by another name: %+v; want it still a live member", m)
	}
	if !strings.Contains(tracker.Anomalies()["widgets-op-0"], "intruder") {
		t.Errorf("anomalies %v; want op-0's Lease reported as held by intruder", tracker.Anomalies())
	}
	tracker.Observe(memberLease("op-0", "102", start))
	tracker.Forget("someone-elses-lease")
	if got := tracker.Anomalies(); len(got) != 1 || got["widgets-not-ghost"] == "" {
		t.Errorf("anomalies %v after op-0 renewed in its own name and one forged Lease was deleted; want the other only", got)
	}
}
