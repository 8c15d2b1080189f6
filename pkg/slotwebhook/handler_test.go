package slotwebhook

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testkind"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

const slots = 1024

var (
	ringKey     = types.NamespacedName{Namespace: "kubeshard-system", Name: "widgets"}
	widgetGK    = schema.GroupVersionKind{Group: "example.kubeshard.dev", Version: "v1", Kind: "Widget"}
	configMapGK = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	deployGK    = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
)

func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	gvr := widgetGK.GroupVersion().WithResource("widgets")
	m.AddSpecific(widgetGK, gvr, gvr, meta.RESTScopeNamespace)
	m.Add(configMapGK, meta.RESTScopeNamespace)
	m.Add(deployGK, meta.RESTScopeNamespace)
	return m
}

func testRing() *shardingv1alpha1.ShardRing {
	return &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ringKey.Namespace, Name: ringKey.Name, Generation: 1},
		Spec: shardingv1alpha1.ShardRingSpec{
			Slots: slots,
			Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"},
				Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
			}},
		},
	}
}

type fixture struct {
	h   *Handler
	reg *prometheus.Registry
}

func newFixture(t testing.TB, reader client.Reader) fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := New(reader, testMapper(), Options{Ring: ringKey, Registerer: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return fixture{h: h, reg: reg}
}

func fakeReader(objs ...client.Object) client.WithWatch {
	return fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithObjects(objs...).Build()
}

func request(t *testing.T, op admissionv1.Operation, gvk schema.GroupVersionKind, resource string, obj, old runtime.Object) admission.Request {
	t.Helper()
	raw := func(o runtime.Object) runtime.RawExtension {
		if o == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatalf("encoding %T: %v", o, err)
		}
		return runtime.RawExtension{Raw: b}
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "req-1",
		Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
		Resource:  metav1.GroupVersionResource{Group: gvk.Group, Version: gvk.Version, Resource: resource},
		Namespace: m.GetNamespace(),
		Name:      m.GetName(),
		Operation: op,
		Object:    raw(obj),
		OldObject: raw(old),
	}}
}

// admitted applies the response's patch to the request's object, as the API
// server does, and returns the resulting labels.
func admitted(t *testing.T, req admission.Request, resp admission.Response) map[string]string {
	t.Helper()
	return admittedMeta(t, req, resp).Labels
}

// admittedMeta applies the response's patch to the request's object, as the
// API server does, and returns the resulting metadata.
func admittedMeta(t *testing.T, req admission.Request, resp admission.Response) metav1.ObjectMeta {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("response denies the request: %+v", resp.Result)
	}
	if err := resp.Complete(req); err != nil {
		t.Fatalf("completing the response: %v", err)
	}
	obj := req.Object.Raw
	if len(resp.Patch) > 0 {
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("decoding the patch %s: %v", resp.Patch, err)
		}
		if obj, err = p.Apply(obj); err != nil {
			t.Fatalf("applying the patch %s: %v", resp.Patch, err)
		}
	}
	var out metav1.PartialObjectMetadata
	if err := json.Unmarshal(obj, &out); err != nil {
		t.Fatal(err)
	}
	return out.ObjectMeta
}

func widget(name string, labels map[string]string) *testkind.Widget {
	return &testkind.Widget{
		TypeMeta:   metav1.TypeMeta{APIVersion: widgetGK.GroupVersion().String(), Kind: widgetGK.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, Labels: labels},
		Spec:       testkind.WidgetSpec{Size: 10},
	}
}

func configMap(name string, controller *schema.GroupVersionKind, ownerName string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, Labels: map[string]string{"app": "x"}},
		Data:       map[string]string{"k": "v"},
	}
	if controller != nil {
		cm.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: controller.GroupVersion().String(), Kind: controller.Kind,
			Name: ownerName, UID: "owner-uid", Controller: new(true),
		}}
	}
	return cm
}

func slotValue(ns, name string) string { return slotlabel.Value(ring.Slot(ns, name, slots)) }

