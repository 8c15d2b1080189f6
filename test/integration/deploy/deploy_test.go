package deploy

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/slotwebhook"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

// TestBase checks deploy/base: the operator with a webhook called through
// its Service, and certificates left to an overlay.
func TestBase(t *testing.T) {
	m := build(t, "deploy/base")
	checkCommon(t, m)
	t.Run("ports", func(t *testing.T) { checkPortsMatchArgs(t, m) })
	t.Run("dry-run", func(t *testing.T) { dryRun(t, m) })
}

// TestDefault checks deploy/default: the base with cert-manager's webhook
// certificate, the Prometheus Operator's monitoring and peer snapshots.
func TestDefault(t *testing.T) {
	m := build(t, "deploy/default")
	checkCommon(t, m)
	t.Run("ports", func(t *testing.T) { checkPortsMatchArgs(t, m) })
	t.Run("certificate", func(t *testing.T) { checkCertificate(t, m) })
	t.Run("monitoring", func(t *testing.T) { checkMonitoring(t, m) })
	t.Run("peers", func(t *testing.T) { checkPeers(t, m) })
	t.Run("dry-run", func(t *testing.T) { dryRun(t, m) })
}

// TestShardSelector checks deploy/shardselector: deploy/default with the
// ring in selectorMode ShardSelector, so the webhook sees LargeData creates
// only, for the finalizer (checkRing).
func TestShardSelector(t *testing.T) {
	m := build(t, "deploy/shardselector")
	checkCommon(t, m)
	if ring := get[shardingv1alpha1.ShardRing](t, m, "ShardRing", "largedata"); ring.Spec.SelectorMode != shardingv1alpha1.SelectorModeShardSelector {
		t.Errorf("selectorMode is %q, want ShardSelector", ring.Spec.SelectorMode)
	}
	t.Run("ports", func(t *testing.T) { checkPortsMatchArgs(t, m) })
	t.Run("certificate", func(t *testing.T) { checkCertificate(t, m) })
	t.Run("peers", func(t *testing.T) { checkPeers(t, m) })
	t.Run("dry-run", func(t *testing.T) { dryRun(t, m) })
}

// TestLocal checks deploy/local against what test/podrunner and make demo
// provide (deploy/local/README.md).
func TestLocal(t *testing.T) {
	m := build(t, "deploy/local")
	checkCommon(t, m)
	t.Run("podrunner", func(t *testing.T) { checkLocalContract(t, m) })
	t.Run("dry-run", func(t *testing.T) { dryRun(t, m) })
}

// checkCertificate checks that cert-manager's certificate is valid for the
// webhook's Service, lands where the operator reads it, and that its CA is
// injected into the webhook configuration.
func checkCertificate(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	certDir, _ := flagValue(c.Args, "webhook-cert-dir")
	cert := certificateMountedAt(t, m, sts, c, certDir)
	if cert == nil {
		t.Fatalf("no Certificate's Secret is mounted at --webhook-cert-dir=%q", certDir)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if issuer := issuerOf(m, cert); issuer == nil {
		t.Errorf("the Certificate %s's issuer is not an Issuer of the build", cert.GetName())
	} else if _, selfSigned, _ := unstructured.NestedMap(issuer.Object, "spec", "selfSigned"); !selfSigned {
		t.Errorf("Issuer %s is not selfSigned", issuer.GetName())
	}

	whc := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, m.all("MutatingWebhookConfiguration")[0])
	if got, want := whc.Annotations["cert-manager.io/inject-ca-from"], cert.GetNamespace()+"/"+cert.GetName(); got != want {
		t.Errorf("the webhook configuration's cert-manager.io/inject-ca-from is %q, want %q", got, want)
	}
	for _, w := range whc.Webhooks {
		if ref := w.ClientConfig.Service; ref != nil && !slices.Contains(dnsNames, ref.Name+"."+ref.Namespace+".svc") {
			t.Errorf("webhook %s calls %s.%s.svc, which is not among the Certificate's dnsNames %v", w.Name, ref.Name, ref.Namespace, dnsNames)
		}
	}
}

