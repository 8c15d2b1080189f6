package ring

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/wirecount"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

// leaseWire records every Lease the API server sends a member in lists and
// watches: what its caches hold, seen from the wire.
type leaseWire struct {
	mu       sync.Mutex
	received map[string]bool // namespace/name
}

func (w *leaseWire) wrap(rt http.RoundTripper) http.RoundTripper {
	return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK ||
			!strings.HasSuffix(req.URL.Path, "/leases") {
			return resp, err
		}
		watching := req.URL.Query().Get("watch") == "true"
		return wirecount.Received(resp, watching, func(keys []string) {
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, k := range keys {
				w.received[k] = true
			}
		}, nil), nil
	})
}

func (w *leaseWire) keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []string
	for k := range w.received {
		keys = append(keys, k)
	}
	return keys
}

// TestTheCoordinatorWatchesOnlyItsRingsLeases runs a member, elected
// coordinator, with the manager's default cluster-wide cache in a cluster
// that holds 1,000 Leases elsewhere (as kube-node-lease does, one per node)
// and a few unrelated Leases in the ring's own namespace. The member must
// receive none of them: only the ring's member Leases.
func TestTheCoordinatorWatchesOnlyItsRingsLeases(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t, "ring-leases", 64)
	const foreign = 1000
	elsewhere := "ring-leases-elsewhere"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: elsewhere}}); err != nil {
		t.Fatal(err)
	}
	create := func(ns, name string) {
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](40)},
		}
		if err := env.Client.Create(ctx, lease); err != nil {
			t.Fatal(err)
		}
	}
	for i := range foreign {
		create(elsewhere, fmt.Sprintf("node-%04d", i))
	}
	for i := range 5 {
		create(c.ns, fmt.Sprintf("other-controller-%d", i))
	}

	sr := c.get()
	opts := ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	wire := &leaseWire{received: map[string]bool{}}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(wire.wrap)
	// JSON, which the wire reader decodes, rather than protobuf.
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	if err := sharding.ElectCoordinator(&opts, cfg, sr); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	if _, err := sharding.New(runCtx, mgr, sharding.Options{
		Ring: c.ring, Namespace: c.ns, Member: "op-0", Registerer: prometheus.NewRegistry(),
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the member stopped with %v", err)
		}
	})
	testenv.Eventually(t, 30*time.Second, "the member coordinates a settled ring", func() (bool, string) {
		select {
		case <-mgr.Elected():
		default:
			return false, "not elected"
		}
		return c.settled("op-0")
	})
	// A resync or a late list would show up within a few renewals.
	time.Sleep(2 * time.Second)

	var ours, others []string
	for _, key := range wire.keys() {
		lease := &coordinationv1.Lease{}
		ns, name, _ := strings.Cut(key, "/")
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, lease); err == nil &&
			ns == c.ns && lease.Labels[shardingv1alpha1.LabelRing] == c.ring {
			ours = append(ours, key)
		} else {
			others = append(others, key)
		}
	}
	t.Logf("Leases received: %d of the ring's, %d others (the cluster holds %d others)", len(ours), len(others), foreign+5)
	if len(ours) == 0 {
		t.Errorf("the member received none of the ring's member Leases: the coordinator cannot see its members")
	}
	if len(others) > 0 {
		t.Errorf("the member received %d Leases that are not the ring's member Leases, e.g. %v", len(others), others[:min(5, len(others))])
	}
}