func TestHandle(t *testing.T) {
	want := slotValue("team-a", "dataset")
	generated := widget("", nil)
	generated.GenerateName = "dataset-"
	noNamespace := widget("dataset", nil)
	noNamespace.Namespace = ""

	for _, tc := range []struct {
		name       string
		req        func(t *testing.T) admission.Request
		wantLabels map[string]string
		wantPatch  bool
		wantResult string
	}{
		{
			name: "create without labels",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", widget("dataset", nil), nil)
			},
			wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "create keeps the other labels",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets",
					widget("dataset", map[string]string{"team": "a"}), nil)
			},
			wantLabels: map[string]string{"team": "a", shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "create with a client-chosen slot: overwritten",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets",
					widget("dataset", map[string]string{shardingv1alpha1.LabelSlot: "not-mine"}), nil)
			},
			wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "create with the right slot: unchanged",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets",
					widget("dataset", map[string]string{shardingv1alpha1.LabelSlot: want}), nil)
			},
			wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want}, wantResult: resultUnchanged,
		},
		{
			name: "create without namespace in the object takes the request's",
			req: func(t *testing.T) admission.Request {
				r := request(t, admissionv1.Create, widgetGK, "widgets", noNamespace, nil)
				r.Namespace = "team-a"
				return r
			},
			wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "update that removed the label: restored",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Update, widgetGK, "widgets",
					widget("dataset", map[string]string{"team": "a"}),
					widget("dataset", map[string]string{"team": "a", shardingv1alpha1.LabelSlot: want}))
			},
			wantLabels: map[string]string{"team": "a", shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "update that changed the label: restored",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Update, widgetGK, "widgets",
					widget("dataset", map[string]string{shardingv1alpha1.LabelSlot: "3"}),
					widget("dataset", map[string]string{shardingv1alpha1.LabelSlot: want}))
			},
			wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "child takes its owner's slot",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, configMapGK, "configmaps",
					configMap("dataset-summary", &widgetGK, "dataset"), nil)
			},
			wantLabels: map[string]string{"app": "x", shardingv1alpha1.LabelSlot: want}, wantPatch: true, wantResult: resultLabelled,
		},
		{
			name: "child of a kind that is not sharded: unchanged",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, configMapGK, "configmaps",
					configMap("app-config", &deployGK, "app"), nil)
			},
			wantLabels: map[string]string{"app": "x"}, wantResult: resultSkipped,
		},
		{
			name: "child kind without a controller: unchanged",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, configMapGK, "configmaps", configMap("plain", nil, ""), nil)
			},
			wantLabels: map[string]string{"app": "x"}, wantResult: resultSkipped,
		},
		{
			name: "generateName: no name yet, allowed unchanged",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", generated, nil)
			},
			wantResult: resultSkipped,
		},
		{
			name: "kind not in the ring: unchanged",
			req: func(t *testing.T) admission.Request {
				obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "app"}}
				return request(t, admissionv1.Create, deployGK, "deployments", obj, nil)
			},
			wantResult: resultSkipped,
		},
		{
			name: "status update: unchanged",
			req: func(t *testing.T) admission.Request {
				r := request(t, admissionv1.Update, widgetGK, "widgets", widget("dataset", nil), widget("dataset", nil))
				r.SubResource = "status"
				return r
			},
			wantResult: resultSkipped,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fakeReader(testRing()))
			req := tc.req(t)
			resp := f.h.Handle(t.Context(), req)
			if got := len(resp.Patches) > 0; got != tc.wantPatch {
				t.Errorf("patched = %v (%v), want %v", got, resp.Patches, tc.wantPatch)
			}
			if got := admitted(t, req, resp); !equalMaps(got, tc.wantLabels) {
				t.Errorf("labels after admission = %v, want %v", got, tc.wantLabels)
			}
			if got := counter(t, f.reg, tc.wantResult); got != 1 {
				t.Errorf("kubeshard_webhook_assignments_total{result=%q} = %v, want 1", tc.wantResult, got)
			}
		})
	}
}

