package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// TestHandoverWaitsForAWarmReceiver adds a member to two under load, twice.
// The first time the newcomer is frozen (SIGSTOP) right after it took its
// Lease, before it could cache anything: the slots the ring moves to it must
// stay with their old owners, which reconcile objects created in them at
// once, until its Lease lapses and the moves are cancelled. The second time
// (restarted) it joins: every slot it gains must be listed warm on its Lease
// before its old owner stops serving it, as seen on a watch of the Leases,
// and no slot is ever reconciled by two members at once.
func TestHandoverWaitsForAWarmReceiver(t *testing.T) {
	ctx := t.Context()
	const objects = 50
	// Long enough that a frozen newcomer's Lease outlives the coordinator's
	// wait before it moves slots (RebalanceQuiet, 3 s) by some seconds, and
	// that an object left to it would visibly wait for the Lease to lapse.
	const warmLeaseSeconds = 12
	warmLease := time.Duration(warmLeaseSeconds) * time.Second
	ns := createRing(t, env.Client, "e2e-warm", warmLeaseSeconds)
	journals := t.TempDir()
	replicas := map[string]*replica{}
	for _, name := range []string{"op-0", "op-1"} {
		replicas[name] = startReplica(t, ns, name, journalFlag(journals, name))
	}
	waitFor(t, 60*time.Second, "two replicas share the ring", func() (bool, string) {
		return settled(ctx, env.Client, ns, "op-0", "op-1")
	})
	createDatasets(t, env.Client, ns, objects)
	waitReconciled(t, env.Client, ns, objects, 60*time.Second)
	load := startLoad(t, env.Client, ns)
	leases := watchLeases(t, ns)

	replicas["op-2"] = startReplica(t, ns, "op-2", journalFlag(journals, "op-2"))
	waitFor(t, 60*time.Second, "op-2 holds its Lease", func() (bool, string) {
		l := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: membership.LeaseName(ringName, "op-2")}, l); err != nil {
			return false, err.Error()
		}
		return l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "op-2", "no holder yet"
	})
	// The coordinator waits a few seconds for the members to stay put
	// before it moves slots: the newcomer is frozen before it sees a move.
	replicas["op-2"].signal(syscall.SIGSTOP)
	var moving []int
	waitFor(t, 30*time.Second, "the ring moves slots to the frozen op-2", func() (bool, string) {
		sr, err := getRing(ctx, env.Client, ns)
		if err != nil {
			return false, err.Error()
		}
		moving = nil
		for _, mv := range sr.Status.Moves {
			if mv.To == "op-2" {
				slots, err := ring.ParseRanges(mv.Slots, ring.DefaultSlots)
				if err != nil {
					return false, err.Error()
				}
				moving = append(moving, slots...)
			}
		}
		slices.Sort(moving)
		return len(moving) > 0, fmt.Sprintf("%d moves", len(sr.Status.Moves))
	})
	names := createInSlots(t, env.Client, ns, "moving", moving, 5)
	readyAfter := expectWithin(t, warmLease/3, "the old owners reconcile objects created in slots moving to the frozen op-2", func() (bool, string) {
		return namesReconciled(ctx, env.Client, ns, names)
	})
	var kept []int
	for _, m := range []string{"op-0", "op-1"} {
		kept = append(kept, leaseServing(t, ns, m)...)
	}
	slices.Sort(kept)
	var dropped []int
	for _, s := range moving {
		if _, ok := slices.BinarySearch(kept, s); !ok {
			dropped = append(dropped, s)
		}
	}
	if len(dropped) > 0 {
		t.Errorf("%d of the %d slots moving to the frozen op-2 are published as served by neither op-0 nor op-1: %s",
			len(dropped), len(moving), ring.FormatRanges(dropped))
	}
	cancelled := waitFor(t, warmLease+30*time.Second, "op-2's Lease lapses and its moves are cancelled", func() (bool, string) {
		return servedWithout(ctx, env.Client, ns, "op-2")
	})
	replicas["op-2"].signal(syscall.SIGKILL)
	replicas["op-2"].wait(10 * time.Second)

	replicas["op-2"] = startReplica(t, ns, "op-2", "--journal="+filepath.Join(journals, "op-2-restarted.jsonl"))
	joined := waitFor(t, 60*time.Second, "the restarted op-2 joins", func() (bool, string) {
		return settled(ctx, env.Client, ns, "op-0", "op-1", "op-2")
	})
	events := leases.stop()
	gained := memberSlots(t, env.Client, ns, "op-2")
	if len(gained) == 0 {
		t.Fatal("op-2 owns no slot after joining")
	}
	early := coldDrops(events, "op-2", gained)
	for i, d := range early {
		if i == 5 {
			t.Errorf("... and %d more", len(early)-i)
			break
		}
		t.Errorf("%s", d)
	}

	time.Sleep(2 * time.Second)
	load.stop()
	expectReconciled(t, env.Client, ns, 60*time.Second)
	for _, r := range replicas {
		r.stop(t)
	}
	report, _ := checkJournals(t, env.Client, ns, journals, nil)
	figures(t, "warm-handover", append(append([]any{"members", "2+1", "lease", warmLease,
		"slotsMovingToFrozen", len(moving), "createdInThemReadyAfter", readyAfter, "movesCancelledAfter", cancelled,
		"joinedAfterRestart", joined, "slotsGained", len(gained), "leaseEvents", len(events), "droppedBeforeWarm", len(early)},
		load.figures()...), journalFigures(report)...)...)
}

