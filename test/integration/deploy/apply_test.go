package deploy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

const fieldOwner = "kubeshard-deploy-test"

// dryRun applies every object of the build whose kind the API server knows
// with server-side apply and dryRun=All, as `kubectl apply --server-side
// --dry-run=server` would: the API server validates, defaults and admits
// each one (CRD schemas and CEL rules, Pod Security admission of the pod
// template) without storing it. Any warning fails the test too: unknown
// fields and Pod Security violations come back as warnings, not errors.
// The operator's Namespace is created for real first, as the namespaced
// objects need it.
func dryRun(t *testing.T, m manifest) {
	ctx := t.Context()
	ns := m.find("Namespace", operatorNamespace)
	if ns == nil {
		t.Fatalf("no Namespace %s in the build", operatorNamespace)
	}
	if err := env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(ns.DeepCopy()), client.ForceOwnership, client.FieldOwner(fieldOwner)); err != nil {
		t.Fatalf("creating Namespace %s: %v", operatorNamespace, err)
	}

	warnings := &warningRecorder{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandlerWithContext = warnings
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, u := range m.objs {
		if foreignKinds[u.GroupVersionKind()] {
			continue
		}
		what := fmt.Sprintf("%s %s", u.GetKind(), client.ObjectKeyFromObject(u))
		warnings.take()
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.DryRunAll, client.ForceOwnership, client.FieldOwner(fieldOwner))
		if err != nil {
			t.Errorf("server-side dry-run of %s: %v", what, err)
			continue
		}
		for _, w := range warnings.take() {
			t.Errorf("the API server warned about %s: %s", what, w)
		}
		applied++
	}
	t.Logf("%s: the API server accepted %d objects (dry-run); %d are other projects' kinds", m.dir, applied, len(m.objs)-applied)
}

// warningRecorder collects the warnings the API server sends back.
type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (r *warningRecorder) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warnings = append(r.warnings, text)
}

// take returns the warnings recorded so far and forgets them.
func (r *warningRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.warnings
	r.warnings = nil
	return w
}

// applyForReal applies the build's Namespace, ServiceAccount and RBAC, and
// its objects of the other kinds named, for real (not a dry run).
func applyForReal(t *testing.T, m manifest, kinds ...string) {
	t.Helper()
	kinds = append(kinds, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
	for _, u := range m.objs {
		if !slices.Contains(kinds, u.GetKind()) {
			continue
		}
		if err := env.Client.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.ForceOwnership, client.FieldOwner(fieldOwner)); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// TestOperatorPermissions applies the base's RBAC for real and asks the API
// server (SubjectAccessReview) whether the operator's ServiceAccount may do
// what the operator does, and nothing more: the ring's Role grants Leases,
// the ShardRing and events in the operator's namespace only; the operator's
// ClusterRole grants its kinds and their children in every namespace.
func TestOperatorPermissions(t *testing.T) {
	ctx := t.Context()
	m := build(t, "deploy/base")
	sts, _ := operator(t, m)
	applyForReal(t, m)

	sa := sts.Spec.Template.Spec.ServiceAccountName
	ns := sts.Namespace
	tests := []struct {
		why  string
		attr authorizationv1.ResourceAttributes
		want bool
	}{
		{"member Leases and the coordinator's leader election",
			authorizationv1.ResourceAttributes{Namespace: ns, Group: "coordination.k8s.io", Resource: "leases", Verb: "create"}, true},
		{"renewing Leases", authorizationv1.ResourceAttributes{Namespace: ns, Group: "coordination.k8s.io", Resource: "leases", Verb: "update"}, true},
		{"watching the members' Leases", authorizationv1.ResourceAttributes{Namespace: ns, Group: "coordination.k8s.io", Resource: "leases", Verb: "watch"}, true},
		{"leader election's events (core API)", authorizationv1.ResourceAttributes{Namespace: ns, Resource: "events", Verb: "create"}, true},
		{"the coordinator's events", authorizationv1.ResourceAttributes{Namespace: ns, Group: "events.k8s.io", Resource: "events", Verb: "create"}, true},
		{"reading the ring", authorizationv1.ResourceAttributes{Namespace: ns, Group: "sharding.kubeshard.dev", Resource: "shardrings", Verb: "watch"}, true},
		{"writing the assignment", authorizationv1.ResourceAttributes{Namespace: ns, Group: "sharding.kubeshard.dev", Resource: "shardrings", Subresource: "status", Verb: "update"}, true},
		{"LargeData in every namespace", authorizationv1.ResourceAttributes{Group: "data.kubeshard.dev", Resource: "largedata", Verb: "watch"}, true},
		{"LargeData status", authorizationv1.ResourceAttributes{Namespace: "team-a", Group: "data.kubeshard.dev", Resource: "largedata", Subresource: "status", Verb: "patch"}, true},
		{"summary ConfigMaps", authorizationv1.ResourceAttributes{Namespace: "team-a", Resource: "configmaps", Verb: "create"}, true},
		{"events on LargeData (malformed stream entries)", authorizationv1.ResourceAttributes{Namespace: "team-a", Group: "events.k8s.io", Resource: "events", Verb: "create"}, true},
		{"nothing it does not need: Secrets in a user's namespace", authorizationv1.ResourceAttributes{Namespace: "team-a", Resource: "secrets", Verb: "get"}, false},
		{"authenticating a metrics scraper", authorizationv1.ResourceAttributes{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"}, true},
		{"authorizing a metrics scraper", authorizationv1.ResourceAttributes{Group: "authorization.k8s.io", Resource: "subjectaccessreviews", Verb: "create"}, true},
		{"nothing it does not need: Secrets", authorizationv1.ResourceAttributes{Namespace: ns, Resource: "secrets", Verb: "get"}, false},
		{"no Lease outside its namespace: kube-system's leader election", authorizationv1.ResourceAttributes{Namespace: "kube-system", Group: "coordination.k8s.io", Resource: "leases", Verb: "update"}, false},
		{"no Lease outside its namespace: creating one elsewhere", authorizationv1.ResourceAttributes{Namespace: "team-a", Group: "coordination.k8s.io", Resource: "leases", Verb: "create"}, false},
		{"no Lease outside its namespace: watching every node's", authorizationv1.ResourceAttributes{Group: "coordination.k8s.io", Resource: "leases", Verb: "watch"}, false},
		{"no other namespace's ring", authorizationv1.ResourceAttributes{Namespace: "team-a", Group: "sharding.kubeshard.dev", Resource: "shardrings", Subresource: "status", Verb: "update"}, false},
		{"nothing it does not need: deleting LargeData", authorizationv1.ResourceAttributes{Namespace: "team-a", Group: "data.kubeshard.dev", Resource: "largedata", Verb: "delete"}, false},
		{"nothing it does not need: changing its own ring's spec", authorizationv1.ResourceAttributes{Namespace: ns, Group: "sharding.kubeshard.dev", Resource: "shardrings", Verb: "update"}, false},
	}
	allowed := func(attr authorizationv1.ResourceAttributes) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + ns + ":" + sa,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &attr,
		}}
		if err := env.Client.Create(ctx, sar); err != nil {
			t.Fatalf("asking the API server: %v", err)
		}
		return sar.Status.Allowed
	}
	// The API server's authorizer learns of the Roles just applied from its
	// informers, a few milliseconds later: a permission the build grants is
	// given a few seconds to take effect. The refusals are asked after all
	// the grants were seen, when the authorizer knows the build's RBAC.
	for _, want := range []bool{true, false} {
		for _, tt := range tests {
			if tt.want != want {
				continue
			}
			got := allowed(tt.attr)
			if want && !got {
				_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, false, func(context.Context) (bool, error) {
					got = allowed(tt.attr)
					return got, nil
				})
			}
			if got != want {
				t.Errorf("%s: %s %s/%s (namespace %q): allowed=%v, want %v", tt.why, tt.attr.Verb, tt.attr.Resource, tt.attr.Subresource, tt.attr.Namespace, got, want)
			}
		}
	}
}

