package shardselector

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/wirecount"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/coordinator"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

const (
	slots        = 16
	leaseSeconds = 6
	before       = 100 // LargeData created before the members start
	after        = 100 // and after the ring has settled
	ns           = "shardselector"
	ringName     = "largedata"
)

// With the gate on, the API server sends each member only the objects of its
// slots; nothing is labelled; the ring says the server shards.
func TestShardSelectorWithTheGateOn(t *testing.T) {
	r := runRing(t, true)
	for _, m := range r.members {
		t.Logf("%s: received %d of the %d LargeData created after the ring settled; its share is %d",
			m.name, r.received(m.name), after, r.share(m, r.afterKeys))
		if got, want := r.received(m.name), r.share(m, r.afterKeys); got != want {
			t.Errorf("%s received %d LargeData over the wire after the ring settled, want exactly its share %d of %d",
				m.name, got, want, after)
		}
		if v := m.fallbackMetric(t); v != 0 {
			t.Errorf("%s: kubeshard_member_shard_selector_fallback = %v, want 0", m.name, v)
		}
	}
	r.waitCondition(metav1.ConditionTrue, coordinator.ReasonShardSelectorApplied)
}

// With the gate off, the API server ignores the selector and sends every
// member every object. The members still cache and reconcile only their
// slots' objects, and say what happened: the ring's condition, a metric and a
// log line.
func TestShardSelectorWithTheGateOffFallsBackToFilteringInTheMember(t *testing.T) {
	r := runRing(t, false)
	for _, m := range r.members {
		t.Logf("%s: received %d of the %d LargeData created after the ring settled; its share is %d",
			m.name, r.received(m.name), after, r.share(m, r.afterKeys))
		// One watch per slot group, and each receives everything.
		if got := r.received(m.name); got < after {
			t.Errorf("%s received %d LargeData over the wire after the ring settled, want at least all %d (the server ignores the selector)",
				m.name, got, after)
		}
		if v := m.fallbackMetric(t); v != 1 {
			t.Errorf("%s: kubeshard_member_shard_selector_fallback = %v, want 1", m.name, v)
		}
		if !m.logged("API server ignored the shard selector") {
			t.Errorf("%s did not log that the API server ignored the shard selector", m.name)
		}
	}
	c := r.waitCondition(metav1.ConditionFalse, coordinator.ReasonShardSelectorIgnored)
	if !strings.Contains(c.Message, "ShardedListAndWatch") {
		t.Errorf("condition message %q does not say which feature gate to enable", c.Message)
	}
}

// ringRun is a ring of two members on its own control plane, after the
// checks every mode shares have passed.
type ringRun struct {
	t         *testing.T
	env       *testenv.Environment
	members   []*member
	wire      *wire
	afterKeys keySet
}

// runRing starts a control plane with the feature gate on or off, a ring in
// selectorMode ShardSelector, LargeData before and after two members start,
// and checks what must hold in both modes: every member caches and reconciles
// exactly the objects of its slots, and no LargeData gets a slot label.
func runRing(t *testing.T, gate bool) *ringRun {
	env, err := testenv.Start(testenv.Options{FeatureGates: map[string]bool{"ShardedListAndWatch": gate}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx := t.Context()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: ringName, Namespace: ns},
		Spec: shardingv1alpha1.ShardRingSpec{
			Slots: slots, LeaseDurationSeconds: leaseSeconds,
			SelectorMode: shardingv1alpha1.SelectorModeShardSelector,
			Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "data.kubeshard.dev", Resource: "largedata"},
				Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
			}},
		},
	}
	if err := env.Client.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}
	r := &ringRun{t: t, env: env, wire: &wire{received: map[string]map[string]bool{}}}
	createLargeData(t, env, "before", before)

	for _, name := range []string{"m-0", "m-1"} {
		r.members = append(r.members, r.start(name))
	}
	r.waitSettled()

	// The objects created from now on show what each member receives.
	r.wire.reset()
	r.afterKeys = createLargeData(t, env, "after", after)
	all := r.allKeys()
	defer func() {
		if t.Failed() {
			for _, m := range r.members {
				for _, l := range m.logs.lines {
					if strings.Contains(l, "Drop") || strings.Contains(l, "rror") || strings.Contains(l, "shard") {
						t.Log(m.name, l)
					}
				}
			}
		}
	}()
	testenv.Eventually(t, 30*time.Second, "every LargeData reconciled by the member of its slot", func() (bool, string) {
		for key := range all {
			if _, ok := r.reconciledBy(key); !ok {
				return false, fmt.Sprintf("%s not reconciled yet", key)
			}
		}
		return true, ""
	})

	// What each member holds and reconciles is exactly its slots' objects.
	for _, m := range r.members {
		served := m.ring.Agent().Gate().Served()
		list := &datav1alpha1.LargeDataList{}
		if err := m.mgr.GetClient().List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, ld := range list.Items {
			got = append(got, ld.Name)
		}
		for key, uid := range all {
			if _, ok := slices.BinarySearch(served, ring.UIDSlot(string(uid), slots)); ok {
				want = append(want, key.Name)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s serves slots %s and caches %d LargeData, want the %d of its slots", m.name,
				ring.FormatRanges(served), len(got), len(want))
		}
		if len(want) == 0 || len(want) == len(all) {
			t.Errorf("%s owns %d of %d objects: the test needs both members to own some", m.name, len(want), len(all))
		}
	}
	for key, uid := range all {
		slot := ring.UIDSlot(string(uid), slots)
		who, _ := r.reconciledBy(key)
		for _, m := range r.members {
			_, serves := slices.BinarySearch(m.ring.Agent().Gate().Served(), slot)
			// Before the ring settled, the first member served every slot.
			if _, created := r.afterKeys[key]; created && slices.Contains(who, m.name) != serves {
				t.Errorf("%s (slot %d) was reconciled by %v; %s serves it: %v", key, slot, who, m.name, serves)
			}
		}
	}

	// The API server never labels them, and nothing else does in this mode.
	list := &datav1alpha1.LargeDataList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, ld := range list.Items {
		if v, ok := ld.Labels[shardingv1alpha1.LabelSlot]; ok {
			t.Errorf("LargeData %s has slot label %q; selectorMode ShardSelector writes none", ld.Name, v)
		}
	}
	return r
}

