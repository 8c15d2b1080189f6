package coordinator

import (
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// failover is a ring of two members, op-0 and op-1, owning its slots, and a
// member's Tracker that has watched their Leases since the start.
type failover struct {
	api     client.Client
	clock   *clocktesting.FakeClock
	tracker *membership.Tracker
}

func newFailover(t *testing.T) *failover {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: simNS, Name: simRingName, Generation: 1},
		Spec:       shardingv1alpha1.ShardRingSpec{Slots: simSlots, LeaseDurationSeconds: 15},
	}
	f := &failover{clock: clk, tracker: membership.NewTracker(membership.TrackerOptions{Ring: simRingName, Slots: simSlots, Clock: clk})}
	f.api = fake.NewClientBuilder().WithScheme(simScheme()).WithStatusSubresource(sr).
		WithObjects(sr, f.lease("op-0", 0), f.lease("op-1", 0)).Build()
	for _, name := range []string{"op-0", "op-1"} {
		f.tracker.Observe(f.get(t, name))
	}
	// The first coordinator assigns the slots once membership has been
	// quiet for RebalanceQuiet.
	first := f.reconciler(f.tracker)
	f.step(t, first)
	f.clock.Step(DefaultRebalanceQuiet)
	f.step(t, first)
	if owners := f.owners(t); owners["op-0"] != simSlots/2 || owners["op-1"] != simSlots/2 {
		t.Fatalf("after the first step the members own %v, want half each", owners)
	}
	return f
}

func (f *failover) lease(member string, renewedAfter time.Duration) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: simNS, Name: membership.LeaseName(simRingName, member),
			Labels: map[string]string{shardingv1alpha1.LabelRing: simRingName, membership.LabelMember: member},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To(member), LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime: ptr.To(metav1.NewMicroTime(f.clock.Now().Add(renewedAfter))),
		},
	}
}

func (f *failover) get(t *testing.T, member string) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := f.api.Get(t.Context(), client.ObjectKey{Namespace: simNS, Name: membership.LeaseName(simRingName, member)}, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// renew writes a renewal of member's Lease to the API server; whoever
// watches may or may not see it.
func (f *failover) renew(t *testing.T, member string) {
	t.Helper()
	l := f.get(t, member)
	l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(f.clock.Now()))
	if err := f.api.Update(t.Context(), l); err != nil {
		t.Fatal(err)
	}
}

// reconciler is the coordinator of a member whose Tracker is tracker.
func (f *failover) reconciler(tracker *membership.Tracker) *Reconciler {
	return &Reconciler{
		Client: f.api, APIReader: f.api, Recorder: &events.FakeRecorder{}, Clock: f.clock, Tracker: tracker,
		Options: Options{Ring: simRing, Clock: f.clock}.withDefaults(),
	}
}

func (f *failover) step(t *testing.T, r *Reconciler) {
	t.Helper()
	if _, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: simRing}); err != nil {
		t.Fatal(err)
	}
}

// coordinate runs the first step of a newly elected coordinator that uses
// tracker.
func (f *failover) coordinate(t *testing.T, tracker *membership.Tracker) {
	t.Helper()
	f.step(t, f.reconciler(tracker))
}

// owners counts the slots each member owns in the ring's status.
func (f *failover) owners(t *testing.T) map[string]int32 {
	t.Helper()
	sr := &shardingv1alpha1.ShardRing{}
	if err := f.api.Get(t.Context(), simRing, sr); err != nil {
		t.Fatal(err)
	}
	out := map[string]int32{}
	for _, m := range sr.Status.Members {
		out[m.Name] = m.SlotCount
	}
	return out
}