// TestAMemberRunsOnTheBuildsPermissions runs a member of the build's ring as
// the operator's ServiceAccount (impersonated) with the build's RBAC applied:
// the least privilege TestOperatorPermissions checks must also be enough.
// The member joins, coordinates, and its labeler labels a LargeData; a
// forbidden request on the way would keep the ring from settling.
func TestAMemberRunsOnTheBuildsPermissions(t *testing.T) {
	ctx := t.Context()
	m := build(t, "deploy/base")
	sts, _ := operator(t, m)
	applyForReal(t, m, "ShardRing")
	// The other tests dry-run the overlays' ShardRings, which a real one of
	// another selectorMode would refuse (the field is immutable). Runs after
	// the member has stopped (cleanups run last first).
	t.Cleanup(func() {
		sr := m.find("ShardRing", "largedata")
		if err := env.Client.Delete(context.WithoutCancel(ctx), sr.DeepCopy()); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting the ShardRing: %v", err)
		}
	})
	ns, sa := sts.Namespace, sts.Spec.Template.Spec.ServiceAccountName
	ringName, _ := flagValue(sts.Spec.Template.Spec.Containers[0].Args, "ring")

	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	opts := ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
	// The RBAC just applied reaches the authorizer within a moment.
	var ring *sharding.Ring
	testenv.Eventually(t, 10*time.Second, "Setup reads the ring as the ServiceAccount", func() (bool, string) {
		o := opts
		var err error
		ring, err = sharding.Setup(ctx, cfg, &o, sharding.Options{Ring: ringName, Namespace: ns, Member: sts.Name + "-0", Registerer: prometheus.NewRegistry()})
		if err == nil {
			opts = o
		}
		return err == nil, fmt.Sprint(err)
	})
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the member stopped with %v", err)
		}
	})

	key := client.ObjectKey{Namespace: ns, Name: ringName}
	testenv.Eventually(t, 60*time.Second, "the member serves every slot of the ring", func() (bool, string) {
		sr := &shardingv1alpha1.ShardRing{}
		if err := env.Client.Get(ctx, key, sr); err != nil {
			return false, err.Error()
		}
		return sr.Status.ReadyMembers == 1 && sr.Status.UnownedSlots == 0 && sr.Status.MovingSlots == 0,
			fmt.Sprintf("%d ready members, %d unowned slots", sr.Status.ReadyMembers, sr.Status.UnownedSlots)
	})
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-rbac"}}); err != nil {
		t.Fatal(err)
	}
	ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: "team-rbac", Name: "dataset"}, Spec: datav1alpha1.LargeDataSpec{Items: 1}}
	if err := env.Client.Create(ctx, ld); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the labeler, as the ServiceAccount, labels a new LargeData", func() (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ld), ld); err != nil {
			return false, err.Error()
		}
		return ld.Labels[shardingv1alpha1.LabelSlot] != "", fmt.Sprintf("labels %v", ld.Labels)
	})
}
