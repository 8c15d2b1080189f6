package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/coordinator"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// TestGarbageWhereKubeshardReads writes, by hand, what a careless admin or a
// compromised client could write where two members read: slot labels that
// name another slot than the object's, a member's Lease
// with annotations that do not parse, a Lease that pretends to be a member's,
// and a ShardRing status that gives a slot to both members. Objects created
// meanwhile must all be reconciled, by one member at a time (the journals),
// no member may exit, and each garbage must be reported where an admin
// looks: an event on the ring, or its Ready condition.
func TestGarbageWhereKubeshardReads(t *testing.T) {
	ctx := t.Context()
	c := env.Client
	ns := createRing(t, c, "e2e-garbage", leaseSeconds)
	journals := t.TempDir()
	members := []string{"op-0", "op-1"}
	replicas := map[string]*replica{}
	for _, name := range members {
		replicas[name] = startReplica(t, ns, name, journalFlag(journals, name), "--labeler-sweep-interval=1h")
	}
	waitFor(t, 60*time.Second, "two replicas share the ring", func() (bool, string) {
		return settled(ctx, c, ns, members...)
	})
	createDatasets(t, c, ns, 20)
	waitReconciled(t, c, ns, 20, 60*time.Second)
	batch := 0
	createMore := func(what string) {
		t.Helper()
		batch++
		names := make([]string, 10)
		for i := range names {
			names[i] = fmt.Sprintf("after-%d-%02d", batch, i)
		}
		createNamed(t, c, ns, names)
		waitFor(t, 60*time.Second, "objects created after "+what+" are reconciled", func() (bool, string) {
			return namesReconciled(ctx, c, ns, names)
		})
	}

	// A slot label that names a valid slot but not the object's own puts the
	// object in the cache of the member serving the label's slot, and in no
	// other. The members run with a sweep interval of an hour, so the
	// labeler's sweep cannot be what repairs it: the member that holds the
	// object must, at once.
	t.Run("slot labels set by hand to another slot", func(t *testing.T) {
		if byUID() {
			t.Skip("selectorMode ShardSelector: datasets carry no slot label")
		}
		sr, err := getRing(ctx, c, ns)
		if err != nil {
			t.Fatal(err)
		}
		owner := map[int]string{}
		for _, m := range sr.Status.Members {
			slots, err := ring.ParseRanges(m.Slots, ring.DefaultSlots)
			if err != nil {
				t.Fatalf("member %s serves %q: %v", m.Name, m.Slots, err)
			}
			for _, s := range slots {
				owner[s] = m.Name
			}
		}
		// wrongSlot returns a slot other than name's own, served by another
		// member than name's slot when other is true, by the same otherwise.
		wrongSlot := func(name string, other bool) int {
			right := ring.Slot(ns, name, ring.DefaultSlots)
			for s := range ring.DefaultSlots {
				if s != right && owner[s] != "" && (owner[s] != owner[right]) == other {
					return s
				}
			}
			t.Fatalf("no slot for %s (other member: %t) in %v", name, other, sr.Status.Members)
			return -1
		}
		names := make([]string, 10)
		for i := range names {
			names[i] = fmt.Sprintf("wrong-label-%02d", i)
			ld := newDataset(ns, names[i], int64(i))
			ld.Labels = map[string]string{shardingv1alpha1.LabelSlot: strconv.Itoa(wrongSlot(names[i], i%2 == 0))}
			if err := c.Create(ctx, ld); err != nil {
				t.Fatal(err)
			}
		}
		// Reconciled datasets edited by hand to another member's slot.
		edited := []string{"ds-0000", "ds-0001", "ds-0002", "ds-0003"}
		for _, name := range edited {
			ld := &datav1alpha1.LargeData{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
				t.Fatal(err)
			}
			orig := ld.DeepCopy()
			ld.Labels[shardingv1alpha1.LabelSlot] = strconv.Itoa(wrongSlot(name, true))
			if err := c.Patch(ctx, ld, client.MergeFrom(orig)); err != nil {
				t.Fatal(err)
			}
		}
		all := append(slices.Clone(names), edited...)
		waitFor(t, 10*time.Second, "every wrong slot label is repaired", func() (bool, string) {
			var wrong []string
			for _, name := range all {
				ld := &datav1alpha1.LargeData{}
				if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
					return false, err.Error()
				}
				if have, want := ld.Labels[shardingv1alpha1.LabelSlot], strconv.Itoa(ring.Slot(ns, name, ring.DefaultSlots)); have != want {
					wrong = append(wrong, fmt.Sprintf("%s: %s, want %s", name, have, want))
				}
			}
			return len(wrong) == 0, fmt.Sprintf("wrong: %v", wrong)
		})
		waitFor(t, 60*time.Second, "datasets created with a wrong slot label are reconciled", func() (bool, string) {
			return namesReconciled(ctx, c, ns, names)
		})
		// Their owners have them again: a change is reconciled.
		for _, name := range all {
			ld := &datav1alpha1.LargeData{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
				t.Fatal(err)
			}
			orig := ld.DeepCopy()
			ld.Spec.Items++
			if err := c.Patch(ctx, ld, client.MergeFrom(orig)); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 60*time.Second, "the relabelled datasets' changes are reconciled", func() (bool, string) {
			return namesReconciled(ctx, c, ns, all)
		})
	})

	t.Run("a member's Lease with annotations that do not parse", func(t *testing.T) {
		for _, garbage := range []map[string]string{
			{shardingv1alpha1.AnnotationServing: "abc", shardingv1alpha1.AnnotationEpoch: "-5"},
			{shardingv1alpha1.AnnotationServing: "0-99999", shardingv1alpha1.AnnotationEpoch: "99999999999999999999999"},
		} {
			// The member renews its Lease every few seconds: retry on conflict.
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				lease := &coordinationv1.Lease{}
				if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: membership.LeaseName(ringName, "op-1")}, lease); err != nil {
					return err
				}
				for k, v := range garbage {
					lease.Annotations[k] = v
				}
				return c.Update(ctx, lease)
			}); err != nil {
				t.Fatal(err)
			}
			// Repaired: the member writes its own with its next renewal.
			waitFor(t, 3*lease, "the member writes its Lease's annotations back", func() (bool, string) {
				l := &coordinationv1.Lease{}
				if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: membership.LeaseName(ringName, "op-1")}, l); err != nil {
					return false, err.Error()
				}
				_, err := ring.ParseRanges(l.Annotations[shardingv1alpha1.AnnotationServing], ring.DefaultSlots)
				return err == nil && l.Annotations[shardingv1alpha1.AnnotationEpoch] != garbage[shardingv1alpha1.AnnotationEpoch],
					fmt.Sprintf("annotations %v", l.Annotations)
			})
			createMore(fmt.Sprintf("the Lease said %v", garbage))
		}
	})

	t.Run("a Lease that pretends to be a member's", func(t *testing.T) {
		forged := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pretender", Labels: map[string]string{
				shardingv1alpha1.LabelRing: ringName, membership.LabelMember: "ghost",
			}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To("ghost"), LeaseDurationSeconds: ptr.To(leaseSeconds),
				RenewTime: ptr.To(metav1.NewMicroTime(time.Now())),
			},
		}
		if err := c.Create(ctx, forged); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the coordinator reports the forged Lease", func() (bool, string) {
			return ringEvent(t, ns, coordinator.ReasonLeaseAnomaly, "pretender")
		})
		createMore("a forged Lease")
		sr, err := getRing(ctx, c, ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range sr.Status.Members {
			if m.Name == "ghost" {
				t.Errorf("the forged Lease made member %+v", m)
			}
		}
	})

	t.Run("a ShardRing status that gives a slot to both members", func(t *testing.T) {
		var good *shardingv1alpha1.ShardRingStatus
		var slot string
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			sr, err := getRing(ctx, c, ns)
			if err != nil {
				return err
			}
			good = sr.Status.DeepCopy()
			slot = strings.SplitN(strings.SplitN(sr.Status.Members[0].Slots, ",", 2)[0], "-", 2)[0]
			sr.Status.Members[1].Slots = slot + "," + sr.Status.Members[1].Slots
			return c.Status().Update(ctx, sr)
		}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the ring says its status is invalid", func() (bool, string) {
			sr, err := getRing(ctx, c, ns)
			if err != nil {
				return false, err.Error()
			}
			cond := meta.FindStatusCondition(sr.Status.Conditions, shardingv1alpha1.ConditionReady)
			return cond != nil && cond.Reason == coordinator.ReasonInvalidRing, fmt.Sprintf("Ready: %+v", cond)
		})
		// The members keep serving the slots they served.
		createMore("a status with two owners of slot " + slot)

		// Putting the status right puts the ring right.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			sr, err := getRing(ctx, c, ns)
			if err != nil {
				return err
			}
			sr.Status = *good
			notReady(&sr.Status)
			return c.Status().Update(ctx, sr)
		}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the ring is Ready again", func() (bool, string) {
			return settled(ctx, c, ns, members...)
		})
		createMore("the status was put right")
	})

	// The status edited to give some of op-0's slots to a member that does
	// not exist, and then to an epoch below what the members have followed.
	for _, edit := range []struct {
		what   string
		change func(st *shardingv1alpha1.ShardRingStatus)
	}{
		{"an unknown member owning some of op-0's slots", func(st *shardingv1alpha1.ShardRingStatus) {
			owned, err := ring.ParseRanges(st.Members[0].Slots, ring.DefaultSlots)
			if err != nil || len(owned) < 2 {
				t.Fatalf("op-0's slots %q: %v", st.Members[0].Slots, err)
			}
			half := len(owned) / 2
			st.Members[0].Slots, st.Members[0].SlotCount = ring.FormatRanges(owned[:half]), int32(half)
			st.Members = append(st.Members, shardingv1alpha1.MemberStatus{
				Name: "nobody", State: shardingv1alpha1.MemberReady,
				Slots: ring.FormatRanges(owned[half:]), SlotCount: int32(len(owned) - half),
			})
		}},
		{"an epoch lowered to 1", func(st *shardingv1alpha1.ShardRingStatus) { st.Epoch = 1 }},
	} {
		t.Run("a ShardRing status with "+edit.what, func(t *testing.T) {
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				sr, err := getRing(ctx, c, ns)
				if err != nil {
					return err
				}
				edit.change(&sr.Status)
				notReady(&sr.Status)
				return c.Status().Update(ctx, sr)
			}); err != nil {
				t.Fatal(err)
			}
			createMore("a status with " + edit.what)
			waitFor(t, 3*lease+30*time.Second, "the ring is Ready with its two members", func() (bool, string) {
				return settled(ctx, c, ns, members...)
			})
			createMore("the ring recovered from " + edit.what)
		})
	}

	// Slots move after the lowered epoch: the moves' epochs must still be
	// above what the members have followed, or they would ignore them.
	t.Run("a member leaves after the epoch was lowered", func(t *testing.T) {
		replicas["op-1"].stop(t)
		waitFor(t, 3*lease+30*time.Second, "op-0 serves the ring alone", func() (bool, string) {
			return settled(ctx, c, ns, "op-0")
		})
		createMore("op-1 left")
	})

	select {
	case <-replicas["op-0"].exited:
		t.Errorf("replica op-0 exited (%v); garbage must not crash a member", replicas["op-0"].err)
	default:
	}
	replicas["op-0"].stop(t)
	report, _ := checkJournals(t, c, ns, journals, nil)
	figures(t, "garbage", append([]any{"members", len(members)}, journalFigures(report)...)...)
}

// notReady sets the Ready condition of a status the test writes by hand to
// Unknown, so that a wait for the ring to be Ready again passes on the
// coordinator's judgement of it, not on the test's own copy of an old one.
func notReady(st *shardingv1alpha1.ShardRingStatus) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: shardingv1alpha1.ConditionReady, Status: metav1.ConditionUnknown,
		Reason: "EditedByHand", Message: "the e2e test wrote this status",
	})
}

// ringEvent reports whether an event with reason about the ring of ns
// mentions what.
func ringEvent(t *testing.T, ns, reason, what string) (bool, string) {
	list := &eventsv1.EventList{}
	if err := env.Client.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		return false, err.Error()
	}
	var seen []string
	for _, e := range list.Items {
		if e.Reason == reason && strings.Contains(e.Note, what) {
			return true, ""
		}
		seen = append(seen, e.Reason)
	}
	return false, fmt.Sprintf("events: %v", seen)
}
