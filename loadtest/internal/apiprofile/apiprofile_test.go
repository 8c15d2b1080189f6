package apiprofile

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// cpuProfile builds a CPU profile with one sample per stack, each stack
// given leaf first as the runtime records it.
func cpuProfile(samples map[string]int64) *profile.Profile {
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		DurationNanos: 60e9,
	}
	funcs := map[string]*profile.Function{}
	for stack, nanos := range samples {
		var locs []*profile.Location
		for _, name := range strings.Split(stack, ";") {
			f, ok := funcs[name]
			if !ok {
				f = &profile.Function{ID: uint64(len(funcs) + 1), Name: name}
				funcs[name] = f
				p.Function = append(p.Function, f)
			}
			loc := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: f}}}
			p.Location = append(p.Location, loc)
			locs = append(locs, loc)
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: locs, Value: []int64{1, nanos}})
	}
	return p
}

func TestClassifyTakesTheFirstPhaseOfAStack(t *testing.T) {
	p := cpuProfile(map[string]int64{
		// A status patch's JSON work, under the serving machinery.
		"encoding/json.Marshal;k8s.io/apiextensions-apiserver/pkg/registry/customresource.(*StatusREST).Update;net/http.HandlerFunc.ServeHTTP": 3e9,
		// The webhook call of a create: admission comes first.
		"crypto/tls.(*Conn).Write;k8s.io/apiserver/pkg/admission/plugin/webhook/mutating.(*mutatingDispatcher).Dispatch;k8s.io/apiextensions-apiserver/pkg/apiserver.(*crdHandler).serveResource.CreateResource.createHandler.func1": 2e9,
		"k8s.io/apiserver/pkg/registry/generic/registry.(*Store).Create;k8s.io/apiserver/pkg/endpoints/handlers/finisher.finishRequest.func1":                                                                                        1e9,
		"k8s.io/apiserver/pkg/storage/etcd3.(*watchChan).transform;k8s.io/apiserver/pkg/storage/etcd3.(*watchChan).processEvent":                                                                                                     4e9,
		"runtime.scanobject;runtime.gcDrain;runtime.gcBgMarkWorker": 5e9,
		"runtime.futex;runtime.mstart":                              1e9,
	})
	phases, total, err := Classify(p)
	if err != nil {
		t.Fatal(err)
	}
	if total != 16 {
		t.Errorf("total %v s, want 16", total)
	}
	got := map[string]float64{}
	for _, ph := range phases {
		got[ph.Name] = ph.CPUSeconds
	}
	for name, want := range map[string]float64{
		"status patch":                      3,
		"admission webhook call":            2,
		"create":                            1,
		"Go garbage collector (background)": 5,
		"other":                             1,
		"watch: events from storage (once into the cache; without it, once per watcher)": 4,
	} {
		if got[name] != want {
			t.Errorf("%s: %v s, want %v (all: %v)", name, got[name], want, got)
		}
	}
}

func TestClassifyRefusesAHeapProfile(t *testing.T) {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "inuse_space", Unit: "bytes"}}}
	if _, _, err := Classify(p); err == nil {
		t.Error("a heap profile was split into CPU phases")
	}
}

func TestLiveBytes(t *testing.T) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "alloc_space"}, {Type: "inuse_space"}},
		Sample:     []*profile.Sample{{Value: []int64{100, 10}}, {Value: []int64{200, 32}}},
	}
	if got, err := LiveBytes(p); err != nil || got != 42 {
		t.Errorf("LiveBytes = %v, %v; want 42 (inuse_space, not alloc_space)", got, err)
	}
}

func TestRequestsByVerb(t *testing.T) {
	text := `# TYPE apiserver_request_total counter
apiserver_request_total{code="201",resource="largedata",verb="POST"} 70
apiserver_request_total{code="409",resource="largedata",verb="POST"} 3
apiserver_request_total{code="200",resource="largedata",subresource="status",verb="PATCH"} 50
apiserver_request_total{code="201",resource="configmaps",verb="POST"} 9
`
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader([]byte(text)))
	if err != nil {
		t.Fatal(err)
	}
	got := RequestsByVerb(fams["apiserver_request_total"], "largedata")
	if got["POST"] != 73 || got["PATCH"] != 50 || len(got) != 2 {
		t.Errorf("LargeData requests %v, want POST 73 (every code), PATCH 50, no ConfigMaps", got)
	}
	if n := RequestsByVerb(nil, "largedata"); len(n) != 0 {
		t.Errorf("no metric family: %v", n)
	}
}
