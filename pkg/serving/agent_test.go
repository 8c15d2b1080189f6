package serving

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/membership"
)

// newTestAgent returns the agent of member m-0 of a ring of four slots, m-0
// owning 0-1 and m-1 owning 2-3, with its Lease acquired and its slots open.
func newTestAgent(t *testing.T) (*Agent, *clocktesting.FakeClock) {
	t.Helper()
	a, clock := newTestAgentWith(t, nil)
	if _, err := a.Reconcile(t.Context(), reconcile.Request{NamespacedName: a.opts.Ring}); err != nil {
		t.Fatalf("following the assignment: %v", err)
	}
	return a, clock
}

// newTestAgentWith is newTestAgent before its first follow, with onGain as
// its OnGain.
func newTestAgentWith(t *testing.T, onGain func(context.Context, []int) error) (*Agent, *clocktesting.FakeClock) {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(coordinationv1.AddToScheme(scheme))
	utilruntime.Must(shardingv1alpha1.AddToScheme(scheme))
	key := types.NamespacedName{Namespace: "ops", Name: "ring"}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Status: shardingv1alpha1.ShardRingStatus{Epoch: 1, Members: []shardingv1alpha1.MemberStatus{
			{Name: "m-0", State: shardingv1alpha1.MemberReady, Slots: "0-1"},
			{Name: "m-1", State: shardingv1alpha1.MemberReady, Slots: "2-3"},
		}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(sr).WithObjects(sr).Build()
	clock := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a, err := NewAgent(c, c, Options{Ring: key, Member: "m-0", Slots: 4, LeaseDuration: 15 * time.Second, Clock: clock, OnGain: onGain}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Member().PublishServing(t.Context()); err != nil {
		t.Fatalf("acquiring the Lease: %v", err)
	}
	return a, clock
}

// newRingStore returns a fake API server holding the ShardRing ops/ring, and
// a function that records one epoch of its status: each member owns the
// slots owned gives it (none: it is left out), with moves pending.
func newRingStore(t *testing.T) (client.Client, types.NamespacedName, func(epoch int64, owned map[string]string, moves ...shardingv1alpha1.SlotMove)) {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(coordinationv1.AddToScheme(scheme))
	utilruntime.Must(shardingv1alpha1.AddToScheme(scheme))
	key := types.NamespacedName{Namespace: "ops", Name: "ring"}
	sr := &shardingv1alpha1.ShardRing{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(sr).WithObjects(sr).Build()
	set := func(epoch int64, owned map[string]string, moves ...shardingv1alpha1.SlotMove) {
		t.Helper()
		cur := &shardingv1alpha1.ShardRing{}
		if err := c.Get(t.Context(), key, cur); err != nil {
			t.Fatal(err)
		}
		cur.Status = shardingv1alpha1.ShardRingStatus{Epoch: epoch, Moves: moves}
		for _, m := range slices.Sorted(maps.Keys(owned)) {
			if owned[m] != "" {
				cur.Status.Members = append(cur.Status.Members, shardingv1alpha1.MemberStatus{Name: m, State: shardingv1alpha1.MemberReady, Slots: owned[m]})
			}
		}
		if err := c.Status().Update(t.Context(), cur); err != nil {
			t.Fatal(err)
		}
	}
	return c, key, set
}

// A request for a slot the member serves must not be lost while its Lease
// renewal is late: the renewal may still succeed, and then nothing else would
// bring the request back. A request for another member's slot is dropped.
func TestAdmitRetriesOwnSlotsWhileTheLeaseIsOverdue(t *testing.T) {
	a, clock := newTestAgent(t)
	ctx := t.Context()
	leave, retry, ok := a.Admit(0)
	if !ok || retry != 0 {
		t.Fatalf("own slot with a fresh Lease: admitted %v, retry after %s; want admitted", ok, retry)
	}
	leave()
	if _, retry, ok := a.Admit(2); ok || retry != 0 {
		t.Fatalf("another member's slot: admitted %v, retry after %s; want dropped", ok, retry)
	}

	// The renewal is late: past the renew deadline, not yet fenced.
	clock.Step(a.opts.RenewDeadline + time.Second)
	if _, retry, ok := a.Admit(0); ok || retry <= 0 {
		t.Fatalf("own slot with an overdue Lease: admitted %v, retry after %s; want retried later", ok, retry)
	}
	if _, retry, ok := a.Admit(2); ok || retry != 0 {
		t.Fatalf("another member's slot with an overdue Lease: admitted %v, retry after %s; want dropped", ok, retry)
	}

	// A renewal that finds the deadline passed fences the member: from then
	// on it serves nothing and retries nothing.
	_ = a.Member().PublishServing(ctx)
	if !a.Member().Fenced() {
		t.Fatal("the member did not fence itself after its renew deadline")
	}
	if _, retry, ok := a.Admit(0); ok || retry != 0 {
		t.Fatalf("own slot after fencing: admitted %v, retry after %s; want dropped", ok, retry)
	}
}

// A reconcile's context ends when the member's Lease lapses, not only when
// the renewal loop gets round to fencing: after a pause, the reconcile's next
// request must fail. Renewals in time keep it alive.
func TestGuardEndsTheReconcileWhenTheLeaseLapses(t *testing.T) {
	a, clock := newTestAgent(t)
	ctx, cancel := a.Guard(t.Context())
	defer cancel()
	armed := func() {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, "the guard sets a timer", func() (bool, string) {
			return clock.HasWaiters(), "no timer on the clock"
		})
	}
	armed()

	// Renewed halfway: passing the first deadline must not end the reconcile.
	clock.Step(a.opts.RenewDeadline / 2)
	if err := a.Member().PublishServing(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Step(a.opts.RenewDeadline/2 + time.Second)
	armed() // the guard looked, found the renewal and waits for the next deadline
	if err := ctx.Err(); err != nil {
		t.Fatalf("the reconcile's context ended although the Lease was renewed in time: %v", context.Cause(ctx))
	}

	// No renewal until the next deadline: the context ends, saying why.
	clock.Step(a.opts.RenewDeadline)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the reconcile's context did not end after the Lease lapsed")
	}
	if cause := context.Cause(ctx); !errors.Is(cause, ErrLeaseLapsed) {
		t.Fatalf("cause %v, want ErrLeaseLapsed", cause)
	}
}

// When the cache fails to set up gained slots (it did not sync in time), the
// next follow of the same assignment must set them up again: otherwise the
// slots are open but their objects are never delivered, and nothing is
// reconciled there again.
func TestFollowRetriesAFailedGain(t *testing.T) {
	var calls [][]int
	fail := true
	a, _ := newTestAgentWith(t, func(_ context.Context, slots []int) error {
		calls = append(calls, slots)
		if fail {
			return errors.New("the slot group did not sync in time")
		}
		return nil
	})
	req := reconcile.Request{NamespacedName: a.opts.Ring}
	if _, err := a.Reconcile(t.Context(), req); err == nil {
		t.Fatal("a failed OnGain was not reported")
	}
	fail = false
	if _, err := a.Reconcile(t.Context(), req); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if _, err := a.Reconcile(t.Context(), req); err != nil { // nothing left to set up
		t.Fatal(err)
	}
	if len(calls) != 2 || fmt.Sprint(calls[1]) != "[0 1]" {
		t.Fatalf("OnGain calls %v, want [[0 1] [0 1]]: the failed slots retried once, then nothing", calls)
	}
}

// A rebalance gives a joining member its slots in several epochs, one per
// member that hands some over. Each OnGain is a list of the kind by the cache,
// which without the API server's watch cache reads every object of the kind:
// the member must set up the slots of one rebalance in one call, not one per
// epoch, yet not wait without bound for a handover that does not come.
func TestFollowGathersTheSlotsOfOneRebalance(t *testing.T) {
	c, key, setStatus := newRingStore(t)
	var calls []string
	clock := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	newAgent := func(window time.Duration) *Agent {
		t.Helper()
		calls = nil
		a, err := NewAgent(c, c, Options{Ring: key, Member: "m-0", Slots: 6, LeaseDuration: 15 * time.Second, Clock: clock, GainWindow: window,
			OnGain: func(_ context.Context, slots []int) error { calls = append(calls, fmt.Sprint(slots)); return nil }}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Member().PublishServing(t.Context()); err != nil {
			t.Fatalf("acquiring the Lease: %v", err)
		}
		return a
	}
	follow := func(a *Agent) time.Duration {
		t.Helper()
		if err := a.Member().PublishServing(t.Context()); err != nil { // renews the Lease
			t.Fatal(err)
		}
		res, err := a.Reconcile(t.Context(), reconcile.Request{NamespacedName: key})
		if err != nil {
			t.Fatal(err)
		}
		return res.RequeueAfter
	}
	served := func(a *Agent, want string) {
		t.Helper()
		if got := fmt.Sprint(a.Gate().Served()); got != want {
			t.Fatalf("served %s, want %s: holding back OnGain must not hold back the handover", got, want)
		}
	}
	// The join of m-0: m-1 hands over 2-3 and m-2 hands over 4-5.
	moving := func(epoch int64) []shardingv1alpha1.SlotMove {
		return []shardingv1alpha1.SlotMove{{Slots: "2-3", Epoch: epoch, From: "m-1", To: "m-0"}, {Slots: "4-5", Epoch: epoch, From: "m-2", To: "m-0"}}
	}

	// One call for the whole rebalance.
	{
		setStatus(1, map[string]string{"m-0": "0-1", "m-1": "2-3", "m-2": "4-5"}, moving(1)...)
		a := newAgent(0)
		if hold := follow(a); hold != DefaultGainWindow || len(calls) != 0 {
			t.Fatalf("slots 0-1 with 2-5 on their way: OnGain calls %v, held back %s; want none, held back %s", calls, hold, DefaultGainWindow)
		}
		served(a, "[0 1]")
		clock.Step(3 * time.Second)
		setStatus(2, map[string]string{"m-0": "0-3", "m-2": "4-5"}, moving(1)[1])
		if hold := follow(a); hold != DefaultGainWindow-3*time.Second || len(calls) != 0 {
			t.Fatalf("2-3 arrived, 4-5 on their way: OnGain calls %v, held back %s; want none, the rest of the window", calls, hold)
		}
		served(a, "[0 1 2 3]")
		setStatus(3, map[string]string{"m-0": "0-5"})
		if hold := follow(a); hold != 0 || fmt.Sprint(calls) != "[[0 1 2 3 4 5]]" {
			t.Fatalf("every slot arrived: OnGain calls %v, held back %s; want one call for 0-5", calls, hold)
		}
	}

	// A handover that does not come within the window.
	{
		setStatus(4, map[string]string{"m-0": "0-1", "m-1": "2-3", "m-2": "4-5"}, moving(4)...)
		a := newAgent(0)
		follow(a)
		setStatus(5, map[string]string{"m-0": "0-3", "m-2": "4-5"}, moving(4)[1])
		clock.Step(DefaultGainWindow / 2)
		follow(a)
		clock.Step(DefaultGainWindow / 2)
		if hold := follow(a); hold != 0 || fmt.Sprint(calls) != "[[0 1 2 3]]" {
			t.Fatalf("window spent with 4-5 still on their way: OnGain calls %v, held back %s; want 0-3 set up now", calls, hold)
		}
		setStatus(6, map[string]string{"m-0": "0-5"})
		if hold := follow(a); hold != 0 || fmt.Sprint(calls) != "[[0 1 2 3] [4 5]]" {
			t.Fatalf("4-5 arrived late: OnGain calls %v, held back %s; want them set up at once", calls, hold)
		}
	}

	// A hold that ended without a gain (the slots went elsewhere) leaves no
	// spent window behind for the next rebalance.
	{
		setStatus(9, map[string]string{"m-0": "0-1", "m-1": "2-3", "m-2": "4-5"}, moving(9)...)
		a := newAgent(0)
		follow(a)
		setStatus(10, map[string]string{"m-1": "0-3", "m-2": "4-5"})
		follow(a)
		clock.Step(DefaultGainWindow / 2)
		follow(a)
		clock.Step(DefaultGainWindow / 2)
		setStatus(11, map[string]string{"m-0": "0-1", "m-1": "2-3", "m-2": "4-5"}, moving(11)...)
		if hold := follow(a); hold != DefaultGainWindow || len(calls) != 0 {
			t.Fatalf("a new rebalance after an abandoned hold: OnGain calls %v, held back %s; want none, a whole window", calls, hold)
		}
	}

	// No window.
	{
		setStatus(12, map[string]string{"m-0": "0-1", "m-1": "2-3", "m-2": "4-5"}, moving(12)...)
		a := newAgent(-1)
		follow(a)
		setStatus(13, map[string]string{"m-0": "0-5"})
		follow(a)
		if fmt.Sprint(calls) != "[[0 1] [2 3 4 5]]" {
			t.Fatalf("GainWindow -1: OnGain calls %v; want one per batch", calls)
		}
	}
}

// fakeWarmer records what it is asked to warm and cool; warm says which
// slots it has cached.
type fakeWarmer struct {
	asked, cooled []string
	warm          []int
	fail          error // returned by Warm
}

func (f *fakeWarmer) Warm(_ context.Context, slots []int) error {
	f.asked = append(f.asked, fmt.Sprint(slots))
	return f.fail
}

func (f *fakeWarmer) Warmed(slots []int) []int {
	var out []int
	for _, s := range slots {
		if slices.Contains(f.warm, s) {
			out = append(out, s)
		}
	}
	return out
}

func (f *fakeWarmer) Cool(slots []int) { f.cooled = append(f.cooled, fmt.Sprint(slots)) }

// A warm handover: the member giving slots away serves them until the
// receiver has cached them, so that they are never unserved for the time the
// receiver's list takes.
func TestAGivenSlotIsServedUntilItsReceiverIsWarm(t *testing.T) {
	c, key, set := newRingStore(t)
	ctx := t.Context()
	setStatus := func(epoch int64, giver, receiver string, moves ...shardingv1alpha1.SlotMove) {
		t.Helper()
		set(epoch, map[string]string{"giver": giver, "receiver": receiver}, moves...)
	}
	clock := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	metrics := map[string]*Metrics{}
	gauge := func(member, name string) float64 {
		t.Helper()
		m := metrics[member]
		g := map[string]*prometheus.GaugeVec{"incoming": m.incoming, "warm": m.warm, "kept": m.kept}[name]
		return testutil.ToFloat64(g.WithLabelValues("ring", member))
	}
	newAgent := func(name string, warmer Warmer) *Agent {
		t.Helper()
		opts := Options{Ring: key, Member: name, Slots: 6, LeaseDuration: 15 * time.Second, Clock: clock, GainWindow: -1,
			OnGain: func(context.Context, []int) error { return nil }}
		if warmer != nil {
			opts.Warmer = warmer
		}
		m, err := NewMetrics(prometheus.NewRegistry(), name)
		if err != nil {
			t.Fatal(err)
		}
		metrics[name] = m
		a, err := NewAgent(c, c, opts, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Member().PublishServing(ctx); err != nil {
			t.Fatalf("acquiring the Lease: %v", err)
		}
		return a
	}
	follow := func(a *Agent) time.Duration {
		t.Helper()
		if err := a.Member().PublishServing(ctx); err != nil { // renews the Lease
			t.Fatal(err)
		}
		res, err := a.Reconcile(ctx, reconcile.Request{NamespacedName: key})
		if err != nil {
			t.Fatal(err)
		}
		return res.RequeueAfter
	}
	published := func(member, annotation string) string {
		t.Helper()
		lease := &coordinationv1.Lease{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: "ring-" + member}, lease); err != nil {
			t.Fatal(err)
		}
		v, ok := lease.Annotations[annotation]
		if !ok {
			return "(none)"
		}
		return v
	}
	move := func(epoch int64) shardingv1alpha1.SlotMove {
		return shardingv1alpha1.SlotMove{Slots: "2-3", Epoch: epoch, From: "giver", To: "receiver"}
	}
	var epoch int64
	start := func(warmer Warmer) (giver, receiver *Agent) {
		t.Helper()
		epoch++
		setStatus(epoch, "0-3", "4-5")
		giver, receiver = newAgent("giver", nil), newAgent("receiver", warmer)
		follow(giver)
		follow(receiver)
		epoch++
		setStatus(epoch, "0-3", "4-5", move(epoch))
		return giver, receiver
	}

	{
		w := &fakeWarmer{}
		giver, receiver := start(w)
		if again := follow(receiver); again != membership.DefaultRetryPeriod || fmt.Sprint(w.asked) != "[[2 3]]" {
			t.Fatalf("receiver of a pending move: warmed %v, looks again after %s; want 2-3 warmed and another look", w.asked, again)
		}
		if got := published("receiver", shardingv1alpha1.AnnotationWarm); got != "" {
			t.Fatalf("receiver's Lease says %q warm before its cache has them", got)
		}
		if again := follow(giver); again <= 0 || fmt.Sprint(giver.Gate().Served()) != "[0 1 2 3]" ||
			published("giver", shardingv1alpha1.AnnotationServing) != "0-3" {
			t.Fatalf("giver before the receiver is warm: serves %v, publishes %q, looks again after %s; want 0-3 served and published, another look",
				giver.Gate().Served(), published("giver", shardingv1alpha1.AnnotationServing), again)
		}

		if in, warm, kept := gauge("receiver", "incoming"), gauge("receiver", "warm"), gauge("giver", "kept"); in != 2 || warm != 0 || kept != 2 {
			t.Fatalf("metrics while warming: receiver %v incoming, %v warm; giver %v kept; want 2, 0, 2", in, warm, kept)
		}

		w.warm = []int{2, 3}
		if again := follow(receiver); again != 0 || published("receiver", shardingv1alpha1.AnnotationWarm) != "2-3" {
			t.Fatalf("receiver with 2-3 cached: Lease says %q warm, looks again after %s; want 2-3, no more looks",
				published("receiver", shardingv1alpha1.AnnotationWarm), again)
		}
		if fmt.Sprint(receiver.Gate().Served()) != "[4 5]" {
			t.Fatalf("receiver serves %v while the move is pending; want 4-5 only", receiver.Gate().Served())
		}
		follow(giver)
		if fmt.Sprint(giver.Gate().Served()) != "[0 1]" || published("giver", shardingv1alpha1.AnnotationServing) != "0-1" {
			t.Fatalf("giver once the receiver is warm: serves %v, publishes %q; want 0-1", giver.Gate().Served(), published("giver", shardingv1alpha1.AnnotationServing))
		}
		if warm, kept := gauge("receiver", "warm"), gauge("giver", "kept"); warm != 2 || kept != 0 {
			t.Fatalf("metrics once warm: receiver %v warm, giver %v kept; want 2, 0", warm, kept)
		}
		epoch++
		setStatus(epoch, "0-1", "2-5")
		follow(receiver)
		if fmt.Sprint(receiver.Gate().Served()) != "[2 3 4 5]" || len(receiver.warming) != 0 || len(w.cooled) != 0 {
			t.Fatalf("receiver after the move: serves %v, still warming %v, cooled %v; want 2-5 served, nothing warming or cooled",
				receiver.Gate().Served(), receiver.warming, w.cooled)
		}
	}

	// A receiver that never gets warm holds the move up for WarmupTimeout.
	{
		giver, receiver := start(&fakeWarmer{})
		follow(receiver)
		follow(giver)
		for waited := time.Duration(0); waited < DefaultWarmupTimeout-time.Second; waited += time.Second {
			clock.Step(time.Second) // renewing on the way
			follow(receiver)
			follow(giver)
			if fmt.Sprint(giver.Gate().Served()) != "[0 1 2 3]" {
				t.Fatalf("giver %s into the move serves %v; want 0-3 until the timeout", waited+time.Second, giver.Gate().Served())
			}
		}
		clock.Step(time.Second)
		follow(giver)
		if fmt.Sprint(giver.Gate().Served()) != "[0 1]" {
			t.Fatalf("giver after the timeout serves %v; want 0-1", giver.Gate().Served())
		}
	}

	// A receiver that does not warm slots (no Warmer) is not waited for.
	{
		giver, receiver := start(nil)
		follow(receiver)
		if got := published("receiver", shardingv1alpha1.AnnotationWarm); got != "(none)" {
			t.Fatalf("a member without a Warmer publishes %q warm", got)
		}
		follow(giver)
		if fmt.Sprint(giver.Gate().Served()) != "[0 1]" {
			t.Fatalf("giver to a receiver that does not warm serves %v; want 0-1 at once", giver.Gate().Served())
		}
	}

	// A receiver whose cache cannot warm goes on following the ring, tries
	// again, and the giver waits for it as for any receiver not yet warm.
	{
		w := &fakeWarmer{fail: errors.New("no mapping for the kind yet")}
		giver, receiver := start(w)
		if again := follow(receiver); again != membership.DefaultRetryPeriod || fmt.Sprint(receiver.Gate().Served()) != "[4 5]" {
			t.Fatalf("receiver whose Warm fails: serves %v, looks again after %s; want 4-5 served, another look", receiver.Gate().Served(), again)
		}
		w.fail = nil
		follow(receiver)
		if fmt.Sprint(w.asked) != "[[2 3] [2 3]]" {
			t.Fatalf("Warm calls %v, want 2-3 tried again after the failure", w.asked)
		}
		follow(giver)
		if fmt.Sprint(giver.Gate().Served()) != "[0 1 2 3]" {
			t.Fatalf("giver serves %v; want 0-3 until the receiver is warm", giver.Gate().Served())
		}
	}

	// A cancelled move: what the receiver warmed is given up.
	{
		w := &fakeWarmer{}
		giver, receiver := start(w)
		follow(receiver)
		follow(giver)
		epoch++
		setStatus(epoch, "0-3", "4-5")
		follow(receiver)
		follow(giver)
		if fmt.Sprint(w.cooled) != "[[2 3]]" || fmt.Sprint(giver.Gate().Served()) != "[0 1 2 3]" {
			t.Fatalf("after the move was cancelled: receiver cooled %v, giver serves %v; want 2-3 cooled, 0-3 served", w.cooled, giver.Gate().Served())
		}
	}
}

// Warm slots cost no list, so the gain window, which gathers lists, must not
// hold them back: a receiver serves each warm slot as soon as it owns it.
func TestWarmSlotsAreSetUpAtOnceWhileOthersAreOnTheirWay(t *testing.T) {
	c, key, set := newRingStore(t)
	ctx := t.Context()
	setStatus := func(epoch int64, receiver, a, b string, moves ...shardingv1alpha1.SlotMove) {
		t.Helper()
		set(epoch, map[string]string{"receiver": receiver, "a": a, "b": b}, moves...)
	}
	clock := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	w := &fakeWarmer{}
	var calls []string
	r, err := NewAgent(c, c, Options{Ring: key, Member: "receiver", Slots: 6, LeaseDuration: 15 * time.Second, Clock: clock, Warmer: w,
		OnGain: func(_ context.Context, slots []int) error { calls = append(calls, fmt.Sprint(slots)); return nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	follow := func() {
		t.Helper()
		if err := r.Member().PublishServing(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
	}
	fromA := shardingv1alpha1.SlotMove{Slots: "0-1", Epoch: 1, From: "a", To: "receiver"}
	fromB := shardingv1alpha1.SlotMove{Slots: "2-3", Epoch: 1, From: "b", To: "receiver"}
	setStatus(1, "4-5", "0-1", "2-3", fromA, fromB)
	follow() // sets up 4-5 after the window; warms 0-3
	if fmt.Sprint(w.asked) != "[[0 1 2 3]]" {
		t.Fatalf("warmed %v, want 0-3 at once", w.asked)
	}
	w.warm = []int{0, 1, 2, 3}
	for range 2 { // renewing on the way
		clock.Step(DefaultGainWindow / 2)
		follow()
	}
	if fmt.Sprint(calls) != "[[4 5]]" {
		t.Fatalf("OnGain calls %v once the window is spent, want 4-5", calls)
	}
	calls = nil

	setStatus(2, "2-5", "0-1", "", fromA) // b let go; a has not yet
	follow()
	if fmt.Sprint(calls) != "[[2 3]]" || fmt.Sprint(r.Gate().Served()) != "[2 3 4 5]" {
		t.Fatalf("warm 2-3 arrived with 0-1 still on its way: OnGain calls %v, serving %v; want 2-3 set up at once", calls, r.Gate().Served())
	}
	setStatus(3, "0-5", "", "")
	follow()
	if fmt.Sprint(calls) != "[[2 3] [0 1]]" {
		t.Fatalf("warm 0-1 arrived: OnGain calls %v; want 0-1 set up at once", calls)
	}
}
