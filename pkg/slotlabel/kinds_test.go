package slotlabel_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

var (
	widget     = schema.GroupVersionKind{Group: "example.kubeshard.dev", Version: "v1", Kind: "Widget"}
	cluster    = schema.GroupVersionKind{Group: "example.kubeshard.dev", Version: "v1", Kind: "ClusterWidget"}
	configMap  = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	secret     = schema.GroupVersionKind{Version: "v1", Kind: "Secret"}
	deployment = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
)

func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	m.AddSpecific(widget, widget.GroupVersion().WithResource("widgets"),
		widget.GroupVersion().WithResource("widgets"), meta.RESTScopeNamespace)
	m.AddSpecific(cluster, cluster.GroupVersion().WithResource("clusterwidgets"),
		cluster.GroupVersion().WithResource("clusterwidgets"), meta.RESTScopeRoot)
	m.Add(configMap, meta.RESTScopeNamespace)
	m.Add(secret, meta.RESTScopeNamespace)
	m.Add(deployment, meta.RESTScopeNamespace)
	return m
}

func testSpec(slots int32) shardingv1alpha1.ShardRingSpec {
	return shardingv1alpha1.ShardRingSpec{
		Slots: slots,
		Resources: []shardingv1alpha1.ShardedResource{
			{
				GroupResource: shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"},
				Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
			},
			{
				GroupResource: shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "clusterwidgets"},
				Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}, {Resource: "secrets"}},
			},
		},
	}
}

