package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/serving"
)

// The protocol test drives the real coordinator (Reconciler, plan, Tracker) and
// real member agents (serving.Agent, membership.Member) against a fake API
// server and a fake clock, through random joins, graceful leaves, crashes,
// restarts, pauses (SIGSTOP), network partitions, coordinator failovers (to a
// member whose Tracker has watched the Leases for a while, often in the
// middle of another member's expiry) and members that see the ring's status
// or the Leases late, and checks after every step that no two members could
// reconcile the same slot. Then it lets the ring settle and checks that every
// slot is served by exactly its owner.

const (
	simSlots    = 64
	simRingName = "sim"
	simNS       = "kubeshard-system"
)

var simRing = types.NamespacedName{Namespace: simNS, Name: simRingName}

func simScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	// Only the kinds involved: the fake client builds a REST mapper from the
	// whole scheme on every write, which dominates the test's run time.
	utilruntime.Must(coordinationv1.AddToScheme(s))
	utilruntime.Must(shardingv1alpha1.AddToScheme(s))
	return s
}

// process is one running member process, or the memory of a crashed one.
type process struct {
	name        string
	agent       *serving.Agent
	alive       bool
	paused      bool
	resumeAt    time.Time
	partitioned bool
	healAt      time.Time
	// stalledUntil: the member's watch of the ShardRing delivers nothing new
	// before then (a slow or throttled watch), though it keeps working.
	stalledUntil time.Time
	// tracker is what this process has seen of the Leases through its own
	// watch, which stalls until leasesStalledUntil; the coordinator uses the
	// tracker of the process that won the election.
	tracker            *membership.Tracker
	leasesStalledUntil time.Time
	lastRenew          time.Time
	// left: the process released its Lease before it exited.
	left bool
	// snapshot is the ShardRing as this member last saw it, the seen-th
	// version in the sim's history: members see the status late, at different
	// times, and every version in order, as a watch delivers it.
	snapshot *shardingv1alpha1.ShardRing
	seen     int
	// inFlight holds, per slot, the leave functions of its reconciles.
	inFlight map[int][]func()
}

// laggingReader serves a process's snapshot of the ShardRing.
type laggingReader struct{ p *process }

func (l laggingReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if l.p.snapshot == nil {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "shardrings"}, key.Name)
	}
	l.p.snapshot.DeepCopyInto(obj.(*shardingv1alpha1.ShardRing))
	return nil
}

func (l laggingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not used")
}

type sim struct {
	t     *testing.T
	rng   *rand.Rand
	clock *clocktesting.FakeClock
	api   client.Client
	coord *Reconciler
	// coordProc is the process whose election made it coordinator; nil for
	// one that has not started as a member yet.
	coordProc *process
	// failovers counts the coordinator changes, midExpiry those that came
	// while some member was silent but not yet past its lease.
	failovers, midExpiry int
	// metrics, if set, is given to every coordinator.
	metrics *Metrics
	procs   map[string]*process
	// versions are the ShardRing's versions in the order the API server
	// wrote them.
	versions []*shardingv1alpha1.ShardRing
	nextName int
	log      []string
	maxProcs int
	overlaps int
	checks   int
}

func newSim(t *testing.T, seed uint64) *sim {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: simNS, Name: simRingName, Generation: 1},
		Spec: shardingv1alpha1.ShardRingSpec{Slots: simSlots, LoadFactor: "1.25", LeaseDurationSeconds: 15,
			Resources: []shardingv1alpha1.ShardedResource{{GroupResource: shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"}}}},
	}
	api := fake.NewClientBuilder().WithScheme(simScheme()).WithStatusSubresource(&shardingv1alpha1.ShardRing{}).WithObjects(sr).Build()
	s := &sim{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), clock: clk, api: api, procs: map[string]*process{}, maxProcs: 6}
	s.newCoordinator()
	return s
}

func (s *sim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%s ", s.clock.Now().Format("15:04:05.000"))+fmt.Sprintf(format, args...))
}

