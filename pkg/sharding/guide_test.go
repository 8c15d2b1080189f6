package sharding_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/internal/wirecount"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

// guide is a real API server with the Widget CRD and a ring "widgets" that
// shards Widgets and their ConfigMaps.
type guide struct {
	t      *testing.T
	env    *testenv.Environment
	c      client.Client // knows Widgets
	ns     string
	writes *widgetWrites

	mu         sync.Mutex
	reconciled map[string]map[string]int // widget -> member -> reconciles
}

// widgetWrites counts the writes members send to Widgets.
type widgetWrites struct {
	mu sync.Mutex
	n  int
}

func (w *widgetWrites) wrap(rt http.RoundTripper) http.RoundTripper {
	return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if res, _, _ := strings.Cut(wirecount.Resource(req.URL.Path), "/"); req.Method != http.MethodGet && res == "widgets" {
			w.mu.Lock()
			w.n++
			w.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

func (w *widgetWrites) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func startGuide(t *testing.T) *guide {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{
		Paths: []string{testkind.CRDPath()}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: testkind.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	g := &guide{t: t, env: env, c: c, ns: "widgets-system", writes: &widgetWrites{}, reconciled: map[string]map[string]int{}}
	ctx := t.Context()
	if err := g.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: g.ns}}); err != nil {
		t.Fatal(err)
	}
	// The ShardRing the guide applies.
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "widgets"},
		Spec: shardingv1alpha1.ShardRingSpec{
			LeaseDurationSeconds: 6,
			Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"},
				Children:      []shardingv1alpha1.GroupResource{{Group: "", Resource: "configmaps"}},
			}},
		},
	}
	if err := g.c.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}
	return g
}

// startMember runs one replica of the guide's operator, set up as
// Example's main does, until the test ends.
func (g *guide) startMember(name string) {
	g.t.Helper()
	cfg := rest.CopyConfig(g.env.Config)
	cfg.Wrap(g.writes.wrap)
	opts := ctrl.Options{
		Scheme: testkind.NewScheme(),
		// Several members run in this one process.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(g.t.Context()))
	ring, err := sharding.Setup(ctx, cfg, &opts, sharding.Options{
		Ring: "widgets", Namespace: g.ns, Member: name, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		cancel()
		g.t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		cancel()
		g.t.Fatal(err)
	}
	if err := ring.SetupWithManager(mgr); err != nil {
		cancel()
		g.t.Fatal(err)
	}
	r := &WidgetReconciler{Client: mgr.GetClient(), LabelChild: ring.LabelChild, Reconciled: func(key client.ObjectKey) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.reconciled[key.Name] == nil {
			g.reconciled[key.Name] = map[string]int{}
		}
		g.reconciled[key.Name][name]++
	}}
	err = ctrl.NewControllerManagedBy(mgr).
		For(&testkind.Widget{}).
		Owns(&corev1.ConfigMap{}).
		Complete(ring.Reconciler(r))
	if err != nil {
		cancel()
		g.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	g.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			g.t.Errorf("member %s stopped with %v", name, err)
		}
	})
}

// settled reports whether the ring is Ready with n members and nothing moving.
// The Ready condition matters: while a rebalance waits for membership to be
// quiet, a member that just joined is ready with no slot and nothing moves
// yet, but the ring is not Ready.
func (g *guide) settled(n int) (bool, string) {
	sr := &shardingv1alpha1.ShardRing{}
	if err := g.c.Get(g.t.Context(), client.ObjectKey{Namespace: g.ns, Name: "widgets"}, sr); err != nil {
		return false, err.Error()
	}
	ready := meta.IsStatusConditionTrue(sr.Status.Conditions, shardingv1alpha1.ConditionReady)
	why := fmt.Sprintf("Ready %t, %d members, %d ready, %d moving, %d unowned", ready, sr.Status.MemberCount, sr.Status.ReadyMembers, sr.Status.MovingSlots, sr.Status.UnownedSlots)
	return ready && int(sr.Status.ReadyMembers) == n && int(sr.Status.MemberCount) == n && sr.Status.MovingSlots == 0 && sr.Status.UnownedSlots == 0, why
}

// TestTheGuidesOperator builds the operator of docs/implement-sharding.md
// for a kind of its own (Widget, with a ConfigMap per Widget), runs two
// members against a real API server and checks what the guide promises:
// every Widget is reconciled by exactly one member, every child carries its
// owner's slot label, and a third member joining moves slots without a
// write to any Widget.
func TestTheGuidesOperator(t *testing.T) {
	g := startGuide(t)
	ctx := t.Context()
	g.startMember("widgets-0")
	g.startMember("widgets-1")
	testenv.Eventually(t, 60*time.Second, "two members share the ring", func() (bool, string) { return g.settled(2) })

	const widgets = 200
	for i := range widgets {
		w := &testkind.Widget{ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: fmt.Sprintf("widget-%03d", i)}, Spec: testkind.WidgetSpec{Size: int64(i)}}
		if err := g.c.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// The guide runs no webhook here: the labeler labels the Widgets.
	testenv.Eventually(t, 90*time.Second, "every Widget has its ConfigMap and its reconcile recorded", func() (bool, string) {
		cms := &corev1.ConfigMapList{}
		if err := g.c.List(ctx, cms, client.InNamespace(g.ns)); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, cm := range cms.Items {
			if strings.HasSuffix(cm.Name, "-widget") {
				n++
			}
		}
		// The reconciler records a Widget after it wrote the ConfigMap,
		// so a ConfigMap can be listed a moment before its record exists.
		g.mu.Lock()
		recorded := len(g.reconciled)
		g.mu.Unlock()
		return n == widgets && recorded == widgets, fmt.Sprintf("%d of %d ConfigMaps, %d Widgets recorded", n, widgets, recorded)
	})

	// Exactly one member reconciled each Widget.
	g.mu.Lock()
	for name, by := range g.reconciled {
		if len(by) != 1 {
			t.Errorf("Widget %s was reconciled by %v, want exactly one member", name, by)
		}
	}
	if len(g.reconciled) != widgets {
		t.Errorf("%d Widgets reconciled, want %d", len(g.reconciled), widgets)
	}
	g.mu.Unlock()

	// Every child carries its owner's slot.
	cms := &corev1.ConfigMapList{}
	if err := g.c.List(ctx, cms, client.InNamespace(g.ns)); err != nil {
		t.Fatal(err)
	}
	for _, cm := range cms.Items {
		owner, ok := strings.CutSuffix(cm.Name, "-widget")
		if !ok {
			continue
		}
		want := strconv.Itoa(ring.Slot(g.ns, owner, ring.DefaultSlots))
		if got := cm.Labels[shardingv1alpha1.LabelSlot]; got != want {
			t.Errorf("ConfigMap %s has slot label %q, want its owner's %q", cm.Name, got, want)
		}
	}

	// A member joins: slots move, no Widget is written.
	before := g.writes.count()
	g.startMember("widgets-2")
	testenv.Eventually(t, 60*time.Second, "three members share the ring", func() (bool, string) { return g.settled(3) })
	if n := g.writes.count() - before; n != 0 {
		t.Errorf("the members wrote %d times to Widgets while a member joined, want 0", n)
	}
}
