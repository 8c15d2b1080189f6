// Command modebench runs one workload in both selector modes of a ring and
// prints what each costs, side by side: selectorMode Labels (the slot label,
// set by the mutating webhook at admission, with the labeler behind it) and
// selectorMode ShardSelector (the API server selects by uid hash, feature gate
// ShardedListAndWatch on; no label, no webhook).
//
// A third run repeats selectorMode ShardSelector with the gate off: the API
// server ignores the selector and the members filter what they receive.
//
// For each run it starts its own kube-apiserver and etcd (envtest), three
// members in this process (each a controller-runtime manager with the sharded
// cache and a LargeData controller), creates the objects, waits until each
// has been reconciled by the member of its slot, then starts a fourth member
// and waits until the ring has settled. It reports the time to create and
// reconcile, the API requests per created object, the Go heap per member and
// the cached objects per member before and after the join, and the join's
// duration and writes.
//
//	go run ./test/bench/modebench [-objects 5000] [-slots 1024] [-workers 8]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/wirecount"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
	"github.com/kubeshard/kubeshard/pkg/sharding"
	"github.com/kubeshard/kubeshard/pkg/slotwebhook"
)

const (
	ns       = "bench"
	ringName = "largedata"
)

type benchConfig struct {
	objects, slots, workers int
}

// result is one mode's figures.
type result struct {
	name                 string
	mode                 shardingv1alpha1.SelectorMode
	create, reconcileAll time.Duration
	createP50, createP99 time.Duration // latency of one create request
	createWrites         float64       // API writes per created object, by anyone
	webhookCalls         float64       // admission calls per created object
	received             float64       // LargeData the members received per created object
	heap3, heap4         float64       // Go heap per member, MiB, 3 and 4 members
	maxCached3           int           // most LargeData cached by one of 3 members
	maxCached4           int
	join                 time.Duration
	joinWrites           map[string]int // by resource
	newcomerReceived     int            // LargeData the 4th member received
}

