package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// Names the operator and its users rely on.
const (
	operatorNamespace = "kubeshard-system"
	statefulSetName   = "largedata-operator"
	containerName     = "manager"
	// shutdownTimeout is the manager's GracefulShutdownTimeout in
	// cmd/largedata-operator: the kubelet must wait at least as long.
	shutdownTimeout = 40
)

// manifest is what `kubectl kustomize` builds from one folder of deploy/.
type manifest struct {
	dir  string // relative to the module root, such as deploy/base
	objs []*unstructured.Unstructured
}

// build runs `kubectl kustomize` on dir (relative to the module root) and
// parses its output.
func build(t *testing.T, dir string) manifest {
	t.Helper()
	root := moduleRoot(t)
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin", "k8s")
	}
	cmd := exec.CommandContext(t.Context(), filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	objs, err := decodeDocuments(out)
	if err != nil {
		t.Fatalf("parsing the output of kubectl kustomize %s: %v", dir, err)
	}
	if len(objs) == 0 {
		t.Fatalf("kubectl kustomize %s built nothing", dir)
	}
	return manifest{dir: dir, objs: objs}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// decodeDocuments splits a multi-document YAML stream into objects, skipping
// empty documents.
func decodeDocuments(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// readDocuments parses a YAML file of the repository (relative to the module
// root).
func readDocuments(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), path))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeDocuments(data)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	return objs
}

// all returns the objects of a kind.
func (m manifest) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range m.objs {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// find returns the object of a kind with a name (in any namespace), or nil.
func (m manifest) find(kind, name string) *unstructured.Unstructured {
	for _, u := range m.all(kind) {
		if u.GetName() == name {
			return u
		}
	}
	return nil
}

// get is find that fails the test when the object is missing.
func get[T any](t *testing.T, m manifest, kind, name string) *T {
	t.Helper()
	u := m.find(kind, name)
	if u == nil {
		t.Fatalf("%s: no %s %q in the build", m.dir, kind, name)
	}
	return typed[T](t, u)
}

// typed converts an object to its Go type and fails the test on fields the
// type does not have, which kubectl would apply without complaint and the
// API server would drop.
func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// operator returns the operator's StatefulSet and its manager container.
func operator(t *testing.T, m manifest) (*appsv1.StatefulSet, *corev1.Container) {
	t.Helper()
	sts := get[appsv1.StatefulSet](t, m, "StatefulSet", statefulSetName)
	for i := range sts.Spec.Template.Spec.Containers {
		if c := &sts.Spec.Template.Spec.Containers[i]; c.Name == containerName {
			return sts, c
		}
	}
	t.Fatalf("%s: StatefulSet %s has no container %q", m.dir, statefulSetName, containerName)
	return nil, nil
}

// flagValue returns the value of a flag in args, "--name=value" or, for a
// boolean, "--name" ("true").
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if a == "--"+name {
			return "true", true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// containerPort resolves a probe's or a Service's target port, by name or
// number, to a port the container declares; 0 when it declares none.
func containerPort(c *corev1.Container, port intstr.IntOrString) int32 {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p.ContainerPort
		}
	}
	return 0
}

// bindPort is the port of a bind address such as ":8080" or "127.0.0.1:8080".
func bindPort(addr string) (int32, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bind address %q: %w", addr, err)
	}
	return int32(n), nil
}

// selects says whether a selector picks the pods of a template.
func selects(selector map[string]string, podLabels map[string]string) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(podLabels))
}