// A member elected coordinator after another died uses what it has watched
// itself: op-0 has been silent for more than its lease, so its slots go to
// op-1 in the new coordinator's first step. A member that has just started
// cannot know how long op-0 has been silent and waits a lease duration.
func TestANewCoordinatorUsesItsOwnHistory(t *testing.T) {
	t.Run("elected after watching", func(t *testing.T) {
		f := newFailover(t)
		for range 8 {
			f.clock.Step(2 * time.Second) // op-1 renews, op-0 is dead
			f.renew(t, "op-1")
			f.tracker.Observe(f.get(t, "op-1"))
		}
		f.coordinate(t, f.tracker)
		if owners := f.owners(t); owners["op-0"] != 0 || owners["op-1"] != simSlots {
			t.Errorf("in the new coordinator's first step the members own %v; want op-1 to own all %d slots", owners, simSlots)
		}
	})
	t.Run("elected just after starting", func(t *testing.T) {
		f := newFailover(t)
		f.clock.Step(16 * time.Second)
		f.renew(t, "op-1")
		fresh := membership.NewTracker(membership.TrackerOptions{Ring: simRingName, Slots: simSlots, Clock: f.clock})
		for _, name := range []string{"op-0", "op-1"} {
			fresh.Observe(f.get(t, name))
		}
		f.coordinate(t, fresh)
		if owners := f.owners(t); owners["op-0"] != simSlots/2 {
			t.Errorf("a coordinator that has just started gave op-0's slots away at once (owners %v); it cannot know how long op-0 has been silent", owners)
		}
	})
}

// A Tracker whose watch stalled sees a live member as silent, or a member
// that restarted as released. The coordinator reads the Lease from the API
// server before it takes a member's slots, and keeps them with their owner
// when the member wrote since.
func TestAStalledWatchTakesNoSlotsFromALiveMember(t *testing.T) {
	t.Run("renewals missed", func(t *testing.T) {
		f := newFailover(t)
		for range 8 {
			f.clock.Step(2 * time.Second)
			f.renew(t, "op-0") // the watch delivers none of these
			f.renew(t, "op-1")
			f.tracker.Observe(f.get(t, "op-1"))
		}
		f.coordinate(t, f.tracker)
		if owners := f.owners(t); owners["op-0"] != simSlots/2 {
			t.Errorf("op-0 renews but the watch missed it; the members own %v, want op-0 to keep its %d slots", owners, simSlots/2)
		}
	})
	t.Run("a restart seen as a release", func(t *testing.T) {
		f := newFailover(t)
		released := f.get(t, "op-0")
		released.Spec.HolderIdentity = ptr.To("")
		if err := f.api.Update(t.Context(), released); err != nil {
			t.Fatal(err)
		}
		f.tracker.Observe(f.get(t, "op-0"))
		// op-0 restarts and takes its Lease again; the watch stalls before
		// it delivers that.
		f.clock.Step(time.Second)
		back := f.get(t, "op-0")
		back.Spec.HolderIdentity = ptr.To("op-0")
		if err := f.api.Update(t.Context(), back); err != nil {
			t.Fatal(err)
		}
		f.coordinate(t, f.tracker)
		if owners := f.owners(t); owners["op-0"] != simSlots/2 {
			t.Errorf("op-0 holds its Lease again but the watch showed it released; the members own %v, want op-0 to keep its %d slots", owners, simSlots/2)
		}
	})
}

// A Lease with the ring's label that is no member's own is not a member, and
// the coordinator says so once in a Warning event; so is a member's Lease
// held in another name, which stays the member's.
func TestTheCoordinatorReportsLeasesThatAreNoMembersOwn(t *testing.T) {
	f := newFailover(t)
	forged := f.lease("op-0", 0)
	forged.Name = "hand-made"
	if err := f.api.Create(t.Context(), forged); err != nil {
		t.Fatal(err)
	}
	f.tracker.Observe(forged)
	held := f.get(t, "op-1")
	held.Spec.HolderIdentity = ptr.To("intruder")
	f.tracker.Observe(held)

	rec := &events.FakeRecorder{Events: make(chan string, 10)}
	r := f.reconciler(f.tracker)
	r.Recorder = rec
	f.step(t, r)
	f.step(t, r)
	var got []string
	for len(rec.Events) > 0 {
		got = append(got, <-rec.Events)
	}
	if len(got) != 2 || !slices.ContainsFunc(got, func(e string) bool {
		return strings.Contains(e, "hand-made") && strings.Contains(e, ReasonLeaseAnomaly)
	}) ||
		!slices.ContainsFunc(got, func(e string) bool { return strings.Contains(e, "intruder") }) {
		t.Errorf("events %q; want one Warning %s for each Lease, once", got, ReasonLeaseAnomaly)
	}
	if owners := f.owners(t); owners["op-0"] != simSlots/2 || owners["op-1"] != simSlots/2 {
		t.Errorf("the members own %v; want them unchanged by the two Leases", owners)
	}
}
