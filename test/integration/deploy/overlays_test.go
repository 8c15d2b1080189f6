package deploy

import (
	"slices"
	"strconv"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

// foreignKinds are the kinds an overlay may use whose CRDs the test's API
// server does not have (cert-manager, the Prometheus Operator); all are
// namespaced. They are checked for shape only, not applied.
var foreignKinds = map[schema.GroupVersionKind]bool{
	{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}:          true,
	{Group: "cert-manager.io", Version: "v1", Kind: "Issuer"}:               true,
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}: true,
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}: true,
}

// checkCommon checks what every overlay must keep from the base.
func checkCommon(t *testing.T, m manifest) {
	t.Run("objects", func(t *testing.T) { checkPlacement(t, m) })
	t.Run("statefulset", func(t *testing.T) { checkStatefulSet(t, m) })
	t.Run("ring", func(t *testing.T) { checkRing(t, m) })
	t.Run("webhook", func(t *testing.T) { checkWebhook(t, m) })
	t.Run("disruption budget", func(t *testing.T) { checkDisruptionBudget(t, m) })
	t.Run("service account", func(t *testing.T) { checkServiceAccount(t, m) })
}

// checkPlacement checks that every object is well-formed and that every
// namespaced one lands in the operator's namespace: an object left in
// "default" (or a namespace from the kubectl context) is the classic
// kustomize slip.
func checkPlacement(t *testing.T, m manifest) {
	mapper := env.Client.RESTMapper()
	for _, u := range m.objs {
		gvk := u.GroupVersionKind()
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			t.Errorf("an object without apiVersion, kind or metadata.name: %v", u.Object)
			continue
		}
		namespaced, known := foreignKinds[gvk]
		if !known {
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Errorf("%s %s: the API server does not know %s (%v); if it is another project's CRD, add it to foreignKinds", gvk.Kind, u.GetName(), gvk, err)
				continue
			}
			namespaced = mapping.Scope.Name() == meta.RESTScopeNameNamespace
		}
		switch ns := u.GetNamespace(); {
		case namespaced && ns != operatorNamespace:
			t.Errorf("%s %s is in namespace %q, want %s", gvk.Kind, u.GetName(), ns, operatorNamespace)
		case !namespaced && ns != "":
			t.Errorf("%s %s is cluster-scoped but has namespace %q", gvk.Kind, u.GetName(), ns)
		}
	}
	if m.find("Namespace", operatorNamespace) == nil {
		t.Errorf("no Namespace %s in the build", operatorNamespace)
	}
}

func checkStatefulSet(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	pod := &sts.Spec.Template.Spec
	podLabels := sts.Spec.Template.Labels

	// Members join independently and the coordinator debounces joins: one
	// rebalance at start instead of one per pod.
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy is %q, want Parallel", sts.Spec.PodManagementPolicy)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas is %v, want 3", sts.Spec.Replicas)
	}
	if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the selector %v does not select the pod template's labels %v", sts.Spec.Selector, podLabels)
	}
	if svc := m.find("Service", sts.Spec.ServiceName); svc == nil {
		t.Errorf("serviceName %q names no Service of the build", sts.Spec.ServiceName)
	} else if s := typed[corev1.Service](t, svc); s.Spec.ClusterIP != corev1.ClusterIPNone || !selects(s.Spec.Selector, podLabels) {
		t.Errorf("Service %s is not headless (clusterIP %q) or does not select the pods (selector %v)", s.Name, s.Spec.ClusterIP, s.Spec.Selector)
	}

	// A member being stopped waits for its reconciles and hands its slots
	// over; a kubelet that kills it first leaves the slots until the Lease
	// expires.
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < shutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds is %v, want at least the manager's shutdown timeout, %d", g, shutdownTimeout)
	}

	// The member's identity and the ring's namespace come from the downward API.
	for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != path {
			t.Errorf("env %s does not come from the downward API's %s", name, path)
		}
	}

	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no %s probe over HTTP", p.kind)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || containerPort(c, p.probe.HTTPGet.Port) == 0 {
			t.Errorf("the %s probe gets %s on port %s, want %s on a port of the container", p.kind, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}

	checkHardening(t, pod, c)
}

