package sharding_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

// Manager options that would quietly undo sharding are refused before
// anything is read, with a message that says what to change.
func TestSetupRefusesOptionsThatUndoSharding(t *testing.T) {
	// Nothing listens here: a Setup that got as far as reading the ring
	// would fail with a connection error instead.
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	member := sharding.Options{Ring: "widgets", Namespace: "widgets-system", Member: "widgets-0"}
	for _, tc := range []struct {
		name string
		opts ctrl.Options
		want string
	}{
		{"no scheme", ctrl.Options{}, "ctrl.Options.Scheme is nil"},
		{"a scheme without the ShardRing", ctrl.Options{Scheme: runtime.NewScheme()}, "does not know the ShardRing"},
		{"a cache of the caller's", ctrl.Options{Scheme: testkind.NewScheme(), NewCache: cache.New}, "ctrl.Options.NewCache is set"},
		{"controllers under leader election", ctrl.Options{Scheme: testkind.NewScheme(), Controller: config.Controller{NeedLeaderElection: ptr.To(true)}},
			"NeedLeaderElection is true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			_, err := sharding.Setup(t.Context(), cfg, &opts, member)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Setup: %v, want an error that says %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		opts sharding.Options
		want string
	}{
		{"no ring", sharding.Options{Namespace: "ns", Member: "m-0"}, "Options.Ring is required"},
		{"no member", sharding.Options{Ring: "r", Namespace: "ns"}, "POD_NAME"},
		{"a negative handover rate", sharding.Options{Ring: "r", Namespace: "ns", Member: "m-0", HandoverRate: -1}, "Options.HandoverRate is -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := ctrl.Options{Scheme: testkind.NewScheme()}
			if _, err := sharding.Setup(t.Context(), cfg, &opts, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Setup: %v, want an error that says %q", err, tc.want)
			}
		})
	}
}

// A manager made without the options Setup filled in is refused by
// SetupWithManager: its cache would hold every object, or its controllers
// would run on the coordinator only.
func TestSetupWithManagerRefusesAManagerMadeWithoutSetup(t *testing.T) {
	g := startGuide(t)
	cfg := g.env.Config
	opts := ctrl.Options{
		Scheme:                 testkind.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	plain := opts // what the author had before adding sharding
	ring, err := sharding.Setup(t.Context(), cfg, &opts, sharding.Options{Ring: "widgets", Namespace: g.ns, Member: "widgets-0"})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.SetupWithManager(mgr); err == nil || !strings.Contains(err.Error(), "does not follow the served slots") {
		t.Errorf("SetupWithManager with the manager's default cache: %v, want an error that names the cache", err)
	}

	// A graceful shutdown too short for a leave is refused by Setup.
	short := ctrl.Options{Scheme: testkind.NewScheme(), GracefulShutdownTimeout: ptr.To(5 * time.Second)}
	if _, err := sharding.Setup(t.Context(), cfg, &short, sharding.Options{Ring: "widgets", Namespace: g.ns, Member: "widgets-0"}); err == nil ||
		!strings.Contains(err.Error(), "GracefulShutdownTimeout") {
		t.Errorf("Setup with a 5 s graceful shutdown: %v, want an error that names GracefulShutdownTimeout", err)
	}
	// Left unset, it covers the drain (30 s) and the renew deadline (4 s of the ring's 6 s lease).
	if got := *opts.GracefulShutdownTimeout; got < 34*time.Second {
		t.Errorf("Setup set GracefulShutdownTimeout to %s, want at least 34 s", got)
	}
	if !opts.LeaderElection || opts.LeaderElectionID != "widgets-coordinator" || *opts.LeaseDuration != 6*time.Second {
		t.Errorf("Setup set leader election %v, ID %q, lease %s; want on, widgets-coordinator, the ring's 6 s",
			opts.LeaderElection, opts.LeaderElectionID, *opts.LeaseDuration)
	}
}

// A ring whose resources name a kind the API server does not serve, or one
// the operator's scheme does not know, is refused at start with a message
// that names it, before any member joins.
func TestSetupRefusesARingOfUnknownKinds(t *testing.T) {
	g := startGuide(t)
	for _, tc := range []struct {
		name     string
		resource shardingv1alpha1.GroupResource
		scheme   *runtime.Scheme
		want     string
	}{
		{"a resource the API server does not serve", shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "gizmos"}, testkind.NewScheme(), "gizmos"},
		{"a kind the scheme does not know", shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"}, schemeWithoutWidgets(), "not in ctrl.Options.Scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := &shardingv1alpha1.ShardRing{
				ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "odd-" + strings.ReplaceAll(tc.resource.Resource, ".", "-")},
				Spec:       shardingv1alpha1.ShardRingSpec{Resources: []shardingv1alpha1.ShardedResource{{GroupResource: tc.resource}}},
			}
			if err := g.c.Create(t.Context(), sr); err != nil {
				t.Fatal(err)
			}
			opts := ctrl.Options{Scheme: tc.scheme}
			_, err := sharding.Setup(t.Context(), g.env.Config, &opts, sharding.Options{Ring: sr.Name, Namespace: g.ns, Member: "m-0"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Setup: %v, want an error that says %q", err, tc.want)
			}
		})
	}
}

// schemeWithoutWidgets knows the ShardRing but not the operator's kind.
func schemeWithoutWidgets() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(shardingv1alpha1.AddToScheme(s))
	return s
}