func main() {
	var cfg benchConfig
	flag.IntVar(&cfg.objects, "objects", 5000, "LargeData objects to create.")
	flag.IntVar(&cfg.slots, "slots", 1024, "Slots of the ring.")
	flag.IntVar(&cfg.workers, "workers", 8, "Goroutines creating objects.")
	flag.Parse()
	if cfg.objects < 1 || cfg.slots < 4 || cfg.workers < 1 {
		fmt.Fprintln(os.Stderr, "modebench: -objects, -workers must be positive and -slots at least 4")
		os.Exit(2)
	}
	ctrl.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var results []result
	for _, v := range []struct {
		mode shardingv1alpha1.SelectorMode
		gate bool
	}{
		{shardingv1alpha1.SelectorModeLabels, true},
		{shardingv1alpha1.SelectorModeShardSelector, true},
		{shardingv1alpha1.SelectorModeShardSelector, false},
	} {
		res, err := run(ctx, cfg, v.mode, v.gate)
		if err != nil {
			fmt.Fprintf(os.Stderr, "modebench: %s: %v\n", res.name, err)
			os.Exit(1)
		}
		results = append(results, res)
	}
	print(cfg, results)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, cfg benchConfig, mode shardingv1alpha1.SelectorMode, gate bool) (res result, err error) {
	res.mode = mode
	res.name = string(mode)
	if mode == shardingv1alpha1.SelectorModeShardSelector && !gate {
		res.name += ", gate off"
	}
	opts := testenv.Options{FeatureGates: map[string]bool{"ShardedListAndWatch": gate}}
	if mode == shardingv1alpha1.SelectorModeLabels {
		root, err := testenv.ModuleRoot()
		if err != nil {
			return res, err
		}
		opts.WebhookPaths = []string{filepath.Join(root, "deploy", "base", "webhook")}
	}
	progress("%s: starting the control plane", res.name)
	env, err := testenv.Start(opts)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, env.Stop()) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return res, err
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Name: ringName, Namespace: ns},
		Spec: shardingv1alpha1.ShardRingSpec{
			Slots: int32(cfg.slots), SelectorMode: mode,
			Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "data.kubeshard.dev", Resource: "largedata"},
				Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
			}},
		},
	}
	if err := env.Client.Create(ctx, sr); err != nil {
		return res, err
	}
	b := &bench{cfg: cfg, env: env, writes: &writes{counts: map[string]int{}}, received: map[string]*atomic.Int64{}}
	defer b.stopAll()

	var hooks *prometheus.Registry
	if mode == shardingv1alpha1.SelectorModeLabels {
		if hooks, err = b.startWebhook(ctx, sr); err != nil {
			return res, err
		}
	}

	runtime.GC()
	base := heapMiB()
	for _, name := range []string{"m-0", "m-1", "m-2"} {
		if err := b.start(ctx, name); err != nil {
			return res, err
		}
	}
	if err := b.waitSettled(ctx, 3, 2*time.Minute); err != nil {
		return res, err
	}

	progress("%s: creating %d LargeData", res.name, cfg.objects)
	creator := &writes{counts: map[string]int{}}
	ccfg := rest.CopyConfig(env.Config)
	ccfg.Wrap(creator.wrap)
	cc, err := client.New(ccfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		return res, err
	}
	b.writes.reset()
	hooksBefore := webhookCalls(hooks)
	receivedBefore := b.totalReceived()
	start := time.Now()
	latencies, err := createObjects(ctx, cc, cfg)
	if err != nil {
		return res, err
	}
	slices.Sort(latencies)
	res.createP50, res.createP99 = latencies[len(latencies)/2], latencies[len(latencies)*99/100]
	res.create = time.Since(start)
	if err := b.waitReconciled(ctx, cfg.objects, 5*time.Minute); err != nil {
		return res, err
	}
	res.reconcileAll = time.Since(start)
	all := creator.total() + b.writes.total()
	res.createWrites = float64(all) / float64(cfg.objects)
	res.webhookCalls = (webhookCalls(hooks) - hooksBefore) / float64(cfg.objects)
	res.received = float64(b.totalReceived()-receivedBefore) / float64(cfg.objects)
	res.maxCached3 = b.maxCached()
	runtime.GC()
	res.heap3 = (heapMiB() - base) / 3

	progress("%s: a 4th member joins", res.name)
	b.writes.reset()
	start = time.Now()
	if err := b.start(ctx, "m-3"); err != nil {
		return res, err
	}
	if err := b.waitSettled(ctx, 4, 2*time.Minute); err != nil {
		return res, err
	}
	// A member opens the slots it gains before their objects are cached (a
	// read waits for them): the join is done when the newcomer's cache has
	// synced.
	newcomer := b.ringMembers()[3]
	syncCtx, cancelSync := context.WithTimeout(ctx, 2*time.Minute)
	synced := newcomer.mgr.GetCache().WaitForCacheSync(syncCtx)
	cancelSync()
	if !synced {
		return res, errors.New("the 4th member's cache did not sync within 2 minutes")
	}
	res.join = time.Since(start)
	res.joinWrites = b.writes.snapshot()
	b.mu.Lock()
	res.newcomerReceived = int(b.received["m-3"].Load())
	b.mu.Unlock()
	res.maxCached4 = b.maxCached()
	runtime.GC()
	res.heap4 = (heapMiB() - base) / 4
	progress("%s: done", res.name)
	return res, nil
}

func heapMiB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// createObjects creates the objects and returns how long each create took.
func createObjects(ctx context.Context, c client.Client, cfg benchConfig) ([]time.Duration, error) {
	var (
		wg        sync.WaitGroup
		next      atomic.Int64
		errs      = make(chan error, cfg.workers)
		latencies = make([]time.Duration, cfg.objects)
	)
	for range cfg.workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.objects || ctx.Err() != nil {
					return
				}
				ld := &datav1alpha1.LargeData{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("ld-%06d", i)},
					Spec:       datav1alpha1.LargeDataSpec{Items: 1},
				}
				start := time.Now()
				if err := c.Create(ctx, ld); err != nil {
					errs <- err
					return
				}
				latencies[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	close(errs)
	return latencies, <-errs
}

type bench struct {
	cfg      benchConfig
	env      *testenv.Environment
	writes   *writes
	mu       sync.Mutex
	members  []*member
	received map[string]*atomic.Int64
}

type member struct {
	name   string
	mgr    ctrl.Manager
	ring   *sharding.Ring
	seen   sync.Map // types.NamespacedName -> struct{}
	cancel context.CancelFunc
	done   chan error
}