// leaseServing returns the slots member publishes as served on its Lease.
func leaseServing(t *testing.T, ns, member string) []int {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: membership.LeaseName(ringName, member)}, l); err != nil {
		t.Fatal(err)
	}
	slots, err := ring.ParseRanges(l.Annotations[shardingv1alpha1.AnnotationServing], ring.DefaultSlots)
	if err != nil {
		t.Fatal(err)
	}
	return slots
}

// leaseEvent is what one member's Lease said, in the order of the watch.
type leaseEvent struct {
	member        string
	serving, warm []int
}

type leaseWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	events []leaseEvent
}

// watchLeases records every change of the ring's member Leases in ns until
// stopped.
func watchLeases(t *testing.T, ns string) *leaseWatch {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	w, err := wc.Watch(ctx, &coordinationv1.LeaseList{}, client.InNamespace(ns),
		client.MatchingLabels{shardingv1alpha1.LabelRing: ringName})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	lw := &leaseWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Error("the watch of the Leases ended early")
					return
				}
				l, isLease := ev.Object.(*coordinationv1.Lease)
				if !isLease || ev.Type == watch.Deleted {
					continue
				}
				serving, _ := ring.ParseRanges(l.Annotations[shardingv1alpha1.AnnotationServing], ring.DefaultSlots)
				warm, _ := ring.ParseRanges(l.Annotations[shardingv1alpha1.AnnotationWarm], ring.DefaultSlots)
				lw.mu.Lock()
				lw.events = append(lw.events, leaseEvent{member: l.Labels[membership.LabelMember], serving: serving, warm: warm})
				lw.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { lw.stop() })
	return lw
}

// stop ends the watch and returns what it saw.
func (lw *leaseWatch) stop() []leaseEvent {
	lw.cancel()
	<-lw.done
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return slices.Clone(lw.events)
}

// coldDrops describes every time another member stopped publishing one of
// slots (those receiver gained) while receiver's Lease did not list it as
// warm: a handover that left the slot to a receiver that had not cached it.
func coldDrops(events []leaseEvent, receiver string, slots []int) []string {
	serving := map[string][]int{}
	var warm []int
	var out []string
	for i, e := range events {
		if e.member == receiver {
			warm = e.warm
			continue
		}
		before, seen := serving[e.member]
		serving[e.member] = e.serving
		if !seen {
			continue
		}
		for _, s := range before {
			_, still := slices.BinarySearch(e.serving, s)
			_, gained := slices.BinarySearch(slots, s)
			_, isWarm := slices.BinarySearch(warm, s)
			if !still && gained && !isWarm {
				out = append(out, fmt.Sprintf("event %d: %s stopped serving slot %d, which %s gained, while %s's Lease listed warm only %s",
					i, e.member, s, receiver, receiver, ring.FormatRanges(warm)))
			}
		}
	}
	return out
}
