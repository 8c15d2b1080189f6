package sharding

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/webhookcert"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
)

var largeDataGVK = datav1alpha1.GroupVersion.WithKind("LargeData")

// heldSlots is a cache that holds some slots' LargeData at a version each.
type heldSlots struct {
	items    map[int][]runtime.Object
	versions map[int]uint64
}

func (h *heldSlots) Snapshot(gvk schema.GroupVersionKind, slots []int) (*shardcache.Snapshot, error) {
	if gvk != largeDataGVK {
		return nil, fmt.Errorf("%s is not a sharded kind", gvk)
	}
	snap := &shardcache.Snapshot{Versions: map[int]uint64{}}
	for _, s := range slots {
		v, ok := h.versions[s]
		if !ok {
			return nil, fmt.Errorf("%w: slot %d", shardcache.ErrNotHeld, s)
		}
		snap.Versions[s] = v
		snap.Items = append(snap.Items, h.items[s]...)
	}
	return snap, nil
}

func largeData(name string, slot, rv int) *datav1alpha1.LargeData {
	return &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "data", Name: name, ResourceVersion: strconv.Itoa(rv),
			Labels: map[string]string{shardingv1alpha1.LabelSlot: strconv.Itoa(slot)},
		},
		// Past 2^53: a number decoded as float64 would lose it.
		Spec: datav1alpha1.LargeDataSpec{Items: 100000000, Seed: 1<<60 + 1},
	}
}

// peerRing is a ring of 8 slots in namespace "ring" whose members m-0 and
// m-1 serve slots 0-3 and 4-7 from caches behind the snapshot handler.
type peerRing struct {
	reader client.Reader
	source *peerSource
}

func newPeerRing(t *testing.T, caches map[string]*heldSlots, urls map[string]string) *peerRing {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{shardingv1alpha1.AddToScheme, coordinationv1.AddToScheme, datav1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	objs := []client.Object{&shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ring", Name: "r"},
		Status: shardingv1alpha1.ShardRingStatus{Members: []shardingv1alpha1.MemberStatus{
			{Name: "m-0", Slots: "0-3"}, {Name: "m-1", Slots: "4-7"},
		}},
	}}
	for member, c := range caches {
		srv := httptest.NewServer(func() http.Handler { h := &snapshotHandler{slots: 8}; h.set(c); return h }())
		t.Cleanup(srv.Close)
		url := srv.URL + SnapshotPath
		if u, ok := urls[member]; ok {
			url = u
		}
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Namespace: "ring", Name: membership.LeaseName("r", member),
			Annotations: map[string]string{shardingv1alpha1.AnnotationSnapshotURL: url},
		}}
		if url == "" {
			lease.Annotations = nil
		}
		objs = append(objs, lease)
	}
	var reader client.Reader = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	src := &peerSource{key: types.NamespacedName{Namespace: "ring", Name: "r"}, self: "m-2", slots: 8, timeout: 10 * time.Second, http: http.DefaultClient, scheme: scheme}
	src.reader.Store(&reader)
	return &peerRing{reader: reader, source: src}
}