func (b *bench) start(ctx context.Context, name string) error {
	cfg := rest.CopyConfig(b.env.Config)
	cfg.Wrap(b.writes.wrap)
	received := &atomic.Int64{}
	b.mu.Lock()
	b.received[name] = received
	b.mu.Unlock()
	cfg.Wrap(countLargeData(received))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:   b.env.Scheme,
		NewCache: shardcache.NewCacheFunc(cacheOptions(b.cfg.slots, b.mode(ctx))),
		Cache:    cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Metrics:  metricsserver.Options{BindAddress: "0"},
		// The coordinator and the labeler run on the elected member.
		LeaderElection:                true,
		LeaderElectionID:              ringName + "-coordinator",
		LeaderElectionNamespace:       ns,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(ctx)
	m := &member{name: name, mgr: mgr, cancel: cancel, done: make(chan error, 1)}
	m.ring, err = sharding.New(mctx, mgr, sharding.Options{
		Ring: ringName, Namespace: ns, Member: name, RebalanceQuiet: time.Second,
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		cancel()
		return err
	}
	rec := reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
		m.seen.Store(req.NamespacedName, struct{}{})
		return reconcile.Result{}, nil
	})
	if err := ctrl.NewControllerManagedBy(mgr).For(&datav1alpha1.LargeData{}).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 4}).
		Complete(m.ring.Reconciler(rec)); err != nil {
		cancel()
		return err
	}
	go func() { m.done <- mgr.Start(mctx) }()
	b.mu.Lock()
	b.members = append(b.members, m)
	b.mu.Unlock()
	return nil
}

// mode reads the ring's mode, as an operator's main does before it builds
// its cache.
func (b *bench) mode(ctx context.Context) shardingv1alpha1.SelectorMode {
	sr := &shardingv1alpha1.ShardRing{}
	if err := b.env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: ringName}, sr); err != nil {
		return shardingv1alpha1.SelectorModeLabels
	}
	return sr.Spec.SelectorMode
}

func cacheOptions(slots int, mode shardingv1alpha1.SelectorMode) shardcache.Options {
	if mode == shardingv1alpha1.SelectorModeShardSelector {
		return shardcache.Options{
			ShardSelectorObjects: []client.Object{&datav1alpha1.LargeData{}},
			ShardedObjects:       []client.Object{&corev1.ConfigMap{}},
			Slots:                slots,
		}
	}
	return shardcache.Options{
		ShardedObjects: []client.Object{&datav1alpha1.LargeData{}, &corev1.ConfigMap{}},
		Slots:          slots,
	}
}

func (b *bench) startWebhook(ctx context.Context, sr *shardingv1alpha1.ShardRing) (*prometheus.Registry, error) {
	wio := b.env.Env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(b.env.Config, ctrl.Options{
		Scheme:  b.env.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir,
		}),
	})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	if err := slotwebhook.Add(mgr, slotwebhook.Options{Ring: client.ObjectKeyFromObject(sr), Registerer: reg}); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	m := &member{name: "webhook", mgr: mgr, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(wctx) }()
	b.mu.Lock()
	b.members = append(b.members, m)
	b.mu.Unlock()
	// failurePolicy Ignore admits objects unlabelled until the server
	// answers: wait for a probe to come back labelled.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		probe := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("probe-%d", i)},
			Spec:       datav1alpha1.LargeDataSpec{Items: 1},
		}
		if err := b.env.Client.Create(ctx, probe); err != nil {
			return nil, err
		}
		if err := b.env.Client.Delete(ctx, probe); err != nil {
			return nil, err
		}
		if _, ok := probe.Labels[shardingv1alpha1.LabelSlot]; ok {
			return reg, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New("the API server did not call the webhook within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func webhookCalls(reg *prometheus.Registry) float64 {
	if reg == nil {
		return 0
	}
	families, err := reg.Gather()
	if err != nil {
		return 0
	}
	var n float64
	for _, f := range families {
		if f.GetName() == "kubeshard_webhook_assignments_total" {
			for _, m := range f.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func (b *bench) totalReceived() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, r := range b.received {
		n += r.Load()
	}
	return n
}

func (b *bench) stopAll() {
	b.mu.Lock()
	members := slices.Clone(b.members)
	b.mu.Unlock()
	for _, m := range members {
		m.cancel()
	}
	for _, m := range members {
		select {
		case err := <-m.done:
			if err != nil {
				progress("member %s stopped with %v", m.name, err)
			}
		case <-time.After(60 * time.Second):
			progress("member %s did not stop within 60 s", m.name)
		}
	}
}

func (b *bench) ringMembers() []*member {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*member
	for _, m := range b.members {
		if m.ring != nil {
			out = append(out, m)
		}
	}
	return out
}

func (b *bench) waitSettled(ctx context.Context, n int, timeout time.Duration) error {
	return poll(ctx, timeout, func() (bool, string) {
		sr := &shardingv1alpha1.ShardRing{}
		if err := b.env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: ringName}, sr); err != nil {
			return false, err.Error()
		}
		ready := apimeta.FindStatusCondition(sr.Status.Conditions, shardingv1alpha1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionTrue || len(sr.Status.Members) != n {
			return false, fmt.Sprintf("Ready=%v, %d members", ready, len(sr.Status.Members))
		}
		table, err := assignment.FromStatus(&sr.Status, b.cfg.slots)
		if err != nil {
			return false, err.Error()
		}
		for _, m := range b.ringMembers() {
			if want, got := table.Servable(m.name), m.ring.Agent().Gate().Served(); !slices.Equal(want, got) {
				return false, fmt.Sprintf("%s serves %d slots, owns %d", m.name, len(got), len(want))
			}
		}
		return true, ""
	})
}

// waitReconciled waits until every object was reconciled by some member;
// the ring's wrapper admits only the member of its slot.
func (b *bench) waitReconciled(ctx context.Context, n int, timeout time.Duration) error {
	return poll(ctx, timeout, func() (bool, string) {
		seen := 0
		for _, m := range b.ringMembers() {
			m.seen.Range(func(_, _ any) bool { seen++; return true })
		}
		return seen >= n, fmt.Sprintf("%d of %d reconciled", seen, n)
	})
}

func (b *bench) maxCached() int {
	most := 0
	for _, m := range b.ringMembers() {
		list := &datav1alpha1.LargeDataList{}
		if err := m.mgr.GetClient().List(context.Background(), list, client.InNamespace(ns)); err == nil {
			most = max(most, len(list.Items))
		}
	}
	return most
}

func poll(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = cond(); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not within %s: %s", timeout, why)
}

// writes counts API writes by resource.
type writes struct {
	mu     sync.Mutex
	counts map[string]int
}

func (w *writes) wrap(rt http.RoundTripper) http.RoundTripper {
	return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet {
			w.mu.Lock()
			w.counts[wirecount.Resource(req.URL.Path)]++
			w.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

func (w *writes) reset() {
	w.mu.Lock()
	clear(w.counts)
	w.mu.Unlock()
}

func (w *writes) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, v := range w.counts {
		n += v
	}
	return n
}

func (w *writes) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.counts))
	for k, v := range w.counts {
		out[k] = v
	}
	return out
}