func TestNewKinds(t *testing.T) {
	k, err := slotlabel.NewKinds(testSpec(0), testMapper())
	if err != nil {
		t.Fatalf("NewKinds: %v", err)
	}
	if k.Slots() != ring.DefaultSlots {
		t.Errorf("Slots() = %d, want the API server's default %d", k.Slots(), ring.DefaultSlots)
	}
	if got, want := k.Sharded(), []schema.GroupVersionKind{widget, cluster}; !equalGVKs(got, want) {
		t.Errorf("Sharded() = %v, want %v", got, want)
	}
	// configmaps is listed twice but is one kind to watch.
	if got, want := k.Children(), []schema.GroupVersionKind{configMap, secret}; !equalGVKs(got, want) {
		t.Errorf("Children() = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		gk             schema.GroupKind
		sharded, child bool
	}{
		{widget.GroupKind(), true, false},
		{cluster.GroupKind(), true, false},
		{configMap.GroupKind(), false, true},
		{secret.GroupKind(), false, true},
		{deployment.GroupKind(), false, false},
	} {
		if got := k.IsSharded(tc.gk); got != tc.sharded {
			t.Errorf("IsSharded(%v) = %v, want %v", tc.gk, got, tc.sharded)
		}
		if got := k.IsChild(tc.gk); got != tc.child {
			t.Errorf("IsChild(%v) = %v, want %v", tc.gk, got, tc.child)
		}
	}
}

func TestNewKindsUnknownResource(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec shardingv1alpha1.ShardRingSpec
		want string
	}{
		{
			name: "sharded",
			spec: shardingv1alpha1.ShardRingSpec{Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "example.com", Resource: "gizmos"},
			}}},
			want: `resolving sharded resource "gizmos.example.com"`,
		},
		{
			name: "child",
			spec: shardingv1alpha1.ShardRingSpec{Resources: []shardingv1alpha1.ShardedResource{{
				GroupResource: shardingv1alpha1.GroupResource{Group: "example.kubeshard.dev", Resource: "widgets"},
				Children:      []shardingv1alpha1.GroupResource{{Group: "example.com", Resource: "gadgets"}},
			}}},
			want: `resolving resource "gadgets.example.com", a child of "widgets.example.kubeshard.dev"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := slotlabel.NewKinds(tc.spec, testMapper())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewKinds: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSlotOf(t *testing.T) {
	const slots = 1024
	k, err := slotlabel.NewKinds(testSpec(slots), testMapper())
	if err != nil {
		t.Fatalf("NewKinds: %v", err)
	}
	controller := func(gvk schema.GroupVersionKind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{
			APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: name,
			UID: types.UID("uid-" + name), Controller: new(true),
		}}
	}
	for _, tc := range []struct {
		name   string
		obj    metav1.ObjectMeta
		gvk    schema.GroupVersionKind
		want   int
		wantOK bool
	}{
		{
			name: "sharded namespaced", gvk: widget,
			obj:  metav1.ObjectMeta{Namespace: "team-a", Name: "dataset-1"},
			want: ring.Slot("team-a", "dataset-1", slots), wantOK: true,
		},
		{
			name: "sharded cluster-scoped hashes the name alone", gvk: cluster,
			obj:  metav1.ObjectMeta{Name: "global"},
			want: ring.Slot("", "global", slots), wantOK: true,
		},
		{
			name: "sharded, name not generated yet", gvk: widget,
			obj: metav1.ObjectMeta{Namespace: "team-a", GenerateName: "dataset-"},
		},
		{
			name: "child takes its owner's slot", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "dataset-1-summary",
				OwnerReferences: controller(widget, "dataset-1")},
			want: ring.Slot("team-a", "dataset-1", slots), wantOK: true,
		},
		{
			name: "child with a generated name still has its owner's slot", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", GenerateName: "summary-",
				OwnerReferences: controller(widget, "dataset-1")},
			want: ring.Slot("team-a", "dataset-1", slots), wantOK: true,
		},
		{
			name: "child of an owner at another version of the kind", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "s",
				OwnerReferences: controller(widget.GroupKind().WithVersion("v1beta1"), "dataset-1")},
			want: ring.Slot("team-a", "dataset-1", slots), wantOK: true,
		},
		{
			name: "child of a cluster-scoped owner", gvk: secret,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "creds",
				OwnerReferences: controller(cluster, "global")},
			want: ring.Slot("", "global", slots), wantOK: true,
		},
		{
			name: "child kind controlled by a kind that is not sharded", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "app-config",
				OwnerReferences: controller(deployment, "app")},
		},
		{
			name: "child kind controlled by a sharded kind that does not list it", gvk: secret,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "creds",
				OwnerReferences: controller(widget, "dataset-1")},
		},
		{
			name: "controller of the kind's name in the core group is another kind", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "s",
				OwnerReferences: controller(schema.GroupVersionKind{Version: "v1", Kind: "Widget"}, "dataset-1")},
		},
		{
			name: "controller with a malformed apiVersion", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "s",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "example.kubeshard.dev/v1/x",
					Kind: "Widget", Name: "dataset-1", Controller: new(true)}}},
		},
		{
			name: "child kind owned but not controlled", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "shared",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "example.kubeshard.dev/v1",
					Kind: "Widget", Name: "dataset-1", UID: "u"}}},
		},
		{
			name: "child kind without owner", gvk: configMap,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "plain"},
		},
		{
			name: "kind not in the ring", gvk: deployment,
			obj: metav1.ObjectMeta{Namespace: "team-a", Name: "app"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slot, ok := k.SlotOf(&tc.obj, tc.gvk.GroupKind())
			if ok != tc.wantOK || slot != tc.want {
				t.Errorf("SlotOf = (%d, %v), want (%d, %v)", slot, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestSlotOfDoesNotAllocate(t *testing.T) {
	k, err := slotlabel.NewKinds(testSpec(1024), testMapper())
	if err != nil {
		t.Fatalf("NewKinds: %v", err)
	}
	obj := &metav1.ObjectMeta{Namespace: "team-a", Name: "summary", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "example.kubeshard.dev/v1", Kind: "Widget", Name: "dataset-1", Controller: new(true),
	}}}
	// The webhook and the labeler call this for every object they see.
	if n := testing.AllocsPerRun(100, func() { k.SlotOf(obj, configMap.GroupKind()) }); n != 0 {
		t.Errorf("SlotOf allocates %v times per call, want 0", n)
	}
}

func equalGVKs(a, b []schema.GroupVersionKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// In selectorMode ShardSelector only children are labelled, with the slot of
// their owner's uid, which the reference carries.
func TestSlotOfByUID(t *testing.T) {
	spec := testSpec(64)
	spec.SelectorMode = shardingv1alpha1.SelectorModeShardSelector
	k, err := slotlabel.NewKinds(spec, testMapper())
	if err != nil {
		t.Fatalf("NewKinds: %v", err)
	}
	if !k.ByUID() {
		t.Fatal("ByUID() = false for selectorMode ShardSelector")
	}
	if got, want := k.Labelled(), []schema.GroupVersionKind{configMap, secret}; !equalGVKs(got, want) {
		t.Errorf("Labelled() = %v, want only the children %v", got, want)
	}

	owner := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Namespace: "ns", Name: "owner", UID: "7d3c0a9e-5b1f-4c2e-9a8d-1e2f3a4b5c6d",
	}}
	if _, ok := k.SlotOf(owner, widget.GroupKind()); ok {
		t.Error("SlotOf a sharded object is ok in selectorMode ShardSelector; it must not be labelled")
	}
	child := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Namespace: "ns", Name: "child",
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: widget.GroupVersion().String(), Kind: widget.Kind, Name: "owner",
			UID: owner.UID, Controller: ptrTo(true),
		}},
	}}
	want := ring.UIDSlot(string(owner.UID), 64)
	if got, ok := k.SlotOf(child, configMap.GroupKind()); !ok || got != want {
		t.Errorf("SlotOf(child) = %d, %v; want the owner's uid slot %d", got, ok, want)
	}
	child.OwnerReferences[0].UID = ""
	if _, ok := k.SlotOf(child, configMap.GroupKind()); ok {
		t.Error("SlotOf a child whose reference has no uid is ok; its slot is unknown")
	}

	labelled := &metav1.PartialObjectMetadata{}
	if !slotlabel.LabelChildByUID(owner, labelled, 64) || labelled.Labels[shardingv1alpha1.LabelSlot] != slotlabel.Value(want) {
		t.Errorf("LabelChildByUID set labels %v, want slot %d", labelled.Labels, want)
	}
	if slotlabel.LabelChildByUID(&metav1.PartialObjectMetadata{}, labelled, 64) {
		t.Error("LabelChildByUID with an owner without uid reported true")
	}
}

func ptrTo[T any](v T) *T { return &v }
