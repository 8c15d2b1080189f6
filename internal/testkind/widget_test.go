package testkind

import (
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// The CRD at CRDPath serves the kind the Go types and GroupVersion describe:
// a mismatch would show up as an envtest failure far from its cause.
func TestTheCRDServesTheGoKind(t *testing.T) {
	f, err := os.Open(CRDPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	crd := map[string]any{}
	if err := yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&crd); err != nil {
		t.Fatal(err)
	}
	gvks, _, err := NewScheme().ObjectKinds(&Widget{})
	if err != nil || len(gvks) != 1 {
		t.Fatalf("the scheme knows Widget as %v, %v", gvks, err)
	}
	for _, tc := range []struct {
		path []string
		want string
	}{
		{[]string{"metadata", "name"}, "widgets." + GroupVersion.Group},
		{[]string{"spec", "group"}, gvks[0].Group},
		{[]string{"spec", "names", "kind"}, gvks[0].Kind},
		{[]string{"spec", "names", "listKind"}, gvks[0].Kind + "List"},
		{[]string{"spec", "names", "plural"}, "widgets"},
		{[]string{"spec", "scope"}, "Namespaced"},
	} {
		if got, _, _ := unstructured.NestedString(crd, tc.path...); got != tc.want {
			t.Errorf("%v = %q, want %q", tc.path, got, tc.want)
		}
	}
	versions, _, _ := unstructured.NestedSlice(crd, "spec", "versions")
	if len(versions) != 1 {
		t.Fatalf("%d versions, want 1", len(versions))
	}
	v, _ := versions[0].(map[string]any)
	if name, _, _ := unstructured.NestedString(v, "name"); name != gvks[0].Version {
		t.Errorf("version %q, want %q", name, gvks[0].Version)
	}
	props := []string{"schema", "openAPIV3Schema", "properties"}
	for _, field := range [][]string{{"spec", "properties", "size"}, {"status", "properties", "observedGeneration"}} {
		if _, ok, _ := unstructured.NestedMap(v, append(append([]string{}, props...), field...)...); !ok {
			t.Errorf("the schema has no %v", field)
		}
	}
	if _, ok, _ := unstructured.NestedMap(v, "subresources", "status"); !ok {
		t.Error("the CRD has no status subresource")
	}
}

func TestDeepCopyDoesNotShareMetadata(t *testing.T) {
	l := &WidgetList{Items: []Widget{{}}}
	l.Items[0].Labels = map[string]string{"a": "1"}
	c := l.DeepCopy()
	c.Items[0].Labels["a"] = "2"
	c.Items[0].Spec.Size = 3
	if l.Items[0].Labels["a"] != "1" || l.Items[0].Spec.Size != 0 {
		t.Errorf("changing a copy changed the original: %+v", l.Items[0])
	}
}