type keySet map[types.NamespacedName]types.UID

func createLargeData(t *testing.T, env *testenv.Environment, prefix string, n int) keySet {
	t.Helper()
	out := keySet{}
	for i := range n {
		ld := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%03d", prefix, i)},
			Spec:       datav1alpha1.LargeDataSpec{Items: 1},
		}
		if err := env.Client.Create(t.Context(), ld); err != nil {
			t.Fatal(err)
		}
		out[client.ObjectKeyFromObject(ld)] = ld.UID
	}
	return out
}

func (r *ringRun) allKeys() keySet {
	list := &datav1alpha1.LargeDataList{}
	if err := r.env.Client.List(r.t.Context(), list, client.InNamespace(ns)); err != nil {
		r.t.Fatal(err)
	}
	out := keySet{}
	for _, ld := range list.Items {
		out[client.ObjectKeyFromObject(&ld)] = ld.UID
	}
	return out
}

// share is how many of keys fall in the slots m serves.
func (r *ringRun) share(m *member, keys keySet) int {
	served := m.ring.Agent().Gate().Served()
	n := 0
	for _, uid := range keys {
		if _, ok := slices.BinarySearch(served, ring.UIDSlot(string(uid), slots)); ok {
			n++
		}
	}
	return n
}

func (r *ringRun) reconciledBy(key types.NamespacedName) ([]string, bool) {
	var who []string
	for _, m := range r.members {
		if m.rec.has(key) {
			who = append(who, m.name)
		}
	}
	return who, len(who) > 0
}

// received returns how many of the LargeData created after the ring settled
// the member was sent.
func (r *ringRun) received(member string) int { return r.wire.get(member, r.afterKeys) }

func (r *ringRun) getRing() *shardingv1alpha1.ShardRing {
	sr := &shardingv1alpha1.ShardRing{}
	if err := r.env.Client.Get(r.t.Context(), types.NamespacedName{Namespace: ns, Name: ringName}, sr); err != nil {
		r.t.Fatal(err)
	}
	return sr
}

