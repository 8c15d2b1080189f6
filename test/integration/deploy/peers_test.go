package deploy

import (
	"net"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kubeshard/kubeshard/pkg/sharding"
)

// checkPeers checks deploy/peers as an overlay builds it: every member
// publishes an address the others reach and whose name its metrics
// certificate carries, the others trust that certificate through the CA the
// member is given, and the members may ask each other for snapshots. A
// mistake in any of these costs nothing visible at first: every snapshot
// fails and each newcomer falls back to listing from the API server.
func checkPeers(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	addr, ok := flagValue(c.Args, "peer-address")
	if !ok {
		t.Fatal("no --peer-address in the args: peer snapshots are off")
	}
	if v, _ := flagValue(c.Args, "metrics-secure"); v == "false" {
		t.Fatal("--metrics-secure=false: the members would refuse to serve snapshots over plain HTTP")
	}

	// The address, as the kubelet expands it for the third pod.
	pod := sts.Name + "-2"
	expanded := expandEnv(t, c, addr, map[string]string{"metadata.name": pod, "metadata.namespace": sts.Namespace})
	host, port, err := net.SplitHostPort(expanded)
	if err != nil {
		t.Fatalf("--peer-address=%s expands to %q: %v", addr, expanded, err)
	}
	if want := pod + "." + sts.Spec.ServiceName + "." + sts.Namespace + ".svc"; host != want {
		t.Errorf("--peer-address=%s names host %q for pod %s, want its name under the StatefulSet's Service, %q", addr, host, pod, want)
	}
	metricsAddr, _ := flagValue(c.Args, "metrics-bind-address")
	if _, metricsPort, _ := net.SplitHostPort(metricsAddr); port != metricsPort {
		t.Errorf("--peer-address=%s has port %s, the metrics server (which serves the snapshots) listens on %q", addr, port, metricsAddr)
	}

	// The name resolves for members that are not ready, too: a member
	// draining its slots or still joining is asked for snapshots.
	svc := get[corev1.Service](t, m, "Service", sts.Spec.ServiceName)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("Service %s is not a headless Service of the StatefulSet's pods: no DNS name per member", svc.Name)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s does not publish not-ready addresses: a member that is not ready has no DNS name for the others", svc.Name)
	}

	// The metrics server's certificate carries that name and comes from a
	// CA whose certificate is the file the members verify each other with.
	certDir, _ := flagValue(c.Args, "metrics-cert-dir")
	cert := certificateMountedAt(t, m, sts, c, certDir)
	if cert == nil {
		t.Fatalf("no Certificate's Secret is mounted at --metrics-cert-dir=%q: the members serve self-signed certificates nobody can verify", certDir)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if !slices.ContainsFunc(dnsNames, func(name string) bool { return dnsNameMatches(name, host) }) {
		t.Errorf("Certificate %s's dnsNames %v do not cover %s", cert.GetName(), dnsNames, host)
	}
	if ca, _ := flagValue(c.Args, "peer-ca-file"); filepath.Clean(ca) != filepath.Join(certDir, "ca.crt") {
		t.Errorf("--peer-ca-file=%q, want the CA cert-manager puts beside the certificate, %s", ca, filepath.Join(certDir, "ca.crt"))
	}
	issuer := issuerOf(m, cert)
	if issuer == nil {
		t.Fatalf("Certificate %s's issuer is not an Issuer of the build", cert.GetName())
	}
	caSecret, _, _ := unstructured.NestedString(issuer.Object, "spec", "ca", "secretName")
	i := slices.IndexFunc(m.all("Certificate"), func(u *unstructured.Unstructured) bool {
		s, _, _ := unstructured.NestedString(u.Object, "spec", "secretName")
		isCA, _, _ := unstructured.NestedBool(u.Object, "spec", "isCA")
		return caSecret != "" && s == caSecret && isCA
	})
	if i < 0 {
		t.Errorf("Issuer %s is not a CA Issuer whose Secret a CA Certificate of the build makes: ca.crt would not verify the other members", issuer.GetName())
	}

	// A member asks with its ServiceAccount's token; the metrics server
	// lets it in when the ServiceAccount may get the snapshot URL.
	if !clusterRoleGrants(t, m, "largedata-operator", sharding.SnapshotPath, "get") {
		t.Errorf("ClusterRole largedata-operator does not grant get on %s", sharding.SnapshotPath)
	}
}

// expandEnv expands $(VAR) in s the way the kubelet does, from the
// container's environment; values from a field reference are taken from
// fields.
func expandEnv(t *testing.T, c *corev1.Container, s string, fields map[string]string) string {
	t.Helper()
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				continue
			}
			v = fields[e.ValueFrom.FieldRef.FieldPath]
		}
		s = strings.ReplaceAll(s, "$("+e.Name+")", v)
	}
	if strings.Contains(s, "$(") {
		t.Fatalf("%q names a variable the container does not define", s)
	}
	return s
}

// dnsNameMatches says whether a certificate's DNS name, which may start
// with one wildcard label, covers host.
func dnsNameMatches(name, host string) bool {
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		_, hostRest, found := strings.Cut(host, ".")
		return found && hostRest == rest
	}
	return name == host
}

// certificateMountedAt returns the Certificate whose Secret the manager
// container mounts at dir, or nil.
func certificateMountedAt(t *testing.T, m manifest, sts *appsv1.StatefulSet, c *corev1.Container, dir string) *unstructured.Unstructured {
	t.Helper()
	if dir == "" {
		return nil
	}
	var secret string
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil && slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
			return vm.Name == v.Name && path.Clean(vm.MountPath) == path.Clean(dir)
		}) {
			secret = v.Secret.SecretName
		}
	}
	for _, u := range m.all("Certificate") {
		if s, _, _ := unstructured.NestedString(u.Object, "spec", "secretName"); secret != "" && s == secret {
			return u
		}
	}
	return nil
}

// issuerOf returns the Issuer of the build that signs cert, or nil.
func issuerOf(m manifest, cert *unstructured.Unstructured) *unstructured.Unstructured {
	kind, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "kind")
	name, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	if kind != "Issuer" {
		return nil
	}
	return m.find(kind, name)
}

// clusterRoleGrants says whether the ClusterRole name of the build allows
// verb on the non-resource URL url.
func clusterRoleGrants(t *testing.T, m manifest, name, url, verb string) bool {
	role := get[rbacv1.ClusterRole](t, m, "ClusterRole", name)
	return slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.NonResourceURLs, url) && (slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, rbacv1.VerbAll))
	})
}