func (s *sim) newTracker() *membership.Tracker {
	return membership.NewTracker(membership.TrackerOptions{Ring: simRingName, Slots: simSlots, Clock: s.clock})
}

// newCoordinator elects a running process, which coordinates with the
// Tracker its own watch has fed. With none running, nobody coordinates until
// one runs.
func (s *sim) newCoordinator() {
	var candidates []*process
	for _, p := range s.alive() {
		if !p.paused && !p.partitioned {
			candidates = append(candidates, p)
		}
	}
	if s.coordProc != nil {
		s.failovers++
		if s.someoneMidExpiry() {
			s.midExpiry++
		}
	}
	s.coord, s.coordProc = nil, nil
	if len(candidates) == 0 {
		return
	}
	s.coordProc = candidates[s.rng.IntN(len(candidates))]
	s.coord = &Reconciler{
		Client:    s.api,
		APIReader: s.api,
		Recorder:  &events.FakeRecorder{},
		Clock:     s.clock,
		Tracker:   s.coordProc.tracker,
		Metrics:   s.metrics,
		Options:   Options{Ring: simRing, Clock: s.clock}.withDefaults(),
	}
	s.logf("%s coordinates", s.coordProc.name)
}

// someoneMidExpiry reports whether a member that holds its Lease has not
// renewed it for less than a lease duration and cannot renew now: the case
// where a new coordinator's history decides how soon it is called dead.
func (s *sim) someoneMidExpiry() bool {
	for _, p := range s.procs {
		silent := !p.alive || p.paused || p.partitioned
		if silent && !p.left && s.clock.Since(p.lastRenew) < membership.DefaultLeaseDuration {
			return true
		}
	}
	return false
}

// observe delivers the Leases as they are now to a process's Tracker, as
// its watch does, unless the process cannot run or its watch is stalled.
func (s *sim) observe(p *process) {
	if p.paused || p.partitioned || s.clock.Now().Before(p.leasesStalledUntil) {
		return
	}
	leases := &coordinationv1.LeaseList{}
	if err := s.api.List(s.t.Context(), leases); err != nil {
		s.t.Fatal(err)
	}
	for i := range leases.Items {
		p.tracker.Observe(&leases.Items[i])
	}
}