// waitSettled waits until the ring is Ready and each member serves what the
// status gives it.
func (r *ringRun) waitSettled() {
	testenv.Eventually(r.t, 60*time.Second, "the ring settles with both members", func() (bool, string) {
		sr := r.getRing()
		ready := apimeta.FindStatusCondition(sr.Status.Conditions, shardingv1alpha1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionTrue || len(sr.Status.Members) != len(r.members) {
			return false, fmt.Sprintf("Ready=%v, %d members", ready, len(sr.Status.Members))
		}
		table, err := assignment.FromStatus(&sr.Status, slots)
		if err != nil {
			return false, err.Error()
		}
		for _, m := range r.members {
			if want, got := table.Servable(m.name), m.ring.Agent().Gate().Served(); !slices.Equal(want, got) {
				return false, fmt.Sprintf("%s serves %v, owns %v", m.name, got, want)
			}
			// No slot group still watches slots the member gave away.
			for _, g := range m.mgr.GetCache().(*shardcache.Cache).Groups() {
				if !g.Synced || !slices.Equal(g.Served, g.Slots) {
					return false, fmt.Sprintf("%s has a group of slots %v serving %v (synced %t)", m.name, g.Slots, g.Served, g.Synced)
				}
			}
		}
		return true, ""
	})
}

func (r *ringRun) waitCondition(status metav1.ConditionStatus, reason string) *metav1.Condition {
	var c *metav1.Condition
	testenv.Eventually(r.t, 20*time.Second, "condition ServerSideSharding "+string(status), func() (bool, string) {
		c = apimeta.FindStatusCondition(r.getRing().Status.Conditions, shardingv1alpha1.ConditionServerSideSharding)
		return c != nil && c.Status == status && c.Reason == reason, fmt.Sprintf("%+v", c)
	})
	return c
}

// member is one replica: a manager with the sharded cache and its ring
// membership, reconciling LargeData.
type member struct {
	name    string
	mgr     ctrl.Manager
	ring    *sharding.Ring
	metrics *prometheus.Registry
	rec     *recorder
	logs    *logs
}

func (r *ringRun) start(name string) *member {
	t := r.t
	cfg := rest.CopyConfig(r.env.Config)
	cfg.Wrap(r.wire.wrap(name))
	m := &member{name: name, metrics: prometheus.NewRegistry(), rec: &recorder{seen: map[types.NamespacedName]bool{}}, logs: &logs{}}
	logger := funcr.New(m.logs.add, funcr.Options{Verbosity: 1})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: r.env.Scheme,
		Logger: logger,
		NewCache: shardcache.NewCacheFunc(shardcache.Options{
			ShardSelectorObjects: []client.Object{&datav1alpha1.LargeData{}},
			ShardedObjects:       []client.Object{&corev1.ConfigMap{}},
			Slots:                slots,
			// A member that served every slot before the other joined
			// keeps watching them all until it compacts; waitSettled
			// waits for that, so that the count of what the server sends
			// afterwards is the member's share.
			CompactAfter: time.Second,
		}),
		Cache:                         cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		LeaderElection:                true,
		LeaderElectionID:              ringName + "-coordinator",
		LeaderElectionNamespace:       ns,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 ptr.To(4 * time.Second),
		RenewDeadline:                 ptr.To(3 * time.Second),
		RetryPeriod:                   ptr.To(500 * time.Millisecond),
		// Several managers run in this one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), logger))
	m.ring, err = sharding.New(ctx, mgr, sharding.Options{
		Ring: ringName, Namespace: ns, Member: name,
		RebalanceQuiet: time.Second, DrainTimeout: 5 * time.Second,
		Registerer: m.metrics,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// Every member reconciles its own slots; only the coordinator is elected.
	if err := ctrl.NewControllerManagedBy(mgr).For(&datav1alpha1.LargeData{}).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(m.ring.Reconciler(m.rec)); err != nil {
		cancel()
		t.Fatal(err)
	}
	m.mgr = mgr
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("member %s stopped with %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("member %s did not stop", name)
		}
	})
	return m
}

func (m *member) fallbackMetric(t *testing.T) float64 {
	t.Helper()
	return testenv.MetricValue(t, m.metrics, "kubeshard_member_shard_selector_fallback", nil)
}

func (m *member) logged(msg string) bool { return m.logs.contains(msg) }

// recorder is the reconciler: it remembers what it was asked to reconcile.
type recorder struct {
	mu   sync.Mutex
	seen map[types.NamespacedName]bool
}

func (r *recorder) Reconcile(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	r.seen[req.NamespacedName] = true
	r.mu.Unlock()
	return reconcile.Result{}, nil
}

func (r *recorder) has(key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key]
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) add(prefix, args string) {
	l.mu.Lock()
	l.lines = append(l.lines, prefix+" "+args)
	l.mu.Unlock()
}

func (l *logs) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// wire counts, per member, the LargeData the API server sends it: the items
// of lists and the ADDED events of watches.
// wire records, per member, the keys of the LargeData its API responses
// carried since the last reset. A relist (a slot group compacted, a watch
// restarted) sends objects again, so objects, not responses, are counted.
type wire struct {
	mu       sync.Mutex
	received map[string]map[string]bool
}

func (w *wire) reset() {
	w.mu.Lock()
	clear(w.received)
	w.mu.Unlock()
}

// get returns how many of keys the member was sent since the last reset.
func (w *wire) get(member string, keys keySet) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for key := range keys {
		if w.received[member][key.String()] {
			n++
		}
	}
	return n
}

func (w *wire) add(member string, keys []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.received[member] == nil {
		w.received[member] = map[string]bool{}
	}
	for _, k := range keys {
		w.received[member][k] = true
	}
}

func (w *wire) wrap(member string) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK ||
				!strings.HasSuffix(req.URL.Path, "/largedata") {
				return resp, err
			}
			watching := req.URL.Query().Get("watch") == "true"
			return wirecount.Received(resp, watching, func(keys []string) { w.add(member, keys) }, nil), nil
		})
	}
}