// checkLocalContract checks the overlay against test/podrunner, which runs
// the pods as local processes: every port is one podrunner picks, on
// loopback, and the webhook is called on loopback.
func checkLocalContract(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	for flag, want := range map[string]string{
		"metrics-bind-address":      "127.0.0.1:$(" + podrunner.EnvMetricsPort + ")",
		"health-probe-bind-address": "127.0.0.1:$(" + podrunner.EnvHealthPort + ")",
		"webhook-host":              "127.0.0.1",
		"webhook-port":              "$(" + podrunner.EnvWebhookPort + ")",
		"webhook-cert-dir":          "$(WEBHOOK_CERT_DIR)",
		"webhook":                   "true",
	} {
		if got, _ := flagValue(c.Args, flag); got != want {
			t.Errorf("--%s is %q, want %q", flag, got, want)
		}
	}
	// make demo selects the pods to run by this label.
	if got := sts.Spec.Template.Labels["app.kubernetes.io/name"]; got != statefulSetName {
		t.Errorf("the pods' app.kubernetes.io/name is %q, want %q", got, statefulSetName)
	}

	// The path comes from the generated configuration, where the Service
	// reference carries it.
	generated := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, readDocuments(t, "deploy/base/webhook/manifests.yaml")[0])
	paths := map[string]string{}
	for _, w := range generated.Webhooks {
		paths[w.Name] = *w.ClientConfig.Service.Path
	}
	whc := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, m.all("MutatingWebhookConfiguration")[0])
	for _, w := range whc.Webhooks {
		cc := w.ClientConfig
		if want := "https://127.0.0.1:19443" + paths[w.Name]; cc.URL == nil || *cc.URL != want || cc.Service != nil {
			t.Errorf("webhook %s: clientConfig is %+v, want url %s and no service", w.Name, cc, want)
		}
		// make demo injects the CA of the certificate it generates.
		if len(cc.CABundle) > 0 {
			t.Errorf("webhook %s has a caBundle; the demo injects it at apply time", w.Name)
		}
	}

	for _, u := range m.objs {
		if foreignKinds[u.GroupVersionKind()] {
			t.Errorf("%s %s needs another project's CRD, which the local cluster does not have", u.GetKind(), u.GetName())
		}
	}
}

// TestGeneratedManifestsReachTheBuild checks that what controller-gen writes
// into deploy/base (make generate) reaches the base's build unchanged: a new
// CRD file must be listed in crd/kustomization.yaml, and no patch may change
// the generated rules.
func TestGeneratedManifestsReachTheBuild(t *testing.T) {
	m := build(t, "deploy/base")
	files, err := filepath.Glob(filepath.Join(moduleRoot(t), "deploy", "base", "crd", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crds := 0
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, want := range readDocuments(t, filepath.Join("deploy", "base", "crd", filepath.Base(f))) {
			crds++
			got := m.find("CustomResourceDefinition", want.GetName())
			if got == nil {
				t.Errorf("CRD %s (%s) is not in the build; list the file in deploy/base/crd/kustomization.yaml", want.GetName(), filepath.Base(f))
			} else if !reflect.DeepEqual(got.Object["spec"], want.Object["spec"]) {
				t.Errorf("the build changed the spec of CRD %s", want.GetName())
			}
		}
	}
	if crds == 0 {
		t.Error("no CRDs in deploy/base/crd")
	}

	for _, file := range []string{"deploy/base/rbac/ring/role.yaml", "deploy/base/rbac/operator/role.yaml"} {
		for _, want := range readDocuments(t, file) {
			got := m.find(want.GetKind(), want.GetName())
			if got == nil || !reflect.DeepEqual(got.Object["rules"], want.Object["rules"]) {
				t.Errorf("%s %s (%s) is missing from the build or its rules changed", want.GetKind(), want.GetName(), file)
			}
		}
	}

	generated := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, readDocuments(t, "deploy/base/webhook/manifests.yaml")[0])
	built := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, m.all("MutatingWebhookConfiguration")[0])
	if len(built.Webhooks) != len(generated.Webhooks) {
		t.Fatalf("the build has %d webhooks, controller-gen wrote %d", len(built.Webhooks), len(generated.Webhooks))
	}
	for i, want := range generated.Webhooks {
		got := built.Webhooks[i]
		// Only the Service's namespace may change: "system" becomes the
		// operator's namespace.
		want.ClientConfig.Service.Namespace = operatorNamespace
		if !reflect.DeepEqual(got, want) {
			t.Errorf("webhook %s changed in the build:\n got %+v\nwant %+v", want.Name, got, want)
		}
	}
	if !strings.HasPrefix(built.Name, "kubeshard-") {
		t.Errorf("the webhook configuration is named %q; a cluster-scoped object needs a name no other project uses", built.Name)
	}
}

// TestTheWebhookConfigurationKeepsTheLibrarysMatchConditions checks that the
// configuration the example operator's markers generate routes with the
// match conditions the slot-label webhook is written for, which
// pkg/slotwebhook keeps in one place: without them every update of every
// sharded object, or every ConfigMap created in the cluster, would pay a
// webhook round trip.
func TestTheWebhookConfigurationKeepsTheLibrarysMatchConditions(t *testing.T) {
	generated := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, readDocuments(t, "deploy/base/webhook/manifests.yaml")[0])
	want := map[string]string{
		"slot-label.sharding.kubeshard.dev":       slotwebhook.MatchSlotLabelTouched,
		"child-slot-label.sharding.kubeshard.dev": slotwebhook.MatchHasController,
	}
	for _, wh := range generated.Webhooks {
		expr, known := want[wh.Name]
		if !known {
			t.Errorf("webhook %s: unknown to this test; give it one of the library's match conditions", wh.Name)
			continue
		}
		delete(want, wh.Name)
		if len(wh.MatchConditions) != 1 || wh.MatchConditions[0].Expression != expr {
			t.Errorf("webhook %s has match conditions %+v, want exactly the expression %q", wh.Name, wh.MatchConditions, expr)
		}
	}
	for name := range want {
		t.Errorf("webhook %s is not in the generated configuration", name)
	}
}