func TestHandleAllowsOnFailure(t *testing.T) {
	for _, tc := range []struct {
		name       string
		reader     client.Reader
		wantResult string
	}{
		{name: "ring missing", reader: fakeReader(), wantResult: resultSkipped},
		{
			name: "ring unreadable",
			reader: fake.NewClientBuilder().WithScheme(testkind.NewScheme()).WithInterceptorFuncs(interceptor.Funcs{
				Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
					return errors.New("connection refused")
				},
			}).Build(),
			wantResult: resultError,
		},
		{
			name: "ring names an unknown resource",
			reader: fakeReader(func() *shardingv1alpha1.ShardRing {
				r := testRing()
				r.Spec.Resources[0].Children = append(r.Spec.Resources[0].Children,
					shardingv1alpha1.GroupResource{Group: "example.com", Resource: "gadgets"})
				return r
			}()),
			wantResult: resultError,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.reader)
			req := request(t, admissionv1.Create, widgetGK, "widgets", widget("dataset", nil), nil)
			resp := f.h.Handle(t.Context(), req)
			if !resp.Allowed || len(resp.Patches) > 0 {
				t.Errorf("response = allowed %v with %d patches, want allowed unchanged", resp.Allowed, len(resp.Patches))
			}
			if got := counter(t, f.reg, tc.wantResult); got != 1 {
				t.Errorf("kubeshard_webhook_assignments_total{result=%q} = %v, want 1", tc.wantResult, got)
			}
		})
	}
}