func TestASnapshotOfTwoMembersCrossesTheWireWhole(t *testing.T) {
	caches := map[string]*heldSlots{
		"m-0": {items: map[int][]runtime.Object{1: {largeData("a", 1, 5), largeData("b", 1, 9)}}, versions: map[int]uint64{1: 9, 2: 9}},
		"m-1": {items: map[int][]runtime.Object{5: {largeData("c", 5, 7)}}, versions: map[int]uint64{5: 12}},
	}
	// The objects arrive as the scheme's type, the form a typed informer
	// keeps, or unstructured for a member whose scheme lacks the kind.
	for _, typed := range []bool{true, false} {
		t.Run(fmt.Sprintf("typed=%v", typed), func(t *testing.T) {
			pr := newPeerRing(t, caches, nil)
			if !typed {
				pr.source.scheme = nil
			}
			snap, err := pr.source.Snapshot(t.Context(), largeDataGVK, []int{1, 2, 5})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[int]uint64{1: 9, 2: 9, 5: 12}; fmt.Sprint(snap.Versions) != fmt.Sprint(want) {
				t.Errorf("versions %v, want %v", snap.Versions, want)
			}
			got := map[string]string{}
			for _, obj := range snap.Items {
				var (
					meta metav1.Object
					seed int64
				)
				switch o := obj.(type) {
				case *datav1alpha1.LargeData:
					if !typed {
						t.Errorf("%s arrived typed without the kind in the scheme", o.Name)
					}
					meta, seed = o, o.Spec.Seed
				case *unstructured.Unstructured:
					if typed {
						t.Errorf("%s arrived unstructured, want the scheme's *LargeData", o.GetName())
					}
					meta = o
					seed, _, _ = unstructured.NestedInt64(o.Object, "spec", "seed")
				default:
					t.Fatalf("an item arrived as %T", obj)
				}
				if gvk := obj.GetObjectKind().GroupVersionKind(); gvk != largeDataGVK || seed != 1<<60+1 {
					t.Errorf("%s arrived as %s with seed %d, want a LargeData with seed %d", meta.GetName(), gvk, seed, int64(1<<60+1))
				}
				got[meta.GetName()] = meta.GetResourceVersion()
			}
			if fmt.Sprint(got) != fmt.Sprint(map[string]string{"a": "5", "b": "9", "c": "7"}) {
				t.Errorf("items %v, want a@5, b@9, c@7", got)
			}
		})
	}
}

// BenchmarkReadSnapshot decodes a snapshot of reconciled LargeData as a
// newcomer does, into the scheme's type or unstructured, and reports the
// heap the decoded objects keep (live-B/object).
func BenchmarkReadSnapshot(b *testing.B) {
	const n = 2000
	now := metav1.Now()
	snap := &shardcache.Snapshot{Versions: map[int]uint64{1: n}}
	for i := range n {
		ld := largeData(fmt.Sprintf("dataset-%05d", i), 1, i+1)
		ld.UID = types.UID(fmt.Sprintf("0b6c2f4e-8d1a-4c8e-9f3b-%012d", i))
		ld.Finalizers = []string{"data.kubeshard.dev/records"}
		ld.Status = datav1alpha1.LargeDataStatus{
			ObservedGeneration: 1, Phase: datav1alpha1.PhaseReady, TotalItems: 10, ProcessedCount: 10, CompletionRatio: "1",
			LastProcessed: &now,
			Conditions:    []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Processed", Message: "10 of 10 records processed", ObservedGeneration: 1, LastTransitionTime: now}},
		}
		snap.Items = append(snap.Items, ld)
	}
	var wire strings.Builder
	if err := writeSnapshot(&wire, snap); err != nil {
		b.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := datav1alpha1.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		scheme *runtime.Scheme
	}{{"typed", scheme}, {"unstructured", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var live uint64
			for b.Loop() {
				var before, after goruntime.MemStats
				goruntime.GC()
				goruntime.ReadMemStats(&before)
				got, err := readSnapshot(strings.NewReader(wire.String()), bc.scheme, largeDataGVK, 8)
				if err != nil || len(got.Items) != n {
					b.Fatalf("readSnapshot: %d items, %v", len(got.Items), err)
				}
				goruntime.GC()
				goruntime.ReadMemStats(&after)
				live = after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
				goruntime.KeepAlive(got)
			}
			b.ReportMetric(float64(live)/n, "live-B/object")
		})
	}
}