// checkHardening checks the container's effective security context (the
// container's fields win over the pod's) against the restricted Pod Security
// Standard, plus a read-only root filesystem.
func checkHardening(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) {
	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	runAsNonRoot, seccomp := psc.RunAsNonRoot, psc.SeccompProfile
	if csc.RunAsNonRoot != nil {
		runAsNonRoot = csc.RunAsNonRoot
	}
	if csc.SeccompProfile != nil {
		seccomp = csc.SeccompProfile
	}
	if runAsNonRoot == nil || !*runAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile is %v, want RuntimeDefault", seccomp)
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities are %v, want ALL dropped and none added", csc.Capabilities)
	}
}

// checkRing checks that the ring the members look for is in the build, in
// their namespace, and that the webhook sees the creates of every kind the
// ring shards.
func checkRing(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	name, ok := flagValue(c.Args, "ring")
	if !ok {
		t.Fatal("no --ring in the args; name the ring explicitly")
	}
	ring := get[shardingv1alpha1.ShardRing](t, m, "ShardRing", name)
	if ring.Namespace != sts.Namespace {
		t.Errorf("ShardRing %s is in namespace %q, the members look in theirs, %q", name, ring.Namespace, sts.Namespace)
	}
	if ring.Spec.LeaseDurationSeconds != 15 {
		t.Errorf("leaseDurationSeconds is %d, want 15", ring.Spec.LeaseDurationSeconds)
	}
	if len(ring.Spec.Resources) == 0 {
		t.Fatal("the ring shards no resource")
	}

	var webhooks []admissionregistrationv1.MutatingWebhook
	for _, u := range m.all("MutatingWebhookConfiguration") {
		webhooks = append(webhooks, typed[admissionregistrationv1.MutatingWebhookConfiguration](t, u).Webhooks...)
	}
	// Every sharded kind goes through the webhook on create: for its slot
	// label and, for the main kinds, the operator's finalizer. In selectorMode
	// ShardSelector the API server selects the main kinds by uid and they carry
	// no label, so every update of theirs would match the webhook's
	// slot-label condition: they must be routed on create only.
	byUID := ring.Spec.SelectorMode == shardingv1alpha1.SelectorModeShardSelector
	routed := func(gr shardingv1alpha1.GroupResource, op admissionregistrationv1.OperationType) bool {
		return slices.ContainsFunc(webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return routes(w, gr, op) })
	}
	for _, r := range ring.Spec.Resources {
		if !routed(r.GroupResource, admissionregistrationv1.Create) {
			t.Errorf("no webhook sees creates of %q/%q, which the ring shards: no slot label, no finalizer", r.Group, r.Resource)
		}
		if byUID && routed(r.GroupResource, admissionregistrationv1.Update) {
			t.Errorf("a webhook is called on UPDATE of %q/%q, which the ring selects by uid (selectorMode ShardSelector)", r.Group, r.Resource)
		}
		for _, gr := range r.Children {
			if !routed(gr, admissionregistrationv1.Create) {
				t.Errorf("no webhook labels %q/%q on CREATE, which the ring shards as a child", gr.Group, gr.Resource)
			}
		}
	}
}

// routes says whether a webhook is called for operation op on objects of gr.
func routes(w admissionregistrationv1.MutatingWebhook, gr shardingv1alpha1.GroupResource, op admissionregistrationv1.OperationType) bool {
	matches := func(list []string, s string) bool { return slices.Contains(list, s) || slices.Contains(list, "*") }
	for _, r := range w.Rules {
		ops := make([]string, 0, len(r.Operations))
		for _, o := range r.Operations {
			ops = append(ops, string(o))
		}
		if matches(r.APIGroups, gr.Group) && matches(r.Resources, gr.Resource) && matches(ops, string(op)) {
			return true
		}
	}
	return false
}