func TestHandleFollowsRingSpecChanges(t *testing.T) {
	ctx := t.Context()
	sr := testRing()
	sr.Spec.Resources[0].Children = nil
	c := fakeReader(sr)
	f := newFixture(t, c)
	child := func() admission.Request {
		return request(t, admissionv1.Create, configMapGK, "configmaps", configMap("summary", &widgetGK, "dataset"), nil)
	}
	if resp := f.h.Handle(ctx, child()); len(resp.Patches) > 0 {
		t.Fatalf("a ConfigMap was labelled while the ring lists no children: %v", resp.Patches)
	}

	if err := c.Get(ctx, ringKey, sr); err != nil {
		t.Fatal(err)
	}
	sr.Spec.Resources[0].Children = []shardingv1alpha1.GroupResource{{Resource: "configmaps"}}
	sr.Generation++ // the API server bumps it on a spec change; the fake client does not
	if err := c.Update(ctx, sr); err != nil {
		t.Fatal(err)
	}
	req := child()
	got := admitted(t, req, f.h.Handle(ctx, req))
	if want := slotValue("team-a", "dataset"); got[shardingv1alpha1.LabelSlot] != want {
		t.Errorf("after the ring listed configmaps as children: slot label %q, want %q", got[shardingv1alpha1.LabelSlot], want)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	return testenv.MetricValue(t, reg, "kubeshard_webhook_assignments_total", map[string]string{"ring": ringKey.Name, "result": result})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// In selectorMode ShardSelector the sharded kind is selected by uid and left
// unlabelled; a child gets the slot of its owner's uid from its reference.
func TestHandleByUID(t *testing.T) {
	sr := testRing()
	sr.Spec.SelectorMode = shardingv1alpha1.SelectorModeShardSelector
	f := newFixture(t, fakeReader(sr))

	req := request(t, admissionv1.Create, widgetGK, "widgets", widget("dataset", nil), nil)
	resp := f.h.Handle(t.Context(), req)
	if got := admitted(t, req, resp); len(got) != 0 || len(resp.Patches) > 0 {
		t.Errorf("a Widget was given labels %v (patch %v); selectorMode ShardSelector labels none", got, resp.Patches)
	}

	req = request(t, admissionv1.Create, configMapGK, "configmaps", configMap("summary", &widgetGK, "dataset"), nil)
	want := slotlabel.Value(ring.UIDSlot("owner-uid", slots))
	if got := admitted(t, req, f.h.Handle(t.Context(), req)); got[shardingv1alpha1.LabelSlot] != want {
		t.Errorf("a child got slot label %q, want %q, the slot of its owner's uid", got[shardingv1alpha1.LabelSlot], want)
	}
}

// The finalizer Options.Finalizers names is set on CREATE of its kind, in any
// selector mode and whatever happens to the label, never twice and never on
// UPDATE.
func TestHandleSetsFinalizersOnCreate(t *testing.T) {
	const finalizer = "example.kubeshard.dev/cleanup"
	want := slotValue("team-a", "dataset")
	withFinalizers := func(w *testkind.Widget, f ...string) *testkind.Widget { w.Finalizers = f; return w }
	generated := widget("", nil)
	generated.GenerateName = "dataset-"
	byUID := testRing()
	byUID.Spec.SelectorMode = shardingv1alpha1.SelectorModeShardSelector

	for _, tc := range []struct {
		name           string
		ring           *shardingv1alpha1.ShardRing
		req            func(t *testing.T) admission.Request
		wantFinalizers []string
		wantLabels     map[string]string
	}{
		{
			name: "create: finalizer and label in one patch",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", widget("dataset", nil), nil)
			},
			wantFinalizers: []string{finalizer}, wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want},
		},
		{
			name: "create with the right label: finalizer only",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets",
					widget("dataset", map[string]string{shardingv1alpha1.LabelSlot: want}), nil)
			},
			wantFinalizers: []string{finalizer}, wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want},
		},
		{
			name: "create with other finalizers: appended",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", withFinalizers(widget("dataset", nil), "other/keep"), nil)
			},
			wantFinalizers: []string{"other/keep", finalizer}, wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want},
		},
		{
			name: "create with the finalizer already: not twice",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", withFinalizers(widget("dataset", nil), finalizer), nil)
			},
			wantFinalizers: []string{finalizer}, wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want},
		},
		{
			name: "update: the finalizer is the reconciler's to restore",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Update, widgetGK, "widgets", widget("dataset", nil),
					widget("dataset", map[string]string{shardingv1alpha1.LabelSlot: want}))
			},
			wantLabels: map[string]string{shardingv1alpha1.LabelSlot: want},
		},
		{
			name: "selectorMode ShardSelector: finalizer, no label",
			ring: byUID,
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", widget("dataset", nil), nil)
			},
			wantFinalizers: []string{finalizer},
		},
		{
			name: "generateName: finalizer, the labeler labels later",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", generated, nil)
			},
			wantFinalizers: []string{finalizer},
		},
		{
			name: "no ShardRing: finalizer all the same",
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, widgetGK, "widgets", widget("dataset", nil), nil)
			},
			wantFinalizers: []string{finalizer},
		},
		{
			name: "another kind: no finalizer",
			ring: testRing(),
			req: func(t *testing.T) admission.Request {
				return request(t, admissionv1.Create, configMapGK, "configmaps", configMap("dataset-summary", &widgetGK, "dataset"), nil)
			},
			wantLabels: map[string]string{"app": "x", shardingv1alpha1.LabelSlot: want},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []client.Object
			if tc.ring != nil {
				objs = append(objs, tc.ring)
			}
			h, err := New(fakeReader(objs...), testMapper(), Options{
				Ring: ringKey, Registerer: prometheus.NewRegistry(),
				Finalizers: map[schema.GroupKind]string{widgetGK.GroupKind(): finalizer},
			})
			if err != nil {
				t.Fatal(err)
			}
			req := tc.req(t)
			got := admittedMeta(t, req, h.Handle(t.Context(), req))
			if !slices.Equal(got.Finalizers, tc.wantFinalizers) {
				t.Errorf("finalizers after admission = %v, want %v", got.Finalizers, tc.wantFinalizers)
			}
			if !equalMaps(got.Labels, tc.wantLabels) {
				t.Errorf("labels after admission = %v, want %v", got.Labels, tc.wantLabels)
			}
		})
	}
}
