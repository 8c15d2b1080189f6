package slotwebhook

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// FuzzHandle sends the webhook arbitrary admission requests: any bytes as
// the object, any operation and kind. It must never panic and never refuse
// (it fails open), and a patch it returns may only set the slot label, to the
// slot of the object's namespace and name, and add the configured finalizer to
// a created Widget that lacks it.
func FuzzHandle(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"w","namespace":"team-a"}}`), "CREATE", "Widget", "")
	f.Add([]byte(`{"metadata":{"name":"w","namespace":"team-a","labels":{"sharding.kubeshard.dev/slot":"007"}}}`), "UPDATE", "Widget", "")
	f.Add([]byte(`{"metadata":{"generateName":"w-"}}`), "CREATE", "Widget", "team-a")
	f.Add([]byte(`{"metadata":{"name":"c","ownerReferences":[{"apiVersion":"example.kubeshard.dev/v1","kind":"Widget","name":"w","uid":"u","controller":true}]}}`), "CREATE", "ConfigMap", "team-a")
	f.Add([]byte(`{"metadata":null}`), "DELETE", "Widget", "")
	f.Add([]byte(`not json`), "CREATE", "Widget", "")
	const finalizer = "example.kubeshard.dev/cleanup"
	h, err := New(fakeReader(testRing()), testMapper(), Options{
		Ring: ringKey, Registerer: prometheus.NewRegistry(),
		Finalizers: map[schema.GroupKind]string{widgetGK.GroupKind(): finalizer},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, op, kind, namespace string) {
		gvk := widgetGK
		if kind == "ConfigMap" {
			gvk = configMapGK
		}
		req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID:       "fuzz",
			Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
			Operation: admissionv1.Operation(op),
			Namespace: namespace,
		}}
		req.Object.Raw = raw
		resp := h.Handle(t.Context(), req)
		if !resp.Allowed {
			t.Fatalf("the webhook refused %s %s %q: %+v; it must fail open", op, kind, raw, resp.Result)
		}
		if len(resp.Patches) == 0 {
			return
		}
		var obj metav1.PartialObjectMetadata
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatalf("a patch for an object that does not decode: %q", raw)
		}
		labelOps, finalizerOps := 0, 0
		for _, p := range resp.Patches {
			var value string
			switch p.Path {
			case "/metadata/labels":
				labels, _ := p.Value.(map[string]string)
				value = labels[shardingv1alpha1.LabelSlot]
			case "/metadata/labels/sharding.kubeshard.dev~1slot":
				value, _ = p.Value.(string)
			case "/metadata/finalizers", "/metadata/finalizers/-":
				finalizerOps++
				if op != string(admissionv1.Create) || gvk != widgetGK || slices.Contains(obj.Finalizers, finalizer) {
					t.Fatalf("a finalizer patch %v for %s %s %q: only a created Widget without it gets one", p, op, kind, raw)
				}
				if v, _ := p.Value.(string); v != finalizer && !slices.Equal(asStrings(p.Value), []string{finalizer}) {
					t.Fatalf("a finalizer patch %v for %q, want %s added", p, raw, finalizer)
				}
				continue
			default:
				t.Fatalf("a patch of %s for %q: the webhook may only set the slot label and the finalizer", p.Path, raw)
			}
			labelOps++
			if gvk == widgetGK {
				ns := obj.Namespace
				if ns == "" {
					ns = namespace
				}
				if want := strconv.Itoa(ring.Slot(ns, obj.Name, slots)); value != want {
					t.Fatalf("slot label %q for %s/%s, want %q", value, ns, obj.Name, want)
				}
			}
		}
		if labelOps > 1 || finalizerOps > 1 {
			t.Fatalf("%d label and %d finalizer operations for %q, want at most one each", labelOps, finalizerOps, raw)
		}
	})
}

func asStrings(v any) []string {
	s, _ := v.([]string)
	return s
}