// start starts a member process; a restarted member reuses its name.
func (s *sim) start(name string) {
	p := &process{name: name, alive: true, inFlight: map[int][]func(){}, tracker: s.newTracker()}
	c := interceptor.NewClient(s.api.(client.WithWatch), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if p.partitioned {
				return errors.New("network partition")
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if p.partitioned {
				return errors.New("network partition")
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if p.partitioned {
				return errors.New("network partition")
			}
			if s.rng.IntN(20) == 0 {
				return errors.New("transient: the API server timed out")
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	agent, err := serving.NewAgent(c, laggingReader{p}, serving.Options{
		Ring: simRing, Member: name, Slots: simSlots, Clock: s.clock, DrainTimeout: time.Millisecond,
	}, nil)
	if err != nil {
		s.t.Fatalf("starting member %s: %v", name, err)
	}
	p.agent = agent
	s.procs[name] = p
	s.renew(p)
	s.observe(p)
	s.logf("start %s", name)
}

// exit ends a process; its reconciles end with it.
func (s *sim) exit(p *process, why string) {
	p.alive, p.paused, p.partitioned = false, false, false
	p.inFlight = map[int][]func(){}
	s.logf("exit %s (%s)", p.name, why)
}

// renew is one tick of the member's Lease loop. A renewal that finds the
// renew deadline passed fences the member, which then exits.
func (s *sim) renew(p *process) {
	p.lastRenew = s.clock.Now()
	err := p.agent.Member().PublishServing(s.t.Context())
	if p.agent.Member().Fenced() {
		s.logf("fenced %s", p.name)
		s.exit(p, "fenced")
		return
	}
	_ = err // a failed renewal is retried at the next tick
}

func (s *sim) follow(p *process) {
	// A member's watch delivers the versions in order but late: it moves on by
	// a version or a few, and may act on an old one while the coordinator has
	// moved on.
	if !p.partitioned && !s.clock.Now().Before(p.stalledUntil) && p.seen < len(s.versions) {
		p.seen = min(len(s.versions), p.seen+1+s.rng.IntN(3))
		p.snapshot = s.versions[p.seen-1]
	}
	if p.snapshot == nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.t.Context(), time.Millisecond)
	defer cancel()
	before := p.agent.Gate().Served()
	_, err := p.agent.Reconcile(ctx, reconcile.Request{NamespacedName: simRing})
	if after := p.agent.Gate().Served(); !slices.Equal(before, after) || err != nil {
		s.logf("%s follows epoch %d: serves %s (err=%v)", p.name, p.snapshot.Status.Epoch, ring.FormatRanges(after), err)
	}
}

func (s *sim) coordinate() {
	if p := s.coordProc; p == nil || !p.alive || p.paused || p.partitioned {
		// The coordinator cannot act; the others elect a new one once its
		// election Lease has run out.
		if p == nil || s.clock.Since(p.lastRenew) >= membership.DefaultLeaseDuration {
			s.newCoordinator()
		}
		if s.coord == nil {
			return
		}
	}
	_, err := s.coord.Reconcile(s.t.Context(), reconcile.Request{NamespacedName: simRing})
	if err != nil {
		s.t.Fatalf("coordinator: %v\n%s", err, s.history())
	}
	sr := &shardingv1alpha1.ShardRing{}
	if err := s.api.Get(s.t.Context(), simRing, sr); err != nil {
		s.t.Fatal(err)
	}
	if n := len(s.versions); n == 0 || s.versions[n-1].ResourceVersion != sr.ResourceVersion {
		s.versions = append(s.versions, sr)
		if n == 0 || s.versions[n-1].Status.Epoch != sr.Status.Epoch {
			var owners []string
			for _, m := range sr.Status.Members {
				owners = append(owners, m.Name+"="+m.Slots)
			}
			s.logf("status epoch %d: owners %v moves %v", sr.Status.Epoch, owners, sr.Status.Moves)
		}
	}
}

func (s *sim) startWork(p *process) {
	slot := s.rng.IntN(simSlots)
	leave, ok := p.agent.Gate().Enter(slot)
	if !ok {
		return
	}
	for _, o := range s.procs {
		if o != p && o.alive && !o.paused && len(o.inFlight[slot]) > 0 {
			s.overlaps++
			s.t.Errorf("%s started a reconcile of slot %d while %s had one in flight\n%s", p.name, slot, o.name, s.history())
		}
	}
	p.inFlight[slot] = append(p.inFlight[slot], leave)
}

func (s *sim) endWork(p *process) {
	// Reconciles last a few steps, some much longer: a slow reconcile is what
	// a handover has to wait for.
	// Sorted, so that the random choices and the test are repeatable.
	for _, slot := range slices.Sorted(maps.Keys(p.inFlight)) {
		if leaves := p.inFlight[slot]; len(leaves) > 0 && s.rng.IntN(6) == 0 {
			leaves[0]()
			p.inFlight[slot] = leaves[1:]
		}
	}
}

// check asserts the invariant after a step: per slot, at most one member may
// start a reconcile (open gate and a fresh Lease), and every member's
// published serving list covers every slot it may work on.
func (s *sim) check() {
	s.checks++
	for slot := range simSlots {
		var admitting []string
		for _, p := range s.procs {
			if !p.alive {
				continue
			}
			mayStart := p.agent.Gate().IsServed(slot) && p.agent.Member().Valid()
			// A paused process can do nothing; what it had in flight is the
			// limit every lease-based system shares (see ARCHITECTURE.md).
			running := len(p.inFlight[slot]) > 0 && !p.paused
			if mayStart || running {
				admitting = append(admitting, p.name)
			}
		}
		if len(admitting) > 1 {
			s.t.Fatalf("slot %d may be reconciled by %v at once\n%s", slot, admitting, s.history())
		}
	}
	for _, p := range s.procs {
		if !p.alive || !p.agent.Member().Valid() {
			continue
		}
		lease := &coordinationv1.Lease{}
		if err := s.api.Get(s.t.Context(), types.NamespacedName{Namespace: simNS, Name: membership.LeaseName(simRingName, p.name)}, lease); err != nil {
			s.t.Fatal(err)
		}
		published, err := ring.ParseRanges(lease.Annotations[shardingv1alpha1.AnnotationServing], simSlots)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, slot := range p.agent.Gate().Served() {
			if _, ok := slices.BinarySearch(published, slot); !ok {
				s.t.Fatalf("%s serves slot %d but its Lease does not say so: the coordinator could move it away\n%s", p.name, slot, s.history())
			}
		}
	}
}

func (s *sim) history() string {
	from := max(0, len(s.log)-60)
	out := "last events:\n"
	for _, l := range s.log[from:] {
		out += "  " + l + "\n"
	}
	return out
}

func (s *sim) alive() []*process {
	var ps []*process
	for _, name := range s.names() {
		if p := s.procs[name]; p.alive {
			ps = append(ps, p)
		}
	}
	return ps
}

func (s *sim) names() []string {
	var names []string
	for n := range s.procs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// step advances time and lets every actor act once, with chaos when asked.
func (s *sim) step(chaos bool) {
	s.clock.Step(time.Duration(s.rng.IntN(700)) * time.Millisecond)
	now := s.clock.Now()

	if chaos {
		s.chaos()
	}
	for _, p := range s.alive() {
		if p.paused {
			if now.Before(p.resumeAt) {
				continue
			}
			p.paused = false
			s.logf("resume %s", p.name)
			// The Lease loop's ticker fires first thing after SIGCONT.
			s.renew(p)
			if !p.alive {
				continue
			}
		}
		if p.partitioned && !now.Before(p.healAt) {
			p.partitioned = false
			s.logf("heal %s", p.name)
		}
		if now.Sub(p.lastRenew) >= membership.DefaultRetryPeriod {
			s.renew(p)
			if !p.alive {
				continue
			}
		}
		if s.rng.IntN(2) == 0 {
			s.follow(p)
		}
		if s.rng.IntN(2) == 0 {
			s.observe(p)
		}
		s.startWork(p)
		s.endWork(p)
	}
	if s.rng.IntN(2) == 0 {
		s.coordinate()
	}
	s.check()
}

func (s *sim) chaos() {
	alive := s.alive()
	pick := func() *process { return alive[s.rng.IntN(len(alive))] }
	switch r := s.rng.IntN(100); {
	case r < 4 && len(alive) < s.maxProcs:
		s.nextName++
		s.start(fmt.Sprintf("op-%d", s.nextName))
	case r < 6 && len(alive) > 1:
		p := pick()
		if !p.paused && !p.partitioned {
			ctx, cancel := context.WithTimeout(s.t.Context(), time.Millisecond)
			err := p.agent.Leave(ctx)
			cancel()
			s.logf("leave %s (err=%v)", p.name, err)
			s.exit(p, "left")
			p.left = err == nil
		}
	case r < 8 && len(alive) > 1:
		s.exit(pick(), "kill -9")
	case r < 10:
		for _, name := range s.names() {
			if p := s.procs[name]; !p.alive {
				s.start(name) // the StatefulSet restarts the pod under its name
				break
			}
		}
	case r < 12 && len(alive) > 0:
		p := pick()
		if !p.paused {
			p.paused = true
			p.resumeAt = s.clock.Now().Add(time.Duration(5+s.rng.IntN(35)) * time.Second)
			s.logf("pause %s until %s", p.name, p.resumeAt.Format("15:04:05"))
		}
	case r < 13 && len(alive) > 0:
		p := pick()
		p.partitioned = true
		p.healAt = s.clock.Now().Add(time.Duration(1+s.rng.IntN(25)) * time.Second)
		s.logf("partition %s until %s", p.name, p.healAt.Format("15:04:05"))
	case r < 15:
		s.logf("coordinator failover")
		s.newCoordinator()
	case r < 19 && len(alive) > 0:
		p := pick()
		p.stalledUntil = s.clock.Now().Add(time.Duration(2+s.rng.IntN(20)) * time.Second)
		s.logf("stall the watch of %s until %s", p.name, p.stalledUntil.Format("15:04:05"))
	case r < 21 && len(alive) > 0:
		// A Lease watch that stalls longer than a lease: its Tracker thinks
		// every member silent, and its process may be elected meanwhile.
		p := pick()
		p.leasesStalledUntil = s.clock.Now().Add(time.Duration(2+s.rng.IntN(40)) * time.Second)
		s.logf("stall the Lease watch of %s until %s", p.name, p.leasesStalledUntil.Format("15:04:05"))
	}
}

// settle ends the chaos and lets the ring converge.
func (s *sim) settle() {
	for _, p := range s.procs {
		if p.alive {
			p.partitioned = false
			p.leasesStalledUntil = time.Time{}
			if p.paused {
				p.resumeAt = s.clock.Now()
			}
		}
	}
	// Paused members resume, and those paused too long fence and exit.
	for range 5 {
		s.step(false)
	}
	if len(s.alive()) == 0 {
		s.nextName++
		s.start(fmt.Sprintf("op-%d", s.nextName))
	}
	for range 400 {
		s.step(false)
		// Reconciles end so that pending releases can complete.
		for _, p := range s.alive() {
			for slot, leaves := range p.inFlight {
				for _, leave := range leaves {
					leave()
				}
				delete(p.inFlight, slot)
			}
		}
	}
}

func TestProtocolNeverServesASlotTwiceAndConverges(t *testing.T) {
	// KUBESHARD_SIM_SEEDS=200 runs a longer soak of the same test.
	seeds := uint64(6)
	if n, err := strconv.ParseUint(os.Getenv("KUBESHARD_SIM_SEEDS"), 10, 64); err == nil && n > 0 {
		seeds = n
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := newSim(t, seed)
			for range 3 {
				s.nextName++
				s.start(fmt.Sprintf("op-%d", s.nextName))
			}
			for range 1500 {
				s.step(true)
			}
			s.settle()

			sr := &shardingv1alpha1.ShardRing{}
			if err := s.api.Get(t.Context(), simRing, sr); err != nil {
				t.Fatal(err)
			}
			table, err := assignment.FromStatus(&sr.Status, simSlots)
			if err != nil {
				t.Fatalf("final status unreadable: %v", err)
			}
			if table.Moving() != 0 || table.Unowned() != 0 {
				t.Fatalf("after settling: %d slots moving, %d unowned, want 0 and 0\n%s", table.Moving(), table.Unowned(), s.history())
			}
			counts := table.Owner.Counts()
			live := s.alive()
			for _, p := range live {
				want := table.Servable(p.name)
				if got := p.agent.Gate().Served(); !slices.Equal(got, want) {
					t.Errorf("%s serves %v, its slots are %v", p.name, got, want)
				}
				if c := counts[p.name]; c < simSlots/len(live) || c > (simSlots+len(live)-1)/len(live) {
					t.Errorf("%s owns %d slots; with %d members it should own %d or %d", p.name, c, len(live), simSlots/len(live), (simSlots+len(live)-1)/len(live))
				}
			}
			if ready := findCondition(sr.Status.Conditions, shardingv1alpha1.ConditionReady); ready == nil || ready.Status != metav1.ConditionTrue {
				t.Errorf("Ready condition after settling: %+v", ready)
			}
			if s.midExpiry == 0 {
				t.Errorf("none of the %d coordinator failovers came while a member was silent but within its lease: the schedule does not test what it should", s.failovers)
			}
			t.Logf("%d steps checked, %d events, %d live members, epoch %d, %d failovers (%d in the middle of an expiry)",
				s.checks, len(s.log), len(live), sr.Status.Epoch, s.failovers, s.midExpiry)
		})
	}
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}