// countLargeData counts the LargeData the API server sends to a member: the
// items of lists and the ADDED events of watches, decoded from a copy of each
// response body.
func countLargeData(n *atomic.Int64) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK ||
				!strings.HasSuffix(req.URL.Path, "/largedata") {
				return resp, err
			}
			watching := req.URL.Query().Get("watch") == "true"
			return wirecount.Received(resp, watching, func(keys []string) { n.Add(int64(len(keys))) }, nil), nil
		})
	}
}

func print(cfg benchConfig, rs []result) {
	fmt.Printf("\n%d LargeData, %d slots, 3 members then a 4th; one control plane per column.\n\n", cfg.objects, cfg.slots)
	fmt.Println("| figure | " + strings.Join(modes(rs), " | ") + " |")
	fmt.Println("| --- |" + strings.Repeat(" ---: |", len(rs)))
	row := func(name string, f func(r result) string) {
		var cells []string
		for _, r := range rs {
			cells = append(cells, f(r))
		}
		fmt.Printf("| %s | %s |\n", name, strings.Join(cells, " | "))
	}
	row(fmt.Sprintf("create (%d clients)", cfg.workers), func(r result) string { return r.create.Round(time.Millisecond).String() })
	row("one create, p50", func(r result) string { return r.createP50.Round(10 * time.Microsecond).String() })
	row("one create, p99", func(r result) string { return r.createP99.Round(10 * time.Microsecond).String() })
	row("create to all reconciled", func(r result) string { return r.reconcileAll.Round(time.Millisecond).String() })
	row("API writes per created object", func(r result) string { return fmt.Sprintf("%.2f", r.createWrites) })
	row("webhook calls per created object", func(r result) string { return fmt.Sprintf("%.2f", r.webhookCalls) })
	row("LargeData received by the 3 members per created object", func(r result) string { return fmt.Sprintf("%.2f", r.received) })
	row("Go heap per member, 3 members (MiB)", func(r result) string { return fmt.Sprintf("%.1f", r.heap3) })
	row("most LargeData cached by one of 3", func(r result) string { return fmt.Sprint(r.maxCached3) })
	row("Go heap per member, 4 members (MiB)", func(r result) string { return fmt.Sprintf("%.1f", r.heap4) })
	row("most LargeData cached by one of 4", func(r result) string { return fmt.Sprint(r.maxCached4) })
	row("join 3 -> 4: start to newcomer synced", func(r result) string { return r.join.Round(time.Millisecond).String() })
	row("join: writes (all members)", func(r result) string { return formatWrites(r.joinWrites) })
	row("join: LargeData the newcomer received", func(r result) string { return fmt.Sprint(r.newcomerReceived) })
}

func modes(rs []result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.name)
	}
	return out
}

func formatWrites(w map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, w[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