// checkWebhook checks that the webhook can never block a write and that a
// webhook called through a Service reaches the members' webhook port.
func checkWebhook(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	whcs := m.all("MutatingWebhookConfiguration")
	if len(whcs) != 1 {
		t.Fatalf("%d MutatingWebhookConfigurations, want 1", len(whcs))
	}
	whc := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, whcs[0])
	if len(whc.Webhooks) == 0 {
		t.Fatal("the MutatingWebhookConfiguration has no webhooks")
	}
	for _, w := range whc.Webhooks {
		// An outage of the operator must not block writes of LargeData and
		// ConfigMaps in the whole cluster; the labeler catches up.
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("webhook %s: failurePolicy is %v, want Ignore", w.Name, w.FailurePolicy)
		}
		if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("webhook %s: sideEffects is %v, want None", w.Name, w.SideEffects)
		}
		ref := w.ClientConfig.Service
		if ref == nil {
			continue // a URL; the overlay's own test checks it
		}
		u := m.find("Service", ref.Name)
		if u == nil || u.GetNamespace() != ref.Namespace {
			t.Errorf("webhook %s calls Service %s/%s, which is not in the build", w.Name, ref.Namespace, ref.Name)
			continue
		}
		svc := typed[corev1.Service](t, u)
		if !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
			t.Errorf("webhook %s: Service %s does not select the operator's pods", w.Name, svc.Name)
		}
		port := int32(443)
		if ref.Port != nil {
			port = *ref.Port
		}
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port })
		if i < 0 {
			t.Errorf("webhook %s calls port %d of Service %s, which has no such port", w.Name, port, svc.Name)
			continue
		}
		target := containerPort(c, svc.Spec.Ports[i].TargetPort)
		if target == 0 {
			t.Errorf("Service %s port %d targets %s, which the container does not declare", svc.Name, port, svc.Spec.Ports[i].TargetPort.String())
		}
		if arg, _ := flagValue(c.Args, "webhook-port"); arg != strconv.Itoa(int(target)) {
			t.Errorf("Service %s sends webhook calls to port %d, the operator listens on --webhook-port=%q", svc.Name, target, arg)
		}
	}
}

func checkDisruptionBudget(t *testing.T, m manifest) {
	sts, _ := operator(t, m)
	pdbs := m.all("PodDisruptionBudget")
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
	}
	pdb := typed[policyv1.PodDisruptionBudget](t, pdbs[0])
	// One member at a time: each drain is one handover of one member's slots.
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" {
		t.Errorf("maxUnavailable is %v, want 1", pdb.Spec.MaxUnavailable)
	}
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("the budget's selector %v does not select the operator's pods", pdb.Spec.Selector)
	}
}

// checkServiceAccount checks that the pods run as a ServiceAccount of the
// build that both generated roles are bound to: the ring's Role in the
// pods' namespace and the operator's ClusterRole. What it may do, in effect,
// is TestOperatorPermissions's business.
func checkServiceAccount(t *testing.T, m manifest) {
	sts, _ := operator(t, m)
	name := sts.Spec.Template.Spec.ServiceAccountName
	sa := m.find("ServiceAccount", name)
	if sa == nil || sa.GetNamespace() != sts.Namespace {
		t.Fatalf("serviceAccountName %q names no ServiceAccount of the build in %s", name, sts.Namespace)
	}
	want := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: sts.Namespace}
	bound := func(kind, bindingKind, role string) bool {
		for _, u := range m.all(bindingKind) {
			if bindingKind == "RoleBinding" && u.GetNamespace() != sts.Namespace {
				continue
			}
			b := typed[rbacv1.RoleBinding](t, u)
			if b.RoleRef.Kind == kind && b.RoleRef.Name == role && slices.Contains(b.Subjects, want) {
				return true
			}
		}
		return false
	}
	if !bound("Role", "RoleBinding", "kubeshard-ring") {
		t.Errorf("no RoleBinding in %s binds Role kubeshard-ring to %s/%s", sts.Namespace, want.Namespace, want.Name)
	}
	if !bound("ClusterRole", "ClusterRoleBinding", "largedata-operator") {
		t.Errorf("no ClusterRoleBinding binds ClusterRole largedata-operator to %s/%s", want.Namespace, want.Name)
	}
}

// checkPortsMatchArgs checks, for an overlay with fixed ports, that the
// ports the operator binds (its args) are the ports the pod declares, the
// probes get and the metrics Service scrapes.
func checkPortsMatchArgs(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	port := func(flag string) int32 {
		t.Helper()
		v, ok := flagValue(c.Args, flag)
		if !ok {
			t.Fatalf("no --%s in the args", flag)
		}
		p, err := bindPort(v)
		if err != nil {
			t.Fatalf("--%s: %v", flag, err)
		}
		return p
	}
	health, metrics := port("health-probe-bind-address"), port("metrics-bind-address")
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p != nil && p.HTTPGet != nil && containerPort(c, p.HTTPGet.Port) != health {
			t.Errorf("a probe gets port %s, the operator serves probes on %d", p.HTTPGet.Port.String(), health)
		}
	}
	svc := get[corev1.Service](t, m, "Service", sts.Spec.ServiceName)
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" })
	if i < 0 || containerPort(c, svc.Spec.Ports[i].TargetPort) != metrics {
		t.Errorf("Service %s has no port named metrics that targets the operator's metrics port %d", svc.Name, metrics)
	}
}
