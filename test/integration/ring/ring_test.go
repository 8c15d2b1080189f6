package ring

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/wirecount"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

const leaseSeconds = 6

// writeCounter counts the writes each member sends to the API server, by
// resource, so that a test can report what a rebalance costs.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet {
			w.mu.Lock()
			w.counts[wirecount.Resource(req.URL.Path)]++
			w.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

func (w *writeCounter) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.counts {
		out[k] = v
	}
	return out
}

// member is one replica of the operator: a manager with its ring membership.
type member struct {
	name    string
	metrics *prometheus.Registry
	mgr     ctrl.Manager
	ring    *sharding.Ring
	cancel  context.CancelFunc
	done    chan error
	run     func() // starts the manager; start calls it, prepare leaves it to the caller
}

func (m *member) elected() bool {
	select {
	case <-m.mgr.Elected():
		return true
	default:
		return false
	}
}

// cluster is a ring and its running members.
type cluster struct {
	t       *testing.T
	ns      string
	ring    string
	writes  *writeCounter
	mu      sync.Mutex
	members map[string]*member
}

func newCluster(t *testing.T, ns string, slots int32) *cluster {
	t.Helper()
	ctx := t.Context()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: "largedata", Namespace: ns},
		Spec: shardingv1alpha1.ShardRingSpec{
			Slots: slots, LeaseDurationSeconds: leaseSeconds,
			Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "data.kubeshard.dev", Resource: "largedata"},
			}},
		},
	}
	if err := env.Client.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ns: ns, ring: sr.Name, writes: &writeCounter{counts: map[string]int{}}, members: map[string]*member{}}
	t.Cleanup(func() {
		for _, m := range c.running() {
			c.stop(m.name)
		}
	})
	return c
}

// prepare builds a member without starting its manager: call its run.
func (c *cluster) prepare(name string) *member {
	c.t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = c.writes.wrap
	opts := ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{c.ns: {}}},
		// Several managers run in this one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	// The coordinator's election timed by the ring's 6 s lease.
	if err := sharding.ElectCoordinator(&opts, cfg, c.get()); err != nil {
		c.t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	r, err := sharding.New(ctx, mgr, sharding.Options{
		Ring: c.ring, Namespace: c.ns, Member: name,
		RebalanceQuiet: time.Second, DrainTimeout: 5 * time.Second,
		Registerer: reg,
	})
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	m := &member{name: name, metrics: reg, mgr: mgr, ring: r, cancel: cancel, done: make(chan error, 1)}
	m.run = func() { go func() { m.done <- mgr.Start(ctx) }() }
	c.mu.Lock()
	c.members[name] = m
	c.mu.Unlock()
	return m
}

// start builds and starts a new member.
func (c *cluster) start(name string) *member {
	c.t.Helper()
	m := c.prepare(name)
	m.run()
	return m
}

// stop shuts a member down the way SIGTERM does: it leaves gracefully.
func (c *cluster) stop(name string) {
	c.mu.Lock()
	m := c.members[name]
	delete(c.members, name)
	c.mu.Unlock()
	if m == nil {
		return
	}
	m.cancel()
	select {
	case err := <-m.done:
		if err != nil {
			c.t.Errorf("member %s stopped with %v", name, err)
		}
	case <-time.After(30 * time.Second):
		c.t.Errorf("member %s did not stop", name)
	}
}

func (c *cluster) running() []*member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ms []*member
	for _, m := range c.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return strings.Compare(a.name, b.name) })
	return ms
}

func (c *cluster) get() *shardingv1alpha1.ShardRing {
	c.t.Helper()
	sr := &shardingv1alpha1.ShardRing{}
	if err := env.Client.Get(c.t.Context(), types.NamespacedName{Namespace: c.ns, Name: c.ring}, sr); err != nil {
		c.t.Fatal(err)
	}
	return sr
}