func TestASnapshotFailsWholeWhenAMemberCannotAnswer(t *testing.T) {
	held := func() map[string]*heldSlots {
		return map[string]*heldSlots{
			"m-0": {versions: map[int]uint64{1: 9}},
			"m-1": {versions: map[int]uint64{5: 12}},
		}
	}
	for _, tc := range []struct {
		name  string
		slots []int
		urls  map[string]string
		want  string
	}{
		{name: "a slot the member does not hold", slots: []int{1, 6}, want: "409 Conflict"},
		{name: "a slot of the member asking", slots: []int{1}, urls: nil, want: ""},
		{name: "a Lease without a URL", slots: []int{5}, urls: map[string]string{"m-1": ""}, want: "no snapshot URL"},
		{name: "plain HTTP off loopback", slots: []int{5}, urls: map[string]string{"m-1": "http://10.1.2.3:8443" + SnapshotPath}, want: "plain HTTP off loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPeerRing(t, held(), tc.urls)
			if tc.want == "" {
				pr.source.self = "m-0"
				tc.want = "no other member"
			}
			_, err := pr.source.Snapshot(t.Context(), largeDataGVK, tc.slots)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Snapshot = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestTheSnapshotHandlerRefusesWhatItCannotAnswer(t *testing.T) {
	h := &snapshotHandler{slots: 8}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(query string) int {
		resp, err := http.Get(srv.URL + SnapshotPath + "?" + query)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	ok := "group=data.kubeshard.dev&version=v1alpha1&kind=LargeData&slots=1"
	if code := get(ok); code != http.StatusServiceUnavailable {
		t.Errorf("before the cache exists: %d, want 503", code)
	}
	h.set(&heldSlots{versions: map[int]uint64{1: 3}})
	for query, want := range map[string]int{
		ok: http.StatusOK,
		"group=data.kubeshard.dev&version=v1alpha1&kind=LargeData&slots=9":   http.StatusBadRequest,
		"group=data.kubeshard.dev&version=v1alpha1&kind=LargeData&slots=x":   http.StatusBadRequest,
		"group=data.kubeshard.dev&version=v1alpha1&kind=LargeData":           http.StatusBadRequest,
		"group=&version=v1&kind=ConfigMap&slots=1":                           http.StatusBadRequest,
		"group=data.kubeshard.dev&version=v1alpha1&kind=LargeData&slots=1-2": http.StatusConflict,
	} {
		if code := get(query); code != want {
			t.Errorf("%s: %d, want %d", query, code, want)
		}
	}
	resp, err := http.Post(srv.URL+SnapshotPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

func TestPeerAddressNeedsAGuardedMetricsServer(t *testing.T) {
	certs := t.TempDir()
	if _, err := webhookcert.Write(certs, "members"); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(certs, "tls.crt") // self-signed: its own CA
	for _, tc := range []struct {
		name    string
		metrics func(*ctrl.Options)
		opts    Options
		wantErr string
		wantURL string
	}{
		{name: "metrics off", opts: Options{PeerAddress: "127.0.0.1:8080"}, metrics: func(o *ctrl.Options) { o.Metrics.BindAddress = "0" }, wantErr: "needs the metrics server"},
		{name: "HTTPS without a CA", opts: Options{PeerAddress: "10.0.0.1:8443"}, metrics: func(o *ctrl.Options) { o.Metrics.SecureServing = true }, wantErr: "PeerCAFile"},
		{name: "plain HTTP off loopback", opts: Options{PeerAddress: "10.0.0.1:8080"}, wantErr: "plain HTTP"},
		{name: "not host:port", opts: Options{PeerAddress: "10.0.0.1"}, wantErr: "not host:port"},
		{name: "a CA file without a certificate", opts: Options{PeerAddress: "10.0.0.1:8443", PeerCAFile: os.DevNull}, metrics: func(o *ctrl.Options) { o.Metrics.SecureServing = true }, wantErr: "no PEM certificate"},
		{name: "HTTPS", opts: Options{PeerAddress: "10.0.0.1:8443", PeerCAFile: ca}, metrics: func(o *ctrl.Options) { o.Metrics.SecureServing = true }, wantURL: "https://10.0.0.1:8443" + SnapshotPath},
		{name: "plain HTTP on loopback", opts: Options{PeerAddress: "127.0.0.1:8080"}, wantURL: "http://127.0.0.1:8080" + SnapshotPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mgrOpts := &ctrl.Options{}
			if tc.metrics != nil {
				tc.metrics(mgrOpts)
			}
			p, err := setupPeers(&rest.Config{}, mgrOpts, tc.opts.withDefaults(), types.NamespacedName{Namespace: "ring", Name: "r"}, 8)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("setupPeers = %v, want an error with %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case p.url != tc.wantURL || mgrOpts.Metrics.ExtraHandlers[SnapshotPath] == nil:
				t.Errorf("url %q, handler %v; want %q and the handler on the metrics server", p.url, mgrOpts.Metrics.ExtraHandlers[SnapshotPath], tc.wantURL)
			}
		})
	}
}