// settled reports whether the ring is Ready with exactly the given members,
// and every member serves exactly the slots the status gives it.
func (c *cluster) settled(names ...string) (bool, string) {
	sr := c.get()
	ready := meta(sr, shardingv1alpha1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue {
		return false, fmt.Sprintf("Ready=%v", ready)
	}
	var got []string
	for _, ms := range sr.Status.Members {
		got = append(got, ms.Name)
	}
	if !slices.Equal(got, names) {
		return false, fmt.Sprintf("members %v, want %v", got, names)
	}
	table, err := assignment.FromStatus(&sr.Status, int(sr.Spec.Slots))
	if err != nil {
		return false, err.Error()
	}
	for _, m := range c.running() {
		if want, served := table.Servable(m.name), m.ring.Agent().Gate().Served(); !slices.Equal(want, served) {
			return false, fmt.Sprintf("%s serves %d slots, owns %d", m.name, len(served), len(want))
		}
	}
	return true, ""
}

func meta(sr *shardingv1alpha1.ShardRing, typ string) *metav1.Condition {
	for i := range sr.Status.Conditions {
		if sr.Status.Conditions[i].Type == typ {
			return &sr.Status.Conditions[i]
		}
	}
	return nil
}

// watchInvariant checks, every few milliseconds until the test ends, that no
// slot may be reconciled by two members at once.
func (c *cluster) watchInvariant(slots int) {
	var stop atomic.Bool
	done := make(chan struct{})
	c.t.Cleanup(func() { stop.Store(true); <-done })
	go func() {
		defer close(done)
		for !stop.Load() {
			ms := c.running()
			for s := range slots {
				var who []string
				for _, m := range ms {
					if m.ring.Agent().Gate().IsServed(s) && m.ring.Agent().Member().Valid() {
						who = append(who, m.name)
					}
				}
				if len(who) > 1 {
					c.t.Errorf("slot %d may be reconciled by %v at once", s, who)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

func TestMembersShareSlotsThroughJoinLeaveAndFailover(t *testing.T) {
	c := newCluster(t, "ring-scale", 1024)
	c.watchInvariant(1024)

	for _, name := range []string{"op-0", "op-1", "op-2", "op-3"} {
		c.start(name)
	}
	took := testenv.Eventually(t, 60*time.Second, "four members settle", func() (bool, string) { return c.settled("op-0", "op-1", "op-2", "op-3") })
	t.Logf("4 members started and settled in %s", took)
	for _, ms := range c.get().Status.Members {
		if ms.SlotCount != 256 {
			t.Errorf("%s owns %d slots, want 256", ms.Name, ms.SlotCount)
		}
	}

	// What a quiet ring writes in a few seconds: Lease renewals.
	quiet := 5 * time.Second
	before := c.writes.snapshot()
	time.Sleep(quiet)
	baseline := diff(c.writes.snapshot(), before)

	// Join: 4 -> 5 members.
	before = c.writes.snapshot()
	start := time.Now()
	c.start("op-4")
	var leaseSeen time.Duration
	testenv.Eventually(t, 10*time.Second, "op-4's Lease", func() (bool, string) {
		err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: c.ns, Name: membership.LeaseName(c.ring, "op-4")}, &coordinationv1.Lease{})
		leaseSeen = time.Since(start)
		return err == nil, fmt.Sprint(err)
	})
	assigned := testenv.Eventually(t, 30*time.Second, "op-4 owns its share", func() (bool, string) {
		sr := c.get()
		for _, ms := range sr.Status.Members {
			if ms.Name == "op-4" && sr.Status.MovingSlots == 0 && ms.SlotCount >= 204 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("moving %d", sr.Status.MovingSlots)
	})
	testenv.Eventually(t, 30*time.Second, "five members settle", func() (bool, string) {
		return c.settled("op-0", "op-1", "op-2", "op-3", "op-4")
	})
	rebalance := time.Since(start)
	writes := diff(c.writes.snapshot(), before)
	renewals := float64(baseline["leases"]) * rebalance.Seconds() / quiet.Seconds()
	t.Logf("join 4 -> 5 (P=1024): Lease seen after %s, all its slots assigned %s after it, settled after %s",
		leaseSeen.Round(time.Millisecond), (assigned - leaseSeen).Round(time.Millisecond), rebalance.Round(time.Millisecond))
	t.Logf("join 4 -> 5 (P=1024): writes during the rebalance %v; a quiet ring writes about %.0f Lease renewals in that time",
		writes, renewals)
	if got := writes["largedata"]; got != 0 {
		t.Errorf("the rebalance wrote %d LargeData objects, want 0", got)
	}

	// Graceful leave: the coordinator reassigns at once, without waiting for
	// the Lease to expire.
	start = time.Now()
	c.stop("op-1")
	testenv.Eventually(t, 30*time.Second, "four members settle after op-1 left", func() (bool, string) {
		return c.settled("op-0", "op-2", "op-3", "op-4")
	})
	left := time.Since(start)
	t.Logf("graceful leave: slots of op-1 served again %s after it was stopped", left.Round(time.Millisecond))
	if left >= leaseSeconds*time.Second {
		t.Errorf("a graceful leave took %s, as long as a Lease expiry (%ds): the release was not used", left, leaseSeconds)
	}
	assertEvent(t, c.ns, "MemberLeft")

	// Coordinator failover in the middle of a handover. A handover can
	// complete within milliseconds, so the test watches the ring rather than
	// polls it, and stops the coordinator at the first status with a move to
	// the newcomer.
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(t.Context(), &shardingv1alpha1.ShardRingList{}, client.InNamespace(c.ns))
	if err != nil {
		t.Fatal(err)
	}
	c.start("op-5")
	inProgress := false
	for timeout := time.After(20 * time.Second); !inProgress; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the ShardRing watch ended")
			}
			if sr, isRing := ev.Object.(*shardingv1alpha1.ShardRing); isRing {
				for _, mv := range sr.Status.Moves {
					inProgress = inProgress || mv.To == "op-5"
				}
			}
		case <-timeout:
			t.Fatal("no handover to op-5 within 20s of its start")
		}
	}
	w.Stop()
	var leader string
	for _, m := range c.running() {
		if m.elected() {
			leader = m.name
		}
	}
	if leader == "" || leader == "op-5" {
		t.Fatalf("coordinator is %q; want one of the older members", leader)
	}
	start = time.Now()
	c.stop(leader)
	var rest []string
	for _, m := range c.running() {
		rest = append(rest, m.name)
	}
	testenv.Eventually(t, 60*time.Second, "the ring settles under a new coordinator", func() (bool, string) { return c.settled(rest...) })
	failover := time.Since(start)
	t.Logf("coordinator %s stopped mid-handover; the ring settled with %v after %s", leader, rest, failover.Round(time.Millisecond))
	// A coordinator that stops releases its election at once: the next one
	// takes over within a retry period, not after its lease runs out.
	if failover >= leaseSeconds*time.Second {
		t.Errorf("the ring settled %s after the coordinator stopped, as long as its election lease (%ds): the election was not released",
			failover.Round(time.Millisecond), leaseSeconds)
	}
}

func diff(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func assertEvent(t *testing.T, ns, reason string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "event "+reason, func() (bool, string) {
		events := &eventsv1.EventList{}
		if err := env.Client.List(t.Context(), events, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range events.Items {
			if e.Reason == reason && e.Regarding.Kind == "ShardRing" {
				return true, ""
			}
			seen = append(seen, e.Reason)
		}
		return false, fmt.Sprintf("events %v", seen)
	})
}

// ghost holds a member Lease from the test: it renews, but never serves and
// never acknowledges anything, like a member stuck in a long reconcile.
type ghost struct {
	stop chan struct{}
	done chan struct{}
}

func startGhost(t *testing.T, ns, ring, name string) *ghost {
	t.Helper()
	holder := name
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: membership.LeaseName(ring, name), Namespace: ns,
			Labels:      map[string]string{shardingv1alpha1.LabelRing: ring, membership.LabelMember: name},
			Annotations: map[string]string{shardingv1alpha1.AnnotationServing: "", shardingv1alpha1.AnnotationEpoch: "0"},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: ptr.To[int32](leaseSeconds)},
	}
	if err := env.Client.Create(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
	g := &ghost{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for {
			select {
			case <-g.stop:
				return
			case <-time.After(time.Second):
			}
			now := metav1.NewMicroTime(time.Now())
			lease.Spec.RenewTime = &now
			_ = env.Client.Update(context.Background(), lease)
		}
	}()
	return g
}

func (g *ghost) die() { close(g.stop); <-g.done }

func TestAMoveWaitsForTheOwnerToReleaseOrExpire(t *testing.T) {
	c := newCluster(t, "ring-ghost", 64)
	c.watchInvariant(64)
	c.start("op-0")
	testenv.Eventually(t, 30*time.Second, "op-0 settles", func() (bool, string) { return c.settled("op-0") })

	// The ghost joins: slots move to it (op-0 releases them), but it never
	// serves them.
	g := startGhost(t, c.ns, c.ring, "ghost")
	testenv.Eventually(t, 30*time.Second, "the ghost owns its share", func() (bool, string) {
		sr := c.get()
		for _, ms := range sr.Status.Members {
			if ms.Name == "ghost" && ms.SlotCount == 32 && sr.Status.MovingSlots == 0 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("members %+v moves %v", sr.Status.Members, sr.Status.Moves)
	})

	// A third member joins: slots should move from the ghost to it, but the
	// ghost never acknowledges, so they must stay put and op-1 must not serve
	// them.
	c.start("op-1")
	var pending []string
	testenv.Eventually(t, 20*time.Second, "moves away from the ghost", func() (bool, string) {
		pending = nil
		for _, mv := range c.get().Status.Moves {
			if mv.From == "ghost" {
				pending = append(pending, mv.Slots)
			}
		}
		return len(pending) > 0, ""
	})
	time.Sleep(3 * time.Second)
	sr := c.get()
	stillPending := false
	for _, mv := range sr.Status.Moves {
		if mv.From == "ghost" {
			stillPending = true
		}
	}
	if !stillPending {
		t.Fatalf("moves away from a live member that never acknowledged completed: %+v", sr.Status)
	}
	table, err := assignment.FromStatus(&sr.Status, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.running() {
		for _, s := range m.ring.Agent().Gate().Served() {
			if table.Owner[s] == "ghost" {
				t.Errorf("%s serves slot %d, still owned by the unresponsive ghost", m.name, s)
			}
		}
	}

	// The ghost dies: once its Lease expires, by the coordinator's clock,
	// its slots go to the live members.
	g.die()
	died := time.Now()
	testenv.Eventually(t, 30*time.Second, "the ring settles without the ghost", func() (bool, string) { return c.settled("op-0", "op-1") })
	took := time.Since(died)
	t.Logf("the ghost's slots were served again %s after it stopped renewing (lease %ds; its last renewal was up to 1s earlier)", took.Round(time.Millisecond), leaseSeconds)
	if took > (leaseSeconds+5)*time.Second {
		t.Errorf("an expired member's slots took %s to be served again, want at most lease duration + 5s", took)
	}
	assertEvent(t, c.ns, "MemberExpired")
}

func TestARingThatCannotBeCoordinatedSaysWhy(t *testing.T) {
	c := newCluster(t, "ring-small", 2)
	for _, name := range []string{"op-0", "op-1", "op-2"} {
		c.start(name)
	}
	testenv.Eventually(t, 30*time.Second, "Ready=False with the reason", func() (bool, string) {
		ready := meta(c.get(), shardingv1alpha1.ConditionReady)
		if ready != nil && ready.Reason == "InvalidRing" && strings.Contains(ready.Message, "more members than slots") {
			return true, ""
		}
		return false, fmt.Sprintf("Ready=%+v", ready)
	})
	for _, m := range c.running() {
		select {
		case err := <-m.done:
			t.Errorf("member %s exited (%v); an unworkable ring must not crash the operator", m.name, err)
			m.done <- err
		default:
		}
	}

}

// rebalances returns how many times the coordinators changed the target
// assignment, from their kubeshard_ring_rebalances_total.
func (c *cluster) rebalances() float64 {
	const name = "kubeshard_ring_rebalances_total"
	total := 0.0
	for _, m := range c.running() {
		// Only a member that has coordinated the ring exports the counter.
		if n, err := testutil.GatherAndCount(m.metrics, name); err != nil {
			c.t.Fatal(err)
		} else if n > 0 {
			total += testenv.MetricValue(c.t, m.metrics, name, nil)
		}
	}
	return total
}

// A StatefulSet scaling from 3 to 10 starts its pods within a moment of each
// other: the coordinator waits for membership to settle and moves slots once
// or twice, not once per new member.
func TestAScaleUpFrom3To10IsOneOrTwoRebalances(t *testing.T) {
	c := newCluster(t, "ring-burst", 1024)
	c.watchInvariant(1024)
	names := []string{"op-0", "op-1", "op-2"}
	for _, name := range names {
		c.start(name)
	}
	testenv.Eventually(t, 60*time.Second, "three members settle", func() (bool, string) { return c.settled(names...) })
	var leader *member
	for _, m := range c.running() {
		if m.elected() {
			leader = m
		}
	}
	if leader == nil {
		t.Fatal("no coordinator")
	}
	before := c.rebalances()

	// The managers are built first, so that on a slow machine building
	// them does not spread the joins beyond the quiet period.
	var joining []*member
	for i := 3; i < 10; i++ {
		name := fmt.Sprintf("op-%d", i)
		names = append(names, name)
		joining = append(joining, c.prepare(name))
	}
	for _, m := range joining {
		m.run()
		time.Sleep(100 * time.Millisecond) // pods of one scale-up start a little apart
	}
	slices.Sort(names)
	took := testenv.Eventually(t, 60*time.Second, "ten members settle", func() (bool, string) { return c.settled(names...) })
	got := c.rebalances() - before
	t.Logf("scale 3 -> 10: %v rebalances, settled %s after the last member started", got, took.Round(time.Millisecond))
	if got < 1 || got > 2 {
		t.Errorf("scaling from 3 to 10 members took %v rebalances, want 1 or 2", got)
	}
}
